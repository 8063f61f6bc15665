"""oneDNN's convolutions (`convolutions: onednn`): values and gradients against
lax.conv_general_dilated, where they apply and where they do not, and their errors."""

import importlib.util
import shutil
import subprocess
import sys
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from flaxvision import builder, models
from flaxvision.errors import UserError
from flaxvision.models.layers import CONVOLUTIONS, conv, depthwise_conv, use_convolutions
from flaxvision.ops import onednn
from flaxvision.params import Params
from tests.helpers import PROJECT_ROOT, assert_conv_matches_lax, typed_params

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("flaxvision.ops._onednn") is None,
    reason="flaxvision was installed without its oneDNN extension (setup.py: Linux x86-64, a C++ compiler)",
)


def custom_calls(function, *args) -> int:
    """How many of oneDNN's FFI calls the compiled ``function`` makes."""
    return jax.jit(function).lower(*args).as_text().count("flaxvision_onednn_conv")


@pytest.mark.parametrize(
    "size, kernel_size, strides, padding",
    [
        (12, 5, 1, "SAME"),  # seed 000's convolutions
        (11, 3, 2, "SAME"),  # strided, padded more at the bottom and right than at the top and left
        (9, 3, 1, "VALID"),
        (16, 7, 2, "SAME"),  # ResNet's stem
        (10, 3, 1, 1),  # Keras' ZeroPadding2D(1) + 'valid'
    ],
)
def test_onednn_conv_matches_lax_convolution(size, kernel_size, strides, padding):
    assert_conv_matches_lax(size, kernel_size, strides, padding, convolutions="onednn")
    layer = use_convolutions(conv(8, 16, kernel_size, strides=strides, padding=padding, rngs=nnx.Rngs(0)), "onednn")
    x = jnp.zeros((2, size, size, 8))
    assert custom_calls(lambda x: layer(x), x) == 1
    # One call per pass, and XLA drops the gradient nobody asks for: the kernel's here...
    assert custom_calls(jax.grad(lambda x: jnp.sum(layer(x) ** 2)), x) == 2
    # ...the input's here (a first layer's), and both in a training step.
    graph, params = nnx.split(layer)
    loss = lambda params, x: jnp.sum(nnx.merge(graph, params)(x) ** 2)  # noqa: E731
    assert custom_calls(jax.grad(loss), params, x) == 2
    assert custom_calls(jax.grad(loss, (0, 1)), params, x) == 3


@pytest.mark.slow
def test_a_whole_network_matches_xla_values_and_gradients_within_1e_4():
    model = models.create_model("belgiumtsc_cnn", num_classes=5, input_shape=(24, 24, 1), rngs=nnx.Rngs(0))
    model.eval()
    x = jax.random.uniform(jax.random.key(0), (4, 24, 24, 1))

    def loss_and_grads(convolutions):
        graph, params, rest = nnx.split(use_convolutions(model, convolutions), nnx.Param, ...)
        loss = lambda params: jnp.sum(nnx.merge(graph, params, rest)(x) ** 2)  # noqa: E731
        return jax.jit(jax.value_and_grad(loss))(params)

    loss, grads = loss_and_grads("onednn")
    want_loss, want_grads = loss_and_grads("xla")
    np.testing.assert_allclose(loss, want_loss, rtol=1e-4)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_the_same_inputs_give_the_same_bits():
    x = jax.random.normal(jax.random.key(0), (8, 20, 20, 16))
    kernel = jax.random.normal(jax.random.key(1), (5, 5, 16, 32))

    def gradients():  # a new function each time: compiled afresh
        loss = lambda x, kernel: jnp.sum(jnp.sin(onednn.convolve(x, kernel, (1, 1), ((2, 2), (2, 2)))))  # noqa: E731
        return jax.jit(jax.grad(loss, (0, 1)))(x, kernel)

    for first, second in zip(gradients(), gradients(), strict=True):
        np.testing.assert_array_equal(first, second)


def test_other_convolutions_and_backends_keep_their_own(monkeypatch):
    x = jnp.zeros((2, 9, 9, 8))
    pointwise = use_convolutions(conv(8, 16, 1, rngs=nnx.Rngs(0)), "onednn")  # a matrix product
    depthwise = use_convolutions(depthwise_conv(8, 3, padding="SAME", rngs=nnx.Rngs(0)), "onednn")
    large_kernel = use_convolutions(conv(8, 16, 9, rngs=nnx.Rngs(0)), "onednn")  # as large as the map
    half = use_convolutions(conv(8, 16, 3, dtype=jnp.bfloat16, rngs=nnx.Rngs(0)), "onednn")
    for layer in (pointwise, depthwise, large_kernel, half):
        assert custom_calls(lambda x, layer=layer: layer(x), x) == 0
    spatial = use_convolutions(conv(8, 16, 3, rngs=nnx.Rngs(0)), "onednn")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert custom_calls(lambda x: spatial(x), x) == 0
    assert "conv_general_dilated" in str(jax.make_jaxpr(lambda x: spatial(x))(x))


@pytest.mark.parametrize("edited", [False, True])
def test_a_copy_of_the_checkout_loads_the_installed_build_of_its_own_source(tmp_path, edited):
    """A DVC experiment's temp copy has only the tracked files, so not the compiled library: the
    checkout's build serves it, unless the copy's onednn_conv.cc is another than it was built from."""
    for folder in ("flaxvision", "models"):
        shutil.copytree(PROJECT_ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    if edited:
        with open(tmp_path / "flaxvision" / "ops" / "onednn_conv.cc", "a") as source:
            source.write("// edited\n")
    check = "import flaxvision.ops.onednn as m; m.load(); print(m.__file__)"
    ran = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True)
    if edited:
        assert "was compiled from another" in ran.stderr and "uv sync --reinstall-package flaxvision" in ran.stderr
    else:
        assert ran.returncode == 0, ran.stderr
        assert ran.stdout.strip() == str(tmp_path / "flaxvision" / "ops" / "onednn.py")


def test_params_name_the_convolutions(monkeypatch):
    assert builder.convolutions(typed_params({"convolutions": "xla"})) == "xla"
    assert builder.convolutions(typed_params({"convolutions": "onednn"})) == "onednn"
    assert set(typing.get_args(typing.get_type_hints(Params)["convolutions"])) == set(CONVOLUTIONS)
    with pytest.raises(UserError, match=r"params.yaml: 'convolutions' must be one of \['onednn', 'xla'\], got 'mkl'"):
        typed_params({"convolutions": "mkl"})

    monkeypatch.setattr(onednn, "_library", lambda: None)  # as where it was not compiled
    monkeypatch.setattr(onednn, "load", onednn.load.__wrapped__)  # not the cached success
    with pytest.raises(UserError, match=r"installed without its oneDNN extension.*uv sync --reinstall-package"):
        builder.convolutions(typed_params({"convolutions": "onednn"}))


def test_a_library_that_does_not_load_is_a_one_line_error(monkeypatch, tmp_path):
    broken = tmp_path / "_onednn.so"
    broken.write_bytes(b"not a shared library")
    monkeypatch.setattr(onednn, "_library", lambda: broken)
    monkeypatch.setattr(onednn, "load", onednn.load.__wrapped__)
    with pytest.raises(UserError, match=r"_onednn.so does not load .*uv sync --reinstall-package flaxvision"):
        builder.convolutions(typed_params({"convolutions": "onednn"}))
