"""The keras.applications backbones in Flax compute what Keras computes, from Keras' own weights.

Ground truth is Keras 3 on JAX (a test-only dependency): each keras.applications model is built
with random weights, random biases and BatchNorm statistics, and its in-memory weights are
assigned to the Flax backbone by name (flaxvision.conversion.assign); reading h5 files is
tests/test_conversion.py's subject. Inputs are small (32-64 px) and outputs are compared
after each family's own preprocessing.
"""

import functools

import jax
import numpy as np
import pytest
from flax import nnx
from keras.src.applications import densenet, mobilenet_v2, resnet, resnet_v2, vgg16

from flaxvision.conversion.assign import assign_keras_weights
from flaxvision.errors import UserError
from flaxvision.models.backbones import BACKBONES
from flaxvision.models.layers import InputTooSmallError
from flaxvision.models.scaling import preprocess_input
from tests import keras_files as kf
from tests.helpers import assert_conv_matches_lax

KERAS_PREPROCESS = {
    "mobilenet_v2": mobilenet_v2.preprocess_input,
    "resnet50": resnet.preprocess_input,
    "resnet50v2": resnet_v2.preprocess_input,
    "densenet121": densenet.preprocess_input,
    "vgg16": vgg16.preprocess_input,
}
CLASSES = 5
# Keras' variables warn on every np.array(variable) under numpy 2: noise, not a finding.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
TOLERANCE = 1e-4  # max abs, on outputs of magnitude ~1-10

# (include_top, pooling, input size): logits, and both poolings on odd, non-square sizes.
OUTPUTS = [(True, None, (32, 32)), (False, "avg", (35, 41)), (False, "max", (41, 35))]
# MobileNetV2 at other widths: (alpha, include_top, pooling, input size).
MOBILENET_WIDTHS = [(0.35, True, None, (32, 32)), (1.4, False, "avg", (48, 33)), (0.75, False, None, (33, 40))]


@functools.cache
def keras_model(name, include_top, pooling, size, **options):
    model = kf.applications_model(
        BACKBONES[name].keras_class,
        include_top=include_top,
        pooling=pooling,
        input_shape=(*size, 3),
        classes=CLASSES,
        **options,
    )
    # Keras starts biases at zero: random ones show that each reaches its layer.
    rng = np.random.default_rng(1)
    for weight in model.weights:
        if weight.name == "bias":
            weight.assign(rng.normal(0.0, 0.2, weight.shape).astype("float32"))
    return model


def flax_model(name, include_top, pooling, size, **options):
    """The backbone with no weights of its own (abstract), then Keras' assigned."""
    model = nnx.eval_shape(
        lambda: BACKBONES[name].build(
            input_shape=(*size, 3),
            include_top=include_top,
            pooling=pooling,
            classes=CLASSES,
            rngs=nnx.Rngs(0),
            **options,
        )
    )
    keras_weights = kf.layer_weights(keras_model(name, include_top, pooling, size, **options))
    assert assign_keras_weights(model, keras_weights, BACKBONES[name].keras_aliases) == []
    model.eval()
    return model


def pixels(size, count=2):
    return np.random.default_rng(2).uniform(0, 255, (count, *size, 3)).astype(np.float32)


def assert_matches_keras(name, include_top, pooling, size, **options):
    images = pixels(size)
    expected = np.asarray(
        keras_model(name, include_top, pooling, size, **options)(KERAS_PREPROCESS[name](images.copy()), training=False)
    )
    model = flax_model(name, include_top, pooling, size, **options)
    got = model(preprocess_input(images, BACKBONES[name].preprocessing))
    assert got.shape == expected.shape
    difference = np.abs(np.asarray(got) - expected).max()
    print(f"{name} {options} top={include_top} pooling={pooling} {size}: max abs difference {difference:.2e}")
    assert difference < TOLERANCE


@pytest.mark.slow  # Keras
@pytest.mark.parametrize(
    "name, include_top, pooling, size",
    # Max pooling is models.layers.Top's for all but VGG (its own): once through each suffices.
    [(name, *case) for name in BACKBONES for case in OUTPUTS if case[1] != "max" or name in ("mobilenet_v2", "vgg16")],
)
def test_outputs_match_keras(name, include_top, pooling, size):
    assert_matches_keras(name, include_top, pooling, size)


@pytest.mark.slow  # Keras
@pytest.mark.parametrize("alpha, include_top, pooling, size", MOBILENET_WIDTHS)
def test_mobilenet_v2_widths_and_sizes_match_keras(alpha, include_top, pooling, size):
    assert_matches_keras("mobilenet_v2", include_top, pooling, size, alpha=alpha)


@pytest.mark.slow  # Keras
@pytest.mark.parametrize("include_top, pooling, size", OUTPUTS[:2])
@pytest.mark.parametrize("name", BACKBONES)
def test_name_table_is_keras_layers_with_weights_and_counts_match(name, include_top, pooling, size):
    keras_net = keras_model(name, include_top, pooling, size)
    model = flax_model(name, include_top, pooling, size)
    assert list(model.keras_layers()) == [layer.name for layer in keras_net.layers if layer.weights]
    variables = nnx.state(model, nnx.Any(nnx.Param, nnx.BatchStat))
    assert sum(x.size for x in jax.tree.leaves(variables)) == keras_net.count_params()


def test_preprocessing_modes_are_keras_families():
    assert {name: backbone.preprocessing for name, backbone in BACKBONES.items()} == {
        "mobilenet_v2": "tf",
        "resnet50": "caffe",
        "resnet50v2": "tf",
        "densenet121": "torch",
        "vgg16": "caffe",
    }


@pytest.mark.slow  # Keras
def test_jitted_backbone_matches_eager():
    # The compiled step traces the model: MobileNetV2's padding depends on the traced shapes.
    model = flax_model("mobilenet_v2", True, None, (32, 32), alpha=0.35)
    x = preprocess_input(pixels((32, 32)), "tf")
    np.testing.assert_allclose(nnx.jit(lambda model, x: model(x))(model, x), model(x), atol=1e-5)


def tiny_weights():
    return kf.layer_weights(keras_model("mobilenet_v2", True, None, (32, 32), alpha=0.35))


def abstract_model(include_top=True, pooling=None):
    """MobileNetV2 at width 0.35 with shapes but no values: an assignment shows as a concrete array."""
    return nnx.eval_shape(
        lambda: BACKBONES["mobilenet_v2"].build(
            input_shape=(32, 32, 3),
            include_top=include_top,
            pooling=pooling,
            classes=CLASSES,
            alpha=0.35,
            rngs=nnx.Rngs(0),
        )
    )


@pytest.mark.slow  # Keras
@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda w: w.pop("block_3_project_BN"),
            r"layer 'block_3_project_BN' is missing \(the model needs gamma \(16,\)",
        ),
        (
            lambda w: w.__setitem__("Conv1", [w["Conv1"][0][:, :, :, :8]]),
            r"layer 'Conv1' kernel has shape \(3, 3, 3, 8\) where the model needs \(3, 3, 3, 16\)",
        ),
        (
            lambda w: w.__setitem__("block_1_depthwise", [np.zeros((3, 3, 1, 48))]),
            r"layer 'block_1_depthwise' depthwise_kernel has shape \(3, 3, 1, 48\) "
            r"where the model needs \(3, 3, 48, 1\)",
        ),
        (
            lambda w: w.__setitem__("predictions", w["predictions"][:1]),
            r"layer 'predictions' has 1 arrays \[\(1280, 5\)\] where the model needs 2: "
            r"kernel \(1280, 5\), bias \(5,\)",
        ),
    ],
)
def test_a_missing_layer_or_wrong_shape_is_an_error_naming_the_layer_and_nothing_changes(edit, message):
    weights = tiny_weights()
    edit(weights)
    model = abstract_model()
    with pytest.raises(UserError, match=message):
        assign_keras_weights(model, weights)
    assert all(isinstance(value, jax.ShapeDtypeStruct) for value in jax.tree.leaves(nnx.state(model)))


@pytest.mark.slow  # Keras
def test_layers_the_model_lacks_are_returned():
    model = abstract_model(include_top=False, pooling="avg")
    assert assign_keras_weights(model, {**tiny_weights(), "head": []}) == ["predictions", "head"]


@pytest.mark.slow  # Keras
def test_keras2_names_through_aliases():
    aliases = BACKBONES["densenet121"].keras_aliases
    weights = kf.layer_weights(keras_model("densenet121", False, "avg", (35, 41)))
    keras2 = {keras2_name: weights[name] for keras2_name, name in aliases.items()}
    keras2 |= {name: value for name, value in weights.items() if name not in aliases.values()}
    model = flax_model("densenet121", False, "avg", (35, 41))
    assert assign_keras_weights(model, keras2, aliases) == []
    with pytest.raises(UserError, match="layer 'conv1_conv' is missing"):
        assign_keras_weights(model, keras2)
    with pytest.raises(UserError, match="layer 'conv1_conv' appears twice, as 'conv1/conv' and 'conv1_conv'"):
        assign_keras_weights(model, {**keras2, "conv1_conv": weights["conv1_conv"]}, aliases)


@pytest.mark.parametrize("name", BACKBONES)
def test_inputs_below_keras_minimum_are_refused(name):
    with pytest.raises(InputTooSmallError, match=r"\(31, 40, 3\) inputs are too small"):
        nnx.eval_shape(
            lambda: BACKBONES[name].build(input_shape=(31, 40, 3), include_top=False, pooling=None, rngs=nnx.Rngs(0))
        )


# (input size, kernel size, strides, padding, depthwise): the convolutions the backbones add.
# A map no larger than the kernel takes the matrix-product path (with explicit padding: Keras'
# ZeroPadding2D + 'valid'); 1×1 ones a matrix product over channels; depthwise ones shifted
# multiply-adds.
BACKBONE_CONVS = [
    (9, 7, 2, 3, False),  # ResNet/DenseNet stem
    (2, 3, 2, 1, False),  # ResNetV2 strided 3×3 on a 2×2 map
    (3, 3, 1, 1, False),
    (1, 3, 1, "SAME", False),  # VGG block 5 at 32 px
    (7, 1, 1, "VALID", False),  # DenseNet 1×1
    (5, 1, 2, "VALID", False),  # ResNet strided projection
    (7, 3, 1, "SAME", True),  # MobileNetV2 depthwise
    (2, 3, 1, "SAME", True),
    (6, 3, 2, "VALID", True),  # after correct_pad
]


@pytest.mark.slow
@pytest.mark.parametrize("size, kernel_size, strides, padding, depthwise", BACKBONE_CONVS)
def test_cpu_conv_paths_match_lax_for_backbone_convolutions(size, kernel_size, strides, padding, depthwise):
    assert_conv_matches_lax(size, kernel_size, strides, padding, depthwise)
