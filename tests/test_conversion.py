"""flaxvision.conversion: the Keras h5 layouts, strictness, the official weight files, the
conversion cache, and parity with Keras for every backbone (point 5 of issue 3).

Keras 3 on JAX (a test-only dependency) is the ground truth: models with random weights and
randomised BatchNorm statistics, written in the legacy layouts by tests/keras_files.py.
"""

import dataclasses
import functools
import hashlib
import importlib
import re
from pathlib import Path

import h5py
import jax
import keras
import numpy as np
import pytest
from flax import nnx
from keras.src.applications import densenet, imagenet_utils, mobilenet_v2, resnet, vgg16

from flaxvision import conversion
from flaxvision.conversion import h5
from flaxvision.conversion.weights import KERAS_APPLICATIONS, imagenet_weights
from flaxvision.data import download
from flaxvision.errors import UserError
from flaxvision.models.backbones import BACKBONES
from flaxvision.models.scaling import preprocess_input
from tests import keras_files as kf
from tests.helpers import shared_file

# Every test with an empty mirror, a private cache (downloads and conversions), no network.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("mirror")]


def max_abs(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    return float(np.max(np.abs(a - b)))


def assert_same_weights(read: dict, expected: dict):
    assert sorted(read) == sorted(expected)
    for name, arrays in expected.items():
        assert [a.shape for a in read[name]] == [a.shape for a in arrays], name
        assert all(np.array_equal(a, b) for a, b in zip(read[name], arrays, strict=True)), name


# A small model with each kind of Keras layer the backbones use (Conv2D, BatchNormalization,
# DepthwiseConv2D with a multiplier, Dense), in Keras and in Flax: the layouts are tested on it.
TINY_INPUT = (9, 7, 3)


def tiny_keras_model(name: str = "tiny", classes: int = 5, seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(TINY_INPUT)
    x = keras.layers.Conv2D(4, 3, name="conv1_conv")(inputs)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.ReLU(name="conv1_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    model = keras.Model(inputs, keras.layers.Dense(classes, name="predictions")(x), name=name)
    return kf.randomize(model, seed)


class TinyBackbone(nnx.Module):
    """`tiny_keras_model` in Flax, with the models.backbones interface (`keras_layers`)."""

    def __init__(self, classes: int = 5, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, 4, (3, 3), padding="VALID", rngs=rngs)
        self.bn = nnx.BatchNorm(4, epsilon=1e-3, use_running_average=True, rngs=rngs)
        self.depthwise = nnx.Conv(4, 8, (3, 3), padding="VALID", feature_group_count=4, rngs=rngs)
        self.dense = nnx.Linear(8, classes, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.bn(self.conv(x)))
        return self.dense(self.depthwise(x).mean(axis=(1, 2)))

    def keras_layers(self) -> dict[str, nnx.Module]:
        return {"conv1_conv": self.conv, "conv1_bn": self.bn, "dw": self.depthwise, "predictions": self.dense}


KERAS2_RENAMES = {"conv1_conv": "conv1/conv", "conv1_bn": "conv1/bn"}  # as Keras-2 DenseNet names them
KERAS2_ALIASES = {keras2: keras3 for keras3, keras2 in KERAS2_RENAMES.items()}


@pytest.fixture(scope="module")
def tiny() -> keras.Model:
    return tiny_keras_model()


@pytest.fixture(scope="module")
def tiny_images() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(2, *TINY_INPUT)).astype(np.float32)


def converted(path, *, aliases=None, submodel=None, classes=5) -> tuple[TinyBackbone, conversion.Conversion]:
    model = TinyBackbone(classes, rngs=nnx.Rngs(1))
    return model, conversion.convert(model, path, aliases=aliases or {}, submodel=submodel)


# --- the layouts ---------------------------------------------------------------------------


def test_weights_only_file_as_keras3_writes_it(tmp_path, tiny):
    kf.save_weights_only(tiny, tmp_path / "w.h5")
    weights = h5.read_keras_h5(tmp_path / "w.h5")
    assert weights.submodel is None and weights.others == {}
    assert_same_weights(weights.layers, kf.layer_weights(tiny))


@pytest.mark.parametrize("strings", [bytes, str])
@pytest.mark.parametrize("chunks", [1, 3])
def test_keras2_weights_only_file(tmp_path, tiny, strings, chunks):
    path = tmp_path / "w.h5"
    kf.write_legacy_h5(path, kf.keras2_file_weights(tiny), chunks=chunks, strings=strings)
    with h5py.File(path) as file:  # the variant under test is really what the file holds
        names = "layer_names" if chunks == 1 else "layer_names2"
        assert isinstance(file.attrs[names][0], bytes if strings is bytes else str)
        assert file["dw"].attrs["weight_names"][0] in (b"dw/kernel:0", "dw/kernel:0")

    weights = h5.read_keras_h5(path)
    assert weights.submodel is None and weights.others == {}
    assert_same_weights(weights.layers, kf.layer_weights(tiny))


def test_a_layer_s_weights_may_carry_another_name_scope(tmp_path, tiny):
    layers = kf.keras2_file_weights(tiny)  # as a Keras 2 that built the model twice named them:
    layers["dw"] = [(name.replace("dw/", "dw_1/"), array) for name, array in layers["dw"]]
    kf.write_legacy_h5(tmp_path / "w.h5", layers)
    weights = h5.read_keras_h5(tmp_path / "w.h5")
    assert weights.submodel is None
    assert_same_weights(weights.layers, kf.layer_weights(tiny))


def test_full_model_nesting_the_backbone_under_a_head(tmp_path):
    backbone = tiny_keras_model()
    backbone.get_layer("conv1_conv").trainable = False  # frozen layers come after the trainable ones
    full = kf.with_head(backbone)
    kf.save_full_model(full, tmp_path / "full.h5")

    weights = h5.read_keras_h5(tmp_path / "full.h5")

    assert weights.submodel == "tiny"
    assert_same_weights(weights.layers, kf.layer_weights(backbone))
    assert_same_weights(weights.others, {"head": full.get_layer("head").get_weights()})


def test_keras2_full_model_with_slash_layer_names(tmp_path, tiny):
    full = kf.with_head(tiny)
    layers = {
        "input_1": [],
        "tiny": kf.nested_weights(tiny, KERAS2_RENAMES),
        "dropout": [],
        "head": kf.keras2_names(full.get_layer("head").weights),
    }
    kf.write_legacy_h5(tmp_path / "full.h5", layers, group="model_weights")

    weights = h5.read_keras_h5(tmp_path / "full.h5")

    expected = {KERAS2_RENAMES.get(name, name): arrays for name, arrays in kf.layer_weights(tiny).items()}
    assert weights.submodel == "tiny"
    assert_same_weights(weights.layers, expected)
    assert list(weights.others) == ["head"]


def test_a_file_nesting_several_models_needs_the_one_to_read(tmp_path):
    first, second = tiny_keras_model("first", seed=1), tiny_keras_model("second", seed=2)
    inputs = keras.Input(TINY_INPUT)
    merged = keras.layers.Concatenate()([first(inputs), second(inputs)])
    kf.save_full_model(keras.Model(inputs, keras.layers.Dense(2, name="head")(merged)), tmp_path / "two.h5")

    with pytest.raises(UserError, match=r"nests several models \(first, second\); name one, as in '.*two.h5:first'"):
        h5.read_keras_h5(tmp_path / "two.h5")
    with pytest.raises(UserError, match=r"no nested model 'third' \(nested models: first, second\)"):
        h5.read_keras_h5(tmp_path / "two.h5", submodel="third")
    weights = h5.read_keras_h5(tmp_path / "two.h5", submodel="second")
    assert_same_weights(weights.layers, kf.layer_weights(second))
    assert sorted(weights.others) == ["first", "head"]


def test_arrays_no_layer_lists_are_reported(tmp_path, tiny):
    kf.save_weights_only(tiny, tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "a") as file:
        file["dw"].create_dataset("stray", data=np.zeros(3))

    weights = h5.read_keras_h5(tmp_path / "w.h5")

    assert list(weights.others) == ["dw/stray"]
    assert_same_weights(weights.layers, kf.layer_weights(tiny))


def write_signs_like(path: Path):
    with h5py.File(path, "w") as file:
        file["train_set_x"] = np.zeros((2, 4, 4, 3), np.uint8)


def write_keras3_weights_h5(path: Path):
    tiny_keras_model().save_weights(path.with_suffix(".weights.h5"))
    path.with_suffix(".weights.h5").rename(path)


def write_listed_but_missing(path: Path):
    kf.write_legacy_h5(path, kf.keras2_file_weights(tiny_keras_model()))
    with h5py.File(path, "a") as file:
        del file["conv1_bn/conv1_bn/moving_variance:0"]


@pytest.mark.parametrize(
    "write, message",
    [
        (lambda path: path.write_bytes(b"not hdf5 at all"), "not a readable HDF5 file"),
        (write_signs_like, r"not a Keras h5 weights file \(no 'layer_names' attribute\)$"),
        (write_keras3_weights_h5, r"Keras 3's .weights.h5 layout: load the model in Keras and save it with"),
        (write_listed_but_missing, r"layer 'conv1_bn' lists weights \['conv1_bn/moving_variance:0'\] that the file"),
    ],
    ids=["not-hdf5", "other-hdf5", "keras3-weights-h5", "listed-but-missing"],
)
def test_a_file_that_is_not_keras_weights_is_a_one_line_error(tmp_path, write, message):
    path = tmp_path / "weights.h5"
    write(path)
    with pytest.raises(UserError, match=message) as error:
        h5.read_keras_h5(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


# --- conversion ----------------------------------------------------------------------------


def write_weights_only(tiny, folder):
    kf.save_weights_only(tiny, folder / "w.h5")
    return folder / "w.h5", {}, ()


def write_keras2_chunked(tiny, folder):
    kf.write_legacy_h5(folder / "w.h5", kf.keras2_file_weights(tiny, KERAS2_RENAMES), chunks=2, strings=str)
    return folder / "w.h5", KERAS2_ALIASES, ()


def write_full_model(tiny, folder):
    kf.save_full_model(kf.with_head(tiny), folder / "full.h5")
    return folder / "full.h5", {}, ("head",)


def write_flat_full_model(tiny, folder):  # the head on the backbone's own layers, nothing nested
    head = keras.layers.Dense(2, name="head")(tiny.output)
    kf.save_full_model(keras.Model(tiny.input, head), folder / "flat.h5")
    return folder / "flat.h5", {}, ("head",)


@pytest.mark.parametrize("write", [write_weights_only, write_keras2_chunked, write_full_model, write_flat_full_model])
def test_converted_model_computes_what_keras_does(tmp_path, tiny, tiny_images, write):
    path, aliases, unused = write(tiny, tmp_path)
    model, result = converted(path, aliases=aliases)
    assert max_abs(model(tiny_images), tiny(tiny_images)) <= 1e-5
    assert result.unused == unused and result.file == path and not result.from_cache


def test_conversion_runs_once_then_comes_from_the_cache(tmp_path, tiny, tiny_images, monkeypatch, capsys):
    path, _, _ = write_full_model(tiny, tmp_path)
    first_model, first = converted(path)
    cached = list((tmp_path / "cache" / "converted").iterdir())
    assert [p.suffix for p in cached] == [".msgpack"], "one file, written atomically (no .tmp left)"
    assert cached[0].name.startswith(first.sha256[:16])

    def must_not_read(*args, **kwargs):
        raise AssertionError("the h5 file was read again")

    capsys.readouterr()
    with monkeypatch.context() as patched:
        patched.setattr(h5, "read_keras_h5", must_not_read)
        model, second = converted(path)

    assert second.from_cache and second.unused == first.unused == ("head",) and second.sha256 == first.sha256
    assert max_abs(model(tiny_images), first_model(tiny_images)) == 0
    assert f"notice: {path}: not used by the model: head" in capsys.readouterr().err

    changed = tiny_keras_model(seed=5)  # another file: converted again
    kf.save_weights_only(changed, tmp_path / "other.h5")
    model, third = converted(tmp_path / "other.h5")
    assert not third.from_cache and max_abs(model(tiny_images), changed(tiny_images)) <= 1e-5


def tiny_without_top() -> keras.Model:
    model = tiny_keras_model()
    return keras.Model(model.input, model.get_layer("avg_pool").output)


@pytest.mark.parametrize(
    "keras_model", [lambda: tiny_keras_model(classes=6), tiny_without_top], ids=["shape", "missing-layer"]
)
def test_a_mismatch_is_an_error_naming_the_layer(tmp_path, keras_model):
    kf.save_weights_only(keras_model(), tmp_path / "w.h5")
    with pytest.raises(UserError, match="predictions") as error:
        converted(tmp_path / "w.h5")
    assert str(error.value).startswith(f"{tmp_path / 'w.h5'}: ") and "\n" not in str(error.value)
    assert not (tmp_path / "cache" / "converted").exists() or not any((tmp_path / "cache" / "converted").iterdir())


# --- the official weight files -------------------------------------------------------------


def published_md5s() -> dict[str, str]:
    """The md5 table of ../shared/datasets/README.md (copied there from Keras's source)."""
    readme = shared_file("README.md")
    return dict(re.findall(r"^\| (\S+\.h5) \| ([0-9a-f]{32}) \|", readme.read_text(), re.MULTILINE))


@pytest.mark.parametrize(
    "backbone, include_top, keras_url",
    [
        ("resnet50", True, resnet.BASE_WEIGHTS_PATH + "resnet50_weights_tf_dim_ordering_tf_kernels.h5"),
        ("resnet50", False, resnet.BASE_WEIGHTS_PATH + "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("resnet50v2", True, resnet.BASE_WEIGHTS_PATH + "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5"),
        ("resnet50v2", False, resnet.BASE_WEIGHTS_PATH + "resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5"),
        ("densenet121", True, densenet.DENSENET121_WEIGHT_PATH),
        ("densenet121", False, densenet.DENSENET121_WEIGHT_PATH_NO_TOP),
        ("vgg16", True, vgg16.WEIGHTS_PATH),
        ("vgg16", False, vgg16.WEIGHTS_PATH_NO_TOP),
    ],
)
def test_official_files_are_keras_urls_with_the_published_md5(backbone, include_top, keras_url):
    file = imagenet_weights(backbone, include_top=include_top, input_shape=(224, 224, 3))
    assert file.url == keras_url and file.name == keras_url.rpartition("/")[2]
    assert file.md5 == published_md5s()[file.name]


@pytest.mark.parametrize(
    "input_shape, include_top, alpha, name",
    [
        ((224, 224, 3), True, 1.0, "1.0_224.h5"),
        ((96, 96, 3), False, 0.35, "0.35_96_no_top.h5"),
        ((160, 160, 3), True, 1.4, "1.4_160.h5"),
        ((100, 100, 3), False, 0.5, "0.5_224_no_top.h5"),  # no file for 100 px: Keras takes 224's
        ((160, 128, 3), False, 0.75, "0.75_224_no_top.h5"),  # nor for a non-square input
    ],
)
def test_mobilenet_v2_file_per_width_and_size(input_shape, include_top, alpha, name):
    file = imagenet_weights("mobilenet_v2", include_top=include_top, input_shape=input_shape, alpha=alpha)
    assert file.name == f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{name}"
    assert file.url == mobilenet_v2.BASE_WEIGHT_PATH + file.name and file.md5 is None


@pytest.mark.parametrize(
    "backbone, kwargs, message",
    [
        ("resnet50", dict(include_top=True, classes=10), "predicts the 1000 ImageNet classes, not 10"),
        ("vgg16", dict(include_top=True, input_shape=(64, 64, 3)), "needs 224x224 images, got 64x64"),
        ("densenet121", dict(input_shape=(64, 64, 1)), r"needs RGB input \(3 channels\), got 1"),
        ("mobilenet_v2", dict(alpha=0.6), "alpha 0.35, 0.5, 0.75, 1.0, 1.3, 1.4, not 0.6"),
        ("mobilenet_v2", dict(include_top=True, input_shape=(100, 100, 3)), "needs square images of 96, 128"),
        ("efficientnet", dict(), "no imagenet weights for 'efficientnet'"),
    ],
)
def test_imagenet_weights_follow_keras_rules(backbone, kwargs, message):
    kwargs = {"include_top": False, "input_shape": (224, 224, 3), **kwargs}
    with pytest.raises(UserError, match=message) as error:
        imagenet_weights(backbone, **kwargs)
    assert str(error.value).startswith("weights: ") and "\n" not in str(error.value)


def test_offline_without_the_file_names_url_file_and_folders(tmp_path, mirror):
    official = imagenet_weights("densenet121", include_top=False, input_shape=(64, 64, 3))
    with pytest.raises(UserError) as error:
        download.fetch(official)
    message = str(error.value)
    assert official.url in message and "\n" not in message
    assert f"put {official.name} in a folder and set DATA_MIRROR to it (looked in: {mirror})" in message
    assert f"or into the download cache {tmp_path / 'cache'}" in message


def test_a_mirror_copy_with_another_md5_is_rejected(tmp_path, mirror, tiny):
    official = imagenet_weights("resnet50", include_top=False, input_shape=(64, 64, 3))
    kf.save_weights_only(tiny, mirror / official.name)
    with pytest.raises(UserError, match=f"md5 [0-9a-f]{{32}} does not match the published {official.md5}"):
        download.fetch(official)


def test_a_matching_md5_verifies_the_file(tmp_path, mirror, tiny):
    kf.save_weights_only(tiny, mirror / "w.h5")
    md5 = hashlib.md5((mirror / "w.h5").read_bytes()).hexdigest()
    _, record = download.fetch(download.RemoteFile(name="w.h5", url=KERAS_APPLICATIONS + "w.h5", md5=md5))
    assert record.verification == "md5 matches the published digest"


@pytest.mark.parametrize(
    "alpha, size, expected",
    [
        (0.35, 96, "unverified (no published checksum): Keras h5 layout ok (4 layers, 10 arrays)"),
        (
            1.0,
            224,
            "unverified (no published checksum): size differs from the official 9,406,464 bytes; "
            "Keras h5 layout ok (4 layers, 10 arrays)",
        ),
    ],
)
def test_mobilenet_v2_files_are_unverified_with_a_notice(mirror, tiny, capsys, alpha, size, expected):
    official = imagenet_weights("mobilenet_v2", include_top=False, input_shape=(size, size, 3), alpha=alpha)
    kf.save_weights_only(tiny, mirror / official.name)
    _, record = download.fetch(official)
    assert record.verification == expected
    assert f"notice: {mirror / official.name}: {expected}" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["tf", "caffe", "torch"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_preprocess_input_is_keras_preprocess_input(mode, dtype):
    images = np.random.default_rng(0).uniform(0, 255, (2, 5, 4, 3)).astype(dtype)
    keras_inputs = imagenet_utils.preprocess_input(images.copy(), mode=mode)  # numpy: in place
    assert max_abs(preprocess_input(images, mode), keras_inputs) <= 1e-5


# --- parity with keras.applications, for every backbone --------------------------------------

PARITY_INPUT = (40, 32, 3)  # small, and not square: height and width must not be swapped
OPTIONS = {"mobilenet_v2": {"alpha": 0.35}}  # a width other than the default 1.0
PARITY_CLASSES = 5
TOLERANCE = 1e-4


@dataclasses.dataclass
class ParityCase:
    """A backbone's Keras ground truth: its files and what Keras computes from raw images."""

    name: str
    folder: Path  # top.h5 and keras2_top.h5 (weights only), full.h5 (the notop model under a head)
    images: np.ndarray  # raw [0, 255]
    expected: dict[str, np.ndarray]  # 'logits' of the top model, 'avg' pooled features of the notop one
    notop_model: str  # the nested model's name in full.h5
    top_layers: tuple[str, ...]  # the top model's layers with weights that the notop model lacks


@pytest.fixture(scope="module", params=list(BACKBONES))
def parity(request, tmp_path_factory) -> ParityCase:
    name, backbone = request.param, BACKBONES[request.param]
    folder = tmp_path_factory.mktemp(name)
    build = functools.partial(
        kf.applications_model, backbone.keras_class, input_shape=PARITY_INPUT, **OPTIONS.get(name, {})
    )
    top = build(include_top=True, classes=PARITY_CLASSES)
    notop = kf.copy_weights(top, build(include_top=False, pooling="avg"))  # the same backbone
    kf.save_weights_only(top, folder / "top.h5")
    keras2_names = {keras3: keras2 for keras2, keras3 in backbone.keras_aliases.items()}
    kf.write_legacy_h5(folder / "keras2_top.h5", kf.keras2_file_weights(top, keras2_names), chunks=2)
    kf.save_full_model(kf.with_head(notop), folder / "full.h5")

    images = np.random.default_rng(0).uniform(0, 255, (2, *PARITY_INPUT)).astype(np.float32)
    keras_preprocess = importlib.import_module(getattr(keras.applications, backbone.keras_class).__module__)
    inputs = keras_preprocess.preprocess_input(images.copy())
    both = keras.Model(notop.input, [top(notop.input), notop.output])  # one compiled Keras forward
    logits, pooled = both.predict_on_batch(inputs)
    top_layers = tuple(set(kf.layer_weights(top)) - set(kf.layer_weights(notop)))
    return ParityCase(name, folder, images, {"logits": logits, "avg": pooled}, notop.name, top_layers)


def flax_backbone(case: ParityCase, weights, **kwargs) -> tuple[nnx.Module, conversion.Conversion]:
    options = {**OPTIONS.get(case.name, {}), **kwargs}
    model, result = conversion.build_backbone(
        case.name, weights=weights, input_shape=PARITY_INPUT, rngs=nnx.Rngs(0), **options
    )
    model.eval()
    return model, result


def compiled(case: ParityCase, model: nnx.Module):
    """``model``'s forward from raw images, preprocessing included, as one compiled function of
    its weights (jit: on CPU, compiling a backbone once beats running it op by op)."""
    graphdef, _ = nnx.split(model)
    mode = BACKBONES[case.name].preprocessing
    forward = jax.jit(lambda state, images: nnx.merge(graphdef, state)(preprocess_input(images, mode)))
    return lambda model: np.asarray(forward(nnx.state(model), case.images))


def report(case: ParityCase, outputs: np.ndarray, expected: str, label: str) -> float:
    """The max abs difference from Keras's ``expected``, printed (pytest -s shows it)."""
    found, largest = max_abs(outputs, case.expected[expected]), np.abs(case.expected[expected]).max()
    print(f"{case.name}: {label}: max abs difference {found:.2e} (Keras's largest output {largest:.3g})")
    return found


def test_logits_match_keras(parity):
    model, result = flax_backbone(parity, str(parity.folder / "top.h5"), include_top=True, classes=PARITY_CLASSES)
    forward = compiled(parity, model)
    assert report(parity, forward(model), "logits", "logits, top.h5") <= TOLERANCE and result.unused == ()

    keras2 = conversion.convert(model, parity.folder / "keras2_top.h5", aliases=BACKBONES[parity.name].keras_aliases)
    assert report(parity, forward(model), "logits", "logits, Keras-2 names") <= TOLERANCE and keras2.unused == ()


def test_pooled_features_from_a_full_model_file_match_keras(parity):
    model, result = flax_backbone(parity, f"{parity.folder / 'full.h5'}:{parity.notop_model}", pooling="avg")
    assert report(parity, compiled(parity, model)(model), "avg", "avg, full.h5") <= TOLERANCE
    assert result.unused == ("head",)


def test_the_file_s_top_is_reported_when_building_without_it(parity):
    _, result = flax_backbone(parity, str(parity.folder / "top.h5"), pooling="max")
    assert sorted(result.unused) == sorted(parity.top_layers) and not result.from_cache
    _, again = flax_backbone(parity, str(parity.folder / "top.h5"), pooling="max")
    assert again.from_cache and again.unused == result.unused


def test_weights_none_imagenet_or_a_missing_file(tmp_path, mirror, capsys):
    build = functools.partial(
        conversion.build_backbone, "mobilenet_v2", input_shape=(32, 32, 3), alpha=0.35, rngs=nnx.Rngs(0)
    )
    assert build(weights="none")[1] is None and build(weights=None)[1] is None

    name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"  # 32 px: Keras takes 224's
    with pytest.raises(UserError) as error:
        build(weights="imagenet")
    assert f"cannot download {mobilenet_v2.BASE_WEIGHT_PATH}{name} " in str(error.value)
    assert f"put {name} in a folder and set DATA_MIRROR to it (looked in: {mirror})" in str(error.value)

    keras_model = kf.applications_model("MobileNetV2", alpha=0.35, include_top=False, input_shape=(32, 32, 3))
    kf.save_weights_only(keras_model, mirror / name)  # a stand-in for Keras's file, in the mirror
    model, result = build(weights="imagenet")
    assert result.file == mirror / name and result.unused == ()
    assert "unverified (no published checksum): Keras h5 layout ok" in capsys.readouterr().err
    keras_kernel = keras_model.get_layer("Conv1").get_weights()[0]
    assert np.array_equal(model.keras_layers()["Conv1"].kernel[...], keras_kernel)

    with pytest.raises(UserError, match=f"weights: {tmp_path}/absent.h5 is not a file; give imagenet, none"):
        build(weights=str(tmp_path / "absent.h5"))
    with pytest.raises(UserError, match="unknown backbone 'mobilenet'; valid backbones: "):
        conversion.build_backbone("mobilenet", weights=None, input_shape=(32, 32, 3), rngs=nnx.Rngs(0))
