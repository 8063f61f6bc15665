"""The model presets: shapes, the parameter counts Keras reports for the seeds, train/eval modes."""

import functools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxvision import builder, models
from flaxvision.errors import UserError
from flaxvision.models.layers import Dropout, batch_norm, conv, dense, depthwise_conv, max_pool
from flaxvision.models.resnet import BottleneckBlock, seed_resnet
from flaxvision.ops import cpu_kernels as kernels
from tests.helpers import assert_conv_matches_lax, transfer_config

# name: (seed input shape, seed classes)
SEED_SHAPES = {
    "belgiumtsc_cnn": ((56, 56, 1), 62),
    "simple_cnn": ((160, 160, 3), 2),
    "tutorial_cnn": ((150, 150, 3), 2),
    "resnet50": ((64, 64, 3), 6),
}


def conv_params(k, cin, cout):
    return k * k * cin * cout + cout


def dense_params(cin, cout):
    return cin * cout + cout


# Keras' model.summary() totals for the same layers; BatchNorm counts 4 per channel
# (gamma, beta, moving mean, moving variance).
KERAS_PARAM_COUNTS = {
    "belgiumtsc_cnn": (
        conv_params(5, 1, 16) + conv_params(5, 16, 32) + 4 * 32
        + conv_params(5, 32, 32) + conv_params(5, 32, 16) + 4 * 16
        + conv_params(5, 16, 16) + conv_params(5, 16, 8) + 4 * 8
        + dense_params(14 * 14 * 8, 200) + dense_params(200, 62)  # 56 → 28 → 14 ('same' pools)
    ),  # = 387,806
    "simple_cnn": (
        conv_params(3, 3, 32) + conv_params(3, 32, 32) + conv_params(3, 32, 64)
        + dense_params(18 * 18 * 64, 64) + dense_params(64, 2)  # 160 →158 →79 →77 →38 →36 →18
    ),  # = 1,355,938
    "tutorial_cnn": (
        conv_params(3, 3, 16) + conv_params(3, 16, 32) + conv_params(3, 32, 64)
        + dense_params(18 * 18 * 64, 512) + dense_params(512, 2)  # 150 → 75 → 37 → 18
    ),  # = 10,641,954
    "resnet50": 23_600_006,  # seed 004's summary
}  # fmt: skip


def count(model, kind):
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, kind)))


def abstract_model(name):
    """The preset at its seed input shape, with shapes but no values: nothing is computed."""
    shape, num_classes = SEED_SHAPES[name]
    return nnx.eval_shape(
        lambda: models.create_model(name, num_classes=num_classes, input_shape=shape, rngs=nnx.Rngs(0))
    )


@functools.cache
def resnet50():
    shape, num_classes = SEED_SHAPES["resnet50"]
    return models.create_model("resnet50", num_classes=num_classes, input_shape=shape, rngs=nnx.Rngs(0))


@functools.cache
def small_cnn():
    """A preset with dropout and BatchNorm, small enough to build and compile quickly."""
    return models.create_model("belgiumtsc_cnn", num_classes=3, input_shape=(12, 12, 1), rngs=nnx.Rngs(0))


@nnx.jit
def call(model, x):
    """The model's output, jitted, updating its state (BatchNorm statistics, RNG counts)."""
    return model(x)


def test_registry():
    scratch = ("belgiumtsc_cnn", "simple_cnn", "tutorial_cnn", "resnet50", "small_resnet", "small_vgg")
    assert scratch == models.MODEL_NAMES
    assert (*scratch, "mobilenet_v2_transfer", "mobilenet_v2_finetune", "stacked", "transfer") == builder.MODEL_NAMES
    # Transfer models scale their input per backbone themselves.
    assert [builder.preprocessing(name) for name in builder.MODEL_NAMES] == [
        "unit",
        "tf",
        "unit",
        "unit",
        "unit",
        "unit",
    ] + ["none"] * 4
    sizes = [builder.input_size(name, transfer_config()) for name in ("simple_cnn", "resnet50", "stacked", "transfer")]
    assert sizes == [
        (80, 80),
        (64, 64),
        (331, 331),
        (224, 224),
    ]
    # The registry is architecture only: its errors name no params; the builder words them for params.yaml.
    unknown = f"unknown model 'vgg'; valid models: {', '.join(scratch)}"
    with pytest.raises(models.ModelError, match=f"^{unknown}$"):
        models.create_model("vgg", num_classes=2, input_shape=(8, 8, 3), rngs=nnx.Rngs(0))
    unknown += ", mobilenet_v2_transfer, mobilenet_v2_finetune, stacked, transfer"
    with pytest.raises(UserError, match=f"^params.yaml: {unknown}$"):
        builder.build_model("vgg", num_classes=2, input_shape=(8, 8, 3))
    with pytest.raises(UserError, match=f"^params.yaml: {unknown}$"):
        builder.preprocessing("vgg")
    too_small = r"^params.yaml: model 'resnet50' cannot take these images .*\(32, 32, 3\) inputs are too small"
    with pytest.raises(UserError, match=too_small):
        nnx.eval_shape(lambda: builder.build_model("resnet50", num_classes=2, input_shape=(32, 32, 3)))


@pytest.mark.slow
@pytest.mark.parametrize("name", SEED_SHAPES)
def test_output_shape_and_keras_parameter_count(name):
    model = abstract_model(name)
    shape, num_classes = SEED_SHAPES[name]
    assert count(model, nnx.Param) + count(model, nnx.BatchStat) == KERAS_PARAM_COUNTS[name]
    images = jax.ShapeDtypeStruct((32, *shape), jnp.float32)
    logits = nnx.eval_shape(lambda model, x: model(x), model, images)
    assert logits.shape == (32, num_classes) and logits.dtype == jnp.float32


def test_resnet50_trainable_and_batchnorm_split():
    model = abstract_model("resnet50")
    assert count(model, nnx.Param) == 23_546_886
    assert count(model, nnx.BatchStat) == 53_120


@pytest.mark.slow
def test_resnet50_forward():
    model = resnet50()
    model.eval()
    logits = call(model, jax.random.uniform(jax.random.key(0), (2, 64, 64, 3)))
    assert logits.shape == (2, 6) and np.isfinite(logits).all()


def test_resnet50_initializers_follow_the_seed():
    blocks = [layer for layer in resnet50().layers if isinstance(layer, BottleneckBlock)]
    assert len(blocks) == 16
    for block in blocks:
        kernel = np.asarray(block.middle.layers[0].kernel[...])  # [3, 3, f, f]
        if block.shortcut is None:  # identity block: Keras RandomUniform(-0.05, 0.05)
            limit = 0.05
        else:  # convolutional block: glorot uniform
            limit = np.sqrt(6 / (9 * kernel.shape[-2] + 9 * kernel.shape[-1]))
        assert 0.98 * limit < np.abs(kernel).max() <= limit * (1 + 1e-6)  # float32 rounding
        assert not np.any(block.middle.layers[0].bias[...])
        assert block.middle.layers[1].epsilon == 1e-3 and block.middle.layers[1].momentum == 0.99


@pytest.mark.slow
def test_dropout_is_active_only_in_train_mode_and_draws_from_model_state():
    model = small_cnn()
    x = jax.random.uniform(jax.random.key(0), (4, 12, 12, 1))
    model.eval()
    np.testing.assert_array_equal(call(model, x), call(model, x))
    model.train()
    twin = nnx.clone(model)
    first, second = call(model, x), call(model, x)
    assert not np.allclose(first, second), "each call draws a new dropout mask"
    # The dropout RNG is part of the model's state: the same state draws the same masks.
    np.testing.assert_array_equal(call(twin, x), first)


def test_dropout_draws_nnx_dropouts_masks_behind_a_barrier():
    x = jax.random.normal(jax.random.key(0), (4, 9, 9, 8))
    cotangent = jax.random.normal(jax.random.key(1), x.shape)
    ours, flax_own = Dropout(0.3, rngs=nnx.Rngs(5)), nnx.Dropout(0.3, rngs=nnx.Rngs(5))

    def loss(layer, x):
        output = layer(x)
        return jnp.vdot(output, cotangent), output

    # The output and the input gradient are elementwise, so exactly equal (a sum over them, as
    # the loss, can round differently once XLA fuses it differently).
    output_and_grad = nnx.jit(nnx.value_and_grad(loss, argnums=1, has_aux=True))
    for _ in range(2):  # and the next step's masks: the key streams advance alike
        ((_, output), grad), ((_, flax_output), flax_grad) = output_and_grad(ours, x), output_and_grad(flax_own, x)
        np.testing.assert_array_equal(output, flax_output)
        np.testing.assert_array_equal(grad, flax_grad)
    # The mask goes through a barrier, which XLA cannot fuse its random bits across.
    lowered = nnx.jit(nnx.grad(lambda layer, x: jnp.sum(layer(x)), argnums=1)).lower(ours, x).as_text()
    assert lowered.count("optimization_barrier") == 1
    ours.eval()
    np.testing.assert_array_equal(ours(x), x)


def test_batchnorm_statistics_update_only_in_train_mode():
    model = small_cnn()
    x = jax.random.uniform(jax.random.key(0), (4, 12, 12, 1))

    def stats():
        return [np.asarray(v) for v in jax.tree.leaves(nnx.state(model, nnx.BatchStat))]

    before = stats()
    model.eval()
    call(model, x)
    for a, b in zip(before, stats(), strict=True):
        np.testing.assert_array_equal(a, b)
    model.train()
    call(model, x)
    assert all(not np.array_equal(a, b) for a, b in zip(before, stats(), strict=True))


@pytest.mark.slow
@pytest.mark.parametrize(
    "size, kernel_size, strides, padding",
    [
        (2, 3, 1, "SAME"),
        (3, 3, 2, "SAME"),
        (3, 3, 1, "VALID"),
        (4, 5, 1, "SAME"),
        (9, 3, 2, "VALID"),
        (9, 3, 1, "VALID"),
        (11, 5, 1, "VALID"),
        (9, 1, 1, "VALID"),
        (9, 3, 1, "SAME"),
    ],
)
def test_conv_matches_lax_convolution(size, kernel_size, strides, padding):
    # Feature maps no larger than the kernel and 1×1 kernels take the matrix-product path; larger
    # stride-1 'VALID' ones are computed as 'SAME' and cropped; the rest is the plain convolution.
    assert_conv_matches_lax(size, kernel_size, strides, padding)


@pytest.mark.parametrize(
    "shape, padding", [((2, 8, 8, 3), "VALID"), ((2, 9, 9, 3), "VALID"), ((2, 9, 9, 3), "SAME"), ((2, 7, 6, 2), "SAME")]
)
def test_max_pool_matches_xla_values_and_gradients_with_ties(shape, padding):
    # Small integers make many tiles hold two equal maxima: the gradient must go to the
    # first one only, as XLA's select_and_scatter does.
    x = jnp.asarray(np.random.default_rng(0).integers(0, 3, shape), jnp.float32)
    reference = lambda x: nnx.max_pool(x, (2, 2), (2, 2), padding)  # noqa: E731
    ours = lambda x: max_pool(x, 2, padding=padding)  # noqa: E731
    weights = jnp.asarray(np.random.default_rng(1).standard_normal(reference(x).shape), jnp.float32)
    np.testing.assert_array_equal(ours(x), reference(x))
    np.testing.assert_array_equal(
        jax.grad(lambda x: jnp.sum(ours(x) * weights))(x), jax.grad(lambda x: jnp.sum(reference(x) * weights))(x)
    )


@pytest.mark.parametrize(
    "size, kernel_size, strides, padding",
    [(9, 1, 2, "VALID"), (8, 1, 2, "SAME"), (15, 1, 1, "SAME"), (16, 7, 2, "SAME"), (15, 3, 2, "SAME")],
)
def test_pointwise_and_strided_convs_match_lax_convolution(size, kernel_size, strides, padding):
    # On CPU a 1×1 convolution is a matrix product over channels (strided: of the subsampled
    # map); ResNet's strided 7×7 stem and 3×3 convolutions stay native.
    assert_conv_matches_lax(size, kernel_size, strides, padding)


@pytest.mark.parametrize(
    "shape, size, strides, padding",
    [
        ((2, 9, 9, 3), 3, 2, "VALID"),
        ((2, 8, 7, 2), 3, 2, "SAME"),
        ((2, 6, 6, 2), 3, 1, "VALID"),
        ((1, 9, 9, 2), 2, 1, "SAME"),
    ],
)
def test_overlapping_max_pool_matches_xla_values_and_gradients_with_ties(shape, size, strides, padding):
    # Overlapping windows (ResNet's and DenseNet's 3×3/2 stems): as above, ties go to the first
    # maximum of each window; an input in several windows sums their gradients (in another order).
    x = jnp.asarray(np.random.default_rng(0).integers(0, 3, shape), jnp.float32)
    reference = lambda x: nnx.max_pool(x, (size, size), (strides, strides), padding)  # noqa: E731
    ours = lambda x: max_pool(x, size, strides, padding)  # noqa: E731
    weights = jnp.asarray(np.random.default_rng(1).standard_normal(reference(x).shape), jnp.float32)
    np.testing.assert_array_equal(ours(x), reference(x))
    np.testing.assert_allclose(
        jax.grad(lambda x: jnp.sum(ours(x) * weights))(x),
        jax.grad(lambda x: jnp.sum(reference(x) * weights))(x),
        rtol=1e-6,
        atol=1e-6,
    )


def primitives(jaxpr) -> set[str]:
    """The names of the primitives a jaxpr runs, including inside nested calls."""
    names = set()
    for equation in jaxpr.eqns:
        names.add(equation.primitive.name)
        for param in equation.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    names |= primitives(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    names |= primitives(sub)
    return names


@pytest.mark.parametrize(
    "backend, conv_ops, pool_ops",
    [("cpu", {"dot_general"}, {"max"}), ("gpu", {"conv_general_dilated"}, {"reduce_window_max"})],
)
def test_the_formulation_follows_the_backend(monkeypatch, backend, conv_ops, pool_ops):
    # No flag: the CPU formulations on CPU, the native convolution and pooling elsewhere.
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    pointwise = conv(8, 16, 1, strides=2, rngs=nnx.Rngs(0))
    depthwise = depthwise_conv(8, 3, padding="SAME", rngs=nnx.Rngs(0))
    x = jnp.zeros((2, 9, 9, 8))
    pointwise_ops = primitives(jax.make_jaxpr(lambda x: pointwise(x))(x).jaxpr)
    depthwise_ops = primitives(jax.make_jaxpr(lambda x: depthwise(x))(x).jaxpr)
    pool = primitives(jax.make_jaxpr(jax.grad(lambda x: jnp.sum(max_pool(x, 3, 2))))(x).jaxpr)
    assert conv_ops <= pointwise_ops and pool_ops <= pool
    assert ("conv_general_dilated" in depthwise_ops) == (backend != "cpu")
    if backend == "cpu":
        assert "conv_general_dilated" not in pointwise_ops and "select_and_scatter_add" not in pool


@pytest.mark.slow
@pytest.mark.parametrize("name, input_shape", [("belgiumtsc_cnn", (20, 20, 1)), ("resnet", (64, 64, 3))])
def test_models_on_cpu_formulations_match_native_operations(monkeypatch, name, input_shape):
    # Whole networks, forward and backward: every CPU formulation they use (matrix products,
    # 'SAME' + crop, window max) against the native convolutions and pooling.
    if name == "resnet":  # seed 004's network with one block per stage: each of its paths, quickly
        model = seed_resnet((1, 1, 1, 1), num_classes=3, input_shape=input_shape, rngs=nnx.Rngs(0))
    else:
        model = models.create_model(name, num_classes=3, input_shape=input_shape, rngs=nnx.Rngs(0))
    model.eval()
    graph, params, rest = nnx.split(model, nnx.Param, ...)
    x = jax.random.uniform(jax.random.key(0), (2, *input_shape))

    def loss_and_grads():
        loss = lambda params: jnp.sum(nnx.merge(graph, params, rest)(x) ** 2)  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    loss, grads = loss_and_grads()
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    native_loss, native_grads = loss_and_grads()
    np.testing.assert_allclose(loss, native_loss, rtol=1e-4)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(native_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize(("name", "size"), [("small_resnet", 884_066), ("small_vgg", 979_746)])
def test_global_pooling_keeps_the_model_size_whatever_the_image(name, size):
    def parameters(image_size):
        model = nnx.eval_shape(
            lambda: models.create_model(name, num_classes=2, input_shape=(image_size, image_size, 3), rngs=nnx.Rngs(0))
        )
        return sum(p.size for p in jax.tree.leaves(nnx.state(model, nnx.Param)))

    assert parameters(64) == parameters(128) == size


@pytest.mark.parametrize("length", [100, 256, 1000])
def test_chunked_matmul_matches_matmul_in_values_and_gradients(length):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 3, length)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((length, 5)), jnp.float32)
    weights = jnp.asarray(rng.standard_normal((2, 3, 5)), jnp.float32)
    np.testing.assert_allclose(kernels.matmul(x, w), x @ w, rtol=1e-5, atol=1e-4)
    ours = jax.grad(lambda x, w: jnp.sum(kernels.matmul(x, w) * weights), argnums=(0, 1))(x, w)
    reference = jax.grad(lambda x, w: jnp.sum((x @ w) * weights), argnums=(0, 1))(x, w)
    for got, want in zip(ours, reference, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_batchnorm_in_training_is_nnx_batchnorm_in_values_statistics_and_gradients():
    ours = batch_norm(6, momentum=0.9, rngs=nnx.Rngs(0))
    reference = nnx.BatchNorm(6, momentum=0.9, epsilon=1e-3, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((4, 9, 7, 6)) * 3 + 1, jnp.float32)
    weights = jnp.asarray(rng.standard_normal(x.shape), jnp.float32)
    for layer in (ours, reference):
        layer.scale[...] = jnp.linspace(0.5, 2, 6)
        layer.bias[...] = jnp.linspace(-1, 1, 6)

    def loss(layer, x):
        return jnp.sum(layer(x) * weights)

    graph, state = nnx.split(ours)
    assert "custom_vjp_call" in str(jax.make_jaxpr(lambda state: loss(nnx.merge(graph, state), x))(state))
    (value, grads), (want, want_grads) = (
        nnx.value_and_grad(loss, argnums=(0, 1))(layer, x) for layer in (ours, reference)
    )
    np.testing.assert_allclose(value, want, rtol=1e-5)
    for got, expected in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
    for got, expected in zip(
        jax.tree.leaves(nnx.state(ours, nnx.BatchStat)),
        jax.tree.leaves(nnx.state(reference, nnx.BatchStat)),
        strict=True,
    ):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    # the statistics it returns differentiate too (the layer stops their gradient; a caller may not)
    def statistics(x):
        _, mean, var = kernels.batch_normalize(x, jnp.ones(6), jnp.zeros(6), 1e-3)
        return jnp.sum(mean * weights[0, 0, 0]) + jnp.sum(var)

    def plain_statistics(x):
        mean = jnp.mean(x, (0, 1, 2))
        return jnp.sum(mean * weights[0, 0, 0]) + jnp.sum(jnp.mean(x**2, (0, 1, 2)) - mean**2)

    np.testing.assert_allclose(jax.grad(statistics)(x), jax.grad(plain_statistics)(x), rtol=1e-4, atol=1e-6)


MATMUL_BITS = """
import hashlib, jax, jax.numpy as jnp, numpy as np
from flaxvision.ops import cpu_kernels as kernels
rng = np.random.default_rng(0)
x, w = (jnp.asarray(rng.standard_normal(shape), jnp.float32) for shape in ((32, 4096), (4096, 64)))
dense = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(jnp.sin(kernels.matmul(x, w))), argnums=(0, 1)))
# BatchNorm's sums over a batch of feature maps: the same shape (a long sum, two small sides)
maps, scale = jnp.asarray(rng.standard_normal((32, 16, 16, 64)), jnp.float32), jnp.linspace(0.5, 2, 64)
normalized = lambda x, s: jnp.sum(jnp.sin(kernels.batch_normalize(x, s, s, 1e-3)[0]))
norm = jax.jit(jax.value_and_grad(normalized, argnums=(0, 1)))
leaves = jax.tree.leaves((dense(x, w), norm(maps, scale)))
print(hashlib.sha256(b"".join(np.asarray(leaf).tobytes() for leaf in leaves)).hexdigest())
"""


@pytest.mark.slow
def test_dense_layers_and_batchnorm_do_not_depend_on_the_core_count():
    # A long sum beside two small sides: the shape Eigen splits over its threads (a dense layer
    # after a flattened feature map).
    def run(cores):
        return subprocess.run(
            [sys.executable, "-c", MATMUL_BITS],
            capture_output=True,
            text=True,
            check=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cores),
        ).stdout

    all_cores = os.sched_getaffinity(0)
    assert run(all_cores) == run({min(all_cores)})
    layer = dense(4096, 64, rngs=nnx.Rngs(0))
    assert layer.dot_general is kernels.dot_general
