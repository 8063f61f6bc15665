"""Plain helpers that several test files import; each has its one home here.

pytest's fixtures are in conftest.py, which tests do not import (pytest loads it itself, and a
second import under another name would run it twice). Throw-away DVC projects are
tests/projects.py's job, Keras-written weight files tests/keras_files.py's.

Here: where the project and the dataset mirror are; generated images, image trees and prepared
data; running the data stages in-process in the cwd (a project folder, see conftest's
``offline_project``); a saved model; the CPU convolutions against lax.
"""

import io
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml
from flax import nnx
from jax import lax
from PIL import Image

from flaxvision import builder
from flaxvision.files import write_checksums
from flaxvision.model_folder import ModelInfo, save_trained
from flaxvision.models.layers import conv, depthwise_conv, use_convolutions
from flaxvision.params import AugmentConfig, Params, PreprocessConfig, TrainConfig, TransferConfig, from_dict
from flaxvision.recipes import plain_params, plain_section
from stages import download as download_stage
from stages import preprocess as preprocess_stage

# --- the project and the dataset mirror --------------------------------------------------------

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The offline mirror of the seeds' datasets, beside the project (docs/data.md, offline mirror).
SHARED_DATASETS = Path(os.environ.get("DATA_MIRROR", PROJECT_ROOT.parent / "shared" / "datasets"))
STAGES = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]  # name -> stage, in dvc.yaml's order


def shared_file(name: str) -> Path:
    """A file of the shared dataset mirror, or skip the test with the reason."""
    path = SHARED_DATASETS / name
    if not path.is_file():
        pytest.skip(f"{path} not present (the shared dataset mirror is not beside the project)")
    return path


def copy_checkout(destination: Path):
    """The project's files as git sees them (tracked, and untracked ones not ignored), copied into
    ``destination``: what a fresh clone of this working tree would hold."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    if listed.returncode:
        pytest.skip(f"not a git checkout: {listed.stderr.strip()}")
    for name in listed.stdout.split("\0"):
        if name and (PROJECT_ROOT / name).is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(PROJECT_ROOT / name, destination / name)


def mirror_file(name: str) -> Path:
    """Where ``name`` goes in the mirror the test set (DATA_MIRROR)."""
    return Path(os.environ["DATA_MIRROR"]) / name


def write_zip(name: str, members: dict[str, bytes], links: dict[str, str] | None = None):
    """A zip ``name`` in the mirror; ``links``: member -> target, stored as symlinks."""
    with zipfile.ZipFile(mirror_file(name), "w") as archive:
        for member, data in members.items():
            archive.writestr(zipfile.ZipInfo(member), data)  # ZipInfo keeps the name as given
        for member, target in (links or {}).items():
            info = zipfile.ZipInfo(member)
            info.external_attr = 0o120777 << 16
            archive.writestr(info, target)


# --- generated images --------------------------------------------------------------------------

CLASSES = ["red", "green", "blue"]  # the square colours of pattern_images, by label


def pattern_images(count: int, size: int = 32, classes: int = 3, seed: int = 0):
    """uint8 images whose class is the colour of a bright square on a noisy background.

    Learnable in a few steps, so tests can check that training makes progress.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    images = rng.integers(0, 60, size=(count, size, size, 3), dtype=np.uint8)
    colours = np.eye(3, dtype=np.uint8)[np.arange(classes) % 3] * 200 + 40
    for image, label in zip(images, labels, strict=True):
        top, left = rng.integers(0, size // 2, size=2)
        image[top : top + size // 2, left : left + size // 2] = colours[label]
    return images, labels.astype(np.int32)


def image_bytes(fmt: str = "PNG", colour=(200, 30, 30), size=(30, 20)) -> bytes:
    """An image file of one ``colour`` in format ``fmt``, as bytes (for archives)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


def write_images(folder: Path, count: int, label: int = 0, size: int = 16, suffix: str = ".png"):
    """``count`` ``size``×``size`` images ``<i><suffix>`` in ``folder``: a square on noise, red,
    green or blue by ``label``."""
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = pattern_images(count, size=size, classes=1, seed=label)
    for index, image in enumerate(images):
        Image.fromarray(np.roll(image, label, axis=-1)).save(folder / f"{index}{suffix}")


def write_tree(root: Path, layout: dict[str, int], size: int = 16, suffix: str = ".png"):
    """``root/<folder>/<i><suffix>`` with ``count`` images per folder (class folders, or
    split/class), the folders' squares red, green, blue in turn. Returns None, as the other
    writers, so that a case's setup can chain them with ``or``."""
    for index, (folder, count) in enumerate(layout.items()):
        write_images(root / folder, count, label=index % 3, size=size, suffix=suffix)


def write_prepared(counts=(6, 3, 3), size: int = 32, image_size=None, missing=()):
    """data/prepared in the cwd as preprocess writes it, straight from arrays (no decoding):
    ``counts`` pattern_images of CLASSES in train, validation and test (seeded by the split's
    index), no arrays for a split in ``missing``; dataset.json claims ``image_size`` (default:
    the arrays')."""
    folder = Path("data/prepared")
    folder.mkdir(parents=True)
    names = ("train", "validation", "test")
    for seed, (split, count) in enumerate(zip(names, counts, strict=True)):
        if split in missing:
            continue
        images, labels = pattern_images(count, size=size, seed=seed)
        np.save(folder / f"{split}_images-00000.npy", images)
        np.save(folder / f"{split}_labels.npy", labels)
    (folder / "dataset.json").write_text(
        json.dumps(
            {
                "data": "folder:images",
                "classes": CLASSES,
                "image_size": image_size or [size, size],
                "color_mode": "rgb",
                "splits": dict(zip(names, counts, strict=True)),
                "split_sources": {},
            }
        )
    )
    write_checksums(folder)


# --- the data stages, in-process in the cwd ----------------------------------------------------


def write_params(data: str, **sections):
    """params.yaml in the cwd: the plain params (flaxvision.recipes.plain_params) with ``data`` and
    the ``sections`` given (preprocess={...}, ...) merged in."""
    Path("params.yaml").write_text(yaml.safe_dump(plain_params({"data": data, **sections})))


def typed_params(changes: dict | None = None) -> Params:
    """The plain params (flaxvision.recipes.plain_params) with ``changes``, parsed as a stage parses params.yaml."""
    return from_dict(plain_params(changes), Params, prefix="")


def train_config(**changes) -> TrainConfig:
    """params train: plain (Adam at 0.001, nothing else), with ``changes``."""
    return plain_section("train", **changes)


def augment_config(**changes) -> AugmentConfig:
    """params augment: none, with ``changes``."""
    return plain_section("augment", **changes)


def transfer_config(**changes) -> TransferConfig:
    return plain_section("transfer", **changes)


def preprocess_config(**changes) -> PreprocessConfig:
    return plain_section("preprocess", **changes)


def prepare(data: str, image_size=(8, 8), **preprocess) -> dict:
    """The download and preprocess stages on ``data`` (preprocess params: ``image_size`` and
    ``preprocess``); data/prepared/dataset.json."""
    write_params(data, preprocess={"image_size": list(image_size), **preprocess})
    download_stage.main()
    preprocess_stage.main()
    return json.loads(Path("data/prepared/dataset.json").read_text())


def report() -> dict:
    """data/prepared/report.json: what preprocess skipped, ignored and warned about, per split."""
    return json.loads(Path("data/prepared/report.json").read_text())


def expect_user_error(capsys, main, *fragments) -> str:
    """Run a stage's main: it must exit 1 with a last 'error: ...' line naming ``fragments``."""
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ") and all(f in line for f in fragments), line
    return line


# --- models --------------------------------------------------------------------------------------


def save_model(
    folder: Path, name: str = "simple_cnn", input_shape=(32, 32, 3), classes=CLASSES, model: nnx.Module | None = None
) -> Path:
    """``model`` (default: preset ``name`` as initialised, Rngs(0)) saved as the train stage saves it."""
    info = model_info(name, input_shape, classes)
    save_trained(folder, model or info.build(), info)
    return folder


def model_info(name: str, input_shape, classes=CLASSES, **transfer) -> ModelInfo:
    """The `ModelInfo` the train stage records for preset ``name`` trained on ``input_shape`` images
    (with 'transfer', params' transfer section updated by ``transfer``)."""
    return ModelInfo(
        model=name,
        transfer=builder.transfer_config(name, transfer_config(**transfer)),
        classes=tuple(classes),
        input_shape=tuple(input_shape),
        color_mode="rgb" if input_shape[-1] == 3 else "grayscale",
        preprocessing=builder.preprocessing(name),
    )


def assert_conv_matches_lax(
    size: int, kernel_size: int, strides: int, padding, depthwise: bool = False, convolutions: str = "xla"
):
    """models.layers' conv (8 → 16 channels) or depthwise_conv (8), with a random bias, on a random
    2×``size``×``size``×8 input, whichever path it takes with ``convolutions`` (a key of
    models.layers.CONVOLUTIONS), against lax.conv_general_dilated: values and gradients. An int
    ``padding`` pads each side (as Keras' ZeroPadding2D + 'valid')."""
    channels = 8
    if depthwise:
        layer = depthwise_conv(channels, kernel_size, strides=strides, padding=padding, rngs=nnx.Rngs(0))
    else:
        layer = conv(channels, 16, kernel_size, strides=strides, padding=padding, rngs=nnx.Rngs(0))
    use_convolutions(layer, convolutions)
    layer.bias[...] = jax.random.normal(jax.random.key(1), layer.bias.shape)
    x = jax.random.normal(jax.random.key(0), (2, size, size, channels))
    lax_padding = ((padding, padding),) * 2 if isinstance(padding, int) else padding

    def reference(x, kernel):
        return (
            lax.conv_general_dilated(
                x,
                kernel,
                (strides, strides),
                lax_padding,
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                feature_group_count=layer.feature_group_count,
            )
            + layer.bias[...]
        )

    np.testing.assert_allclose(layer(x), reference(x, layer.kernel[...]), rtol=1e-5, atol=1e-5)
    want_x, want_kernel = jax.grad(lambda *a: jnp.sum(reference(*a) ** 2), (0, 1))(x, layer.kernel[...])
    got_x = jax.grad(lambda x: jnp.sum(layer(x) ** 2))(x)
    got_kernel = nnx.grad(lambda layer: jnp.sum(layer(x) ** 2))(layer).kernel[...]
    np.testing.assert_allclose(got_x, want_x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_kernel, want_kernel, rtol=1e-4, atol=1e-3)
