"""The catalogue of bad inputs (issue 10): each is a one-line `error: ` naming the file or parameter
and the fix (or, for degenerate but usable data, one `warning: ` line), never a traceback, and
leaves no half-written output behind.

Every case runs a stage's `main()` in-process, in a generated project folder (cwd), with an empty
offline mirror and no network; only the last two go through the real command line. Images are
tiny, so the whole file stays well under a minute and a half on two cores.
"""

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import h5py
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import yaml
from flax import serialization, traverse_util
from PIL import Image, ImageFile

from flaxvision.data import datasets
from flaxvision.dvc_stage import stage_main
from flaxvision.export import main as export_main
from flaxvision.files import write_checksums
from flaxvision.params import PARAMS_FILE, read_mapping
from flaxvision.predict import main as predict_main
from flaxvision.recipes import plain_params
from stages import download, evaluate, extract_features, preprocess, source, train
from tests.helpers import (
    PROJECT_ROOT,
    image_bytes,
    mirror_file,
    report,
    save_model,
    write_images,
    write_prepared,
    write_tree,
    write_zip,
)

REAL_URLOPEN = urllib.request.urlopen
BASE_PARAMS = {
    "model": "simple_cnn",
    "data": "folder:pets",
    "pretrained": "none",
    "convolutions": "xla",
    "numerics": "portable",
    "preprocess": {"image_size": [16, 16]},
    "augment": {},
    "train": {"epochs": 1, "batch_size": 4},
    "evaluate": {},
}


@pytest.fixture
def project(offline_project, tmp_path, monkeypatch):
    """The offline project folder (conftest.py) with its cache made, an empty tfds data dir beside
    it, no DVC_ROOT, and the code linked in (the train stage digests its source files by relative path)."""
    for folder in ("cache", "tfds"):
        (tmp_path / folder).mkdir()
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.delenv("DVC_ROOT", raising=False)
    for code in ("flaxvision", "models", "stages"):
        os.symlink(PROJECT_ROOT / code, code)
    return offline_project


# --- writing inputs ----------------------------------------------------------------------------


def write_base_params(overrides: dict | None = None, text: str | None = None):
    """params.yaml: the plain params with BASE_PARAMS and then ``overrides`` merged into its
    sections (a section given as a non-mapping replaces it), or ``text`` as it is."""
    if text is None:
        params = plain_params(BASE_PARAMS)
        for key, value in (overrides or {}).items():
            if isinstance(value, dict) and isinstance(params.get(key), dict):
                params[key].update(value)
            else:
                params[key] = value
        text = yaml.safe_dump(params)
    Path("params.yaml").write_text(text)


def cats_zip_members(root: str = "cats_and_dogs_filtered/") -> dict[str, bytes]:
    return {
        f"{root}{split}/{animal}/{i}.jpg": image_bytes("JPEG")
        for split in ("train", "validation")
        for animal in ("cats", "dogs")
        for i in range(3)
    }


def write_signs(split: str, x=None, y=None, classes=None, keys=None):
    x = np.zeros((6, 8, 8, 3), np.uint8) if x is None else x
    y = np.arange(len(x)) % 3 if y is None else y
    values = {f"{split}_set_x": x, f"{split}_set_y": y, "list_classes": np.arange(3) if classes is None else classes}
    with h5py.File(mirror_file(f"{split}_signs.h5"), "w") as h5:
        for key, value in values.items():
            h5[(keys or {}).get(key, key)] = value


def dog_breeds_zip(labels_csv: bytes | None):
    """A case's setup: dog-breed-identification.zip with train/a1.jpg and ``labels_csv`` (None:
    without labels.csv)."""

    def write():
        members = {"train/a1.jpg": image_bytes("JPEG")}
        if labels_csv is not None:
            members["labels.csv"] = labels_csv
        write_zip("dog-breed-identification.zip", members)

    return write


def png(width: int, height: int, pixel_data: bytes) -> bytes:
    """An RGB PNG file of ``width``×``height`` whose IDAT chunk holds ``pixel_data`` (zlib-compressed rows)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixel_data) + chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width``×``height`` pixels, without their data (a truncated bomb)."""
    return png(width, height, zlib.compress(b"\0" * 100))


def huge_png(path: Path, side: int = 12000):
    """A complete ``side``×``side`` black PNG (400 MB decoded), compressed row by row (little memory)."""
    compressor, row = zlib.compressobj(), b"\0" * (1 + 3 * side)
    path.write_bytes(png(side, side, b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()))


# --- checking the outcome ----------------------------------------------------------------------


def outputs(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (and the download cache) with its size and mtime, and any temp folder;
    not the curves of a run in progress (checkpoints/live: no output, dvclive opens it first) nor
    JAX's compilation cache."""
    cache = Path(os.environ["FLAXVISION_CACHE"])
    skipped = (root / "checkpoints" / "live", cache / "xla")
    found = {}
    for base in (root, cache):
        for path in base.rglob("*"):
            if any(path.is_relative_to(folder) for folder in skipped):
                continue
            if path.is_file() or path.name.endswith(("-tmp", ".part", ".tmp")):
                found[str(path)] = (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else (0, 0)
    return found


def lines(output: str) -> list[str]:
    """The lines of terminal output, progress bars' carriage returns included."""
    return [line.strip() for line in re.split(r"[\r\n]", output) if line.strip()]


def expect_error(capsys, main, *fragments, code=1):
    """``main()`` must exit ``code`` with exactly one `error: ` line holding every fragment, no
    traceback, and change no file (nothing half-written, no temp folder left)."""
    before = outputs(Path.cwd())
    with pytest.raises(SystemExit) as exit_info:
        main()
    err = capsys.readouterr().err
    assert exit_info.value.code == code, err
    assert "Traceback" not in err, err
    errors = [line for line in lines(err) if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert outputs(Path.cwd()) == before, "a failed stage changed or left files"
    return errors[0]


def expect_warnings(capsys, main, *fragments_per_line) -> list[str]:
    """``main()`` must succeed with one `warning: ` line per entry of ``fragments_per_line``."""
    main()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: " not in err and "DecompressionBomb" not in err, err
    warnings = [line for line in lines(err) if line.startswith("warning: ")]
    assert len(warnings) == len(fragments_per_line), err
    for line, fragments in zip(warnings, fragments_per_line, strict=True):
        for fragment in fragments:
            assert fragment in line, line
    return warnings


def as_param(case):
    """A table row (id, *values), or a pytest.param of one with marks, as a pytest.param with that id."""
    values, marks = (case.values, case.marks) if hasattr(case, "marks") else (case, ())
    return pytest.param(*values[1:], id=values[0], marks=marks)


# --- params.yaml ---------------------------------------------------------------------------------

PARAMS_CASES = [
    # (id, stage, params.yaml: overrides or raw text, fragments of the error)
    ("missing", preprocess, None, ["params.yaml not found", "run the stage from the project root"]),
    ("invalid-yaml", preprocess, "model: [simple_cnn\n", ["params.yaml is not valid YAML"]),
    ("not-a-mapping", train, "- model\n- data\n", ["params.yaml must be a mapping of sections"]),
    ("empty", download, "", ["params.yaml must be a mapping"]),
    ("no-data", download, "model: simple_cnn\n", ["missing key 'data'", "add the line 'data: cats_vs_dogs'"]),
    ("data-not-a-string", download, {"data": 3}, ["'data' must be a str, got 3"]),
    ("no-model", train, "data: folder:pets\nnumerics: portable\n", ["missing key 'model'"]),
    ("unknown-model", train, {"model": "alexnet"}, ["unknown model 'alexnet'", "valid models: belgiumtsc_cnn"]),
    ("unknown-data", download, {"data": "imagenet"}, ["unknown data 'imagenet'", "valid forms: cats_vs_dogs"]),
    ("folder-without-path", download, {"data": "folder:"}, ["unknown data 'folder:'", "folder:<path>"]),
    ("tfds-without-name", download, {"data": "tfds:"}, ["unknown data 'tfds:'", "tfds:<name>"]),
    ("section-not-mapping", train, {"train": 5}, ["'train' must be a mapping, got 5"]),
    (
        "unknown-preprocess-key",
        preprocess,
        {"preprocess": {"size": 8}},
        ["unknown key 'preprocess.size'", "valid keys: image_size"],
    ),
    ("unknown-augment-key", train, {"augment": {"flip": True}}, ["unknown key 'augment.flip'", "valid keys"]),
    ("unknown-train-key", train, {"train": {"lr": 0.1}}, ["unknown key 'train.lr'", "learning_rate"]),
    ("unknown-evaluate-key", evaluate, {"evaluate": {"topk": 3}}, ["unknown key 'evaluate.topk'", "top_k"]),
    ("unknown-transfer-key", train, {"transfer": {"backbone": "vgg16"}}, ["unknown key 'transfer.backbone'"]),
    (
        "unknown-extract-key",
        extract_features,
        {"model": "stacked", "extract_features": {"batch": 8}},
        ["unknown key 'extract_features.batch'"],
    ),
    ("epochs-not-int", train, {"train": {"epochs": "ten"}}, ["'train.epochs' must be a int, got 'ten'"]),
    ("epochs-float", train, {"train": {"epochs": 2.5}}, ["'train.epochs' must be a int"]),
    ("nesterov-not-bool", train, {"train": {"nesterov": "yes"}}, ["'train.nesterov' must be true or false"]),
    ("image-size-not-list", preprocess, {"preprocess": {"image_size": 64}}, ["preprocess.image_size"]),
    ("image-size-zero", preprocess, {"preprocess": {"image_size": [0, 16]}}, ["image_size must be [height, width]"]),
    ("image-size-three", preprocess, {"preprocess": {"image_size": [8, 8, 3]}}, ["image_size must be"]),
    (
        "color-mode",
        preprocess,
        {"preprocess": {"color_mode": "cmyk"}},
        ["'preprocess.color_mode' must be one of ['rgb', 'grayscale'], got 'cmyk'"],
    ),
    (
        "val-fraction-above-1",
        preprocess,
        {"preprocess": {"val_fraction": 1.5}},
        ["val_fraction must be between 0 and 1"],
    ),
    ("test-fraction-zero", preprocess, {"preprocess": {"test_fraction": 0}}, ["test_fraction must be between 0"]),
    (
        "fractions-sum",
        preprocess,
        {"preprocess": {"val_fraction": 0.6, "test_fraction": 0.5}},
        ["val_fraction + test_fraction must be below 1"],
    ),
    ("max-bad-fraction", preprocess, {"preprocess": {"max_bad_fraction": 2}}, ["max_bad_fraction must be between"]),
    (
        "split-seed-string",
        preprocess,
        {"preprocess": {"split_seed": "zero"}},
        ["'preprocess.split_seed' must be a int"],
    ),
    ("batch-size-zero", train, {"train": {"batch_size": 0}}, ["batch_size must be at least 1, got 0"]),
    ("learning-rate-negative", train, {"train": {"learning_rate": -0.1}}, ["learning_rate must be positive"]),
    ("reduce-lr-factor", train, {"train": {"reduce_lr_factor": 1.5}}, ["reduce_lr_factor must be in (0, 1)"]),
    ("batchnorm-momentum", train, {"train": {"batchnorm_momentum": 1.0}}, ["batchnorm_momentum must be in [0, 1)"]),
    (
        "optimizer",
        train,
        {"train": {"optimizer": "rmsprop"}},
        ["'train.optimizer' must be one of ['adam', 'adamw', 'sgd']"],
    ),
    (
        "weight-decay-with-adam",
        train,
        {"train": {"weight_decay": 0.05}},
        ["train: weight_decay needs optimizer adamw (decoupled) or sgd"],
    ),
    ("schedule", train, {"train": {"schedule": "linear"}}, ["'train.schedule' must be one of ['constant', 'cosine'"]),
    ("warmup-past-the-end", train, {"train": {"epochs": 5, "warmup_epochs": 8}}, ["warmup_epochs must be in [0, 6)"]),
    ("label-smoothing", train, {"train": {"label_smoothing": 1.0}}, ["label_smoothing must be in [0, 1)"]),
    ("ema-decay", train, {"train": {"ema_decay": 1.0}}, ["ema_decay must be in [0, 1)"]),
    ("step-factor", train, {"train": {"step_factor": 2.0}}, ["step_factor in (0, 1)"]),
    (
        "crop-scale",
        train,
        {"augment": {"crop_scale": [0.5, 1.5]}},
        ["'crop_scale' must be [low, high] with 0 < low <= high <= 1, got [0.5, 1.5]"],
    ),
    ("crop-ratio-one-number", train, {"augment": {"crop_ratio": 1.2}}, ["'augment.crop_ratio' must be a list"]),
    ("hue", train, {"augment": {"hue": 0.7}}, ["'hue' must be in [0, 0.5), got 0.7"]),
    ("mixup-negative", train, {"augment": {"mixup": -1}}, ["'mixup' must be in [0, inf), got -1"]),
    ("compute-dtype", train, {"train": {"compute_dtype": "float16"}}, ["'train.compute_dtype' must be one of"]),
    ("rotation-negative", train, {"augment": {"rotation": -5}}, ["'rotation' must be in [0, inf), got -5"]),
    ("zoom-above-1", evaluate, {"augment": {"zoom": 1.5}}, ["'zoom' must be in [0, 1)"]),
    ("fill-mode", train, {"augment": {"fill_mode": "mirror"}}, ["'augment.fill_mode' must be one of"]),
    ("evaluate-batch-size", evaluate, {"evaluate": {"batch_size": 0}}, ["batch_size must be at least 1"]),
    ("evaluate-top-k", evaluate, {"evaluate": {"top_k": 0}}, ["top_k must be at least 1"]),
    (
        "evaluate-negative-image",
        evaluate,
        {"evaluate": {"activation_image": -1}},
        ["activation_image must not be negative"],
    ),
    (
        "evaluate-layers-type",
        evaluate,
        {"evaluate": {"activation_layers": [1.5]}},
        ["'evaluate.activation_layers' has the wrong type"],
    ),
    (
        "transfer-backbone",
        train,
        {"model": "transfer", "transfer": {"backbones": ["alexnet"]}},
        ["unknown backbone 'alexnet'", "valid backbones: mobilenet_v2"],
    ),
    (
        "transfer-no-backbone",
        train,
        {"model": "transfer", "transfer": {"backbones": []}},
        ["backbones must name at least one backbone"],
    ),
    (
        "transfer-alpha",
        train,
        {"model": "transfer", "transfer": {"backbones": ["vgg16"], "alpha": 0.5}},
        ["alpha applies to mobilenet_v2 only"],
    ),
    (
        "transfer-cache-trainable",
        train,
        {"model": "transfer", "transfer": {"trainable_layers": 2}},
        ["cache_features needs frozen backbones"],
    ),
    ("transfer-dropout", train, {"model": "transfer", "transfer": {"dropout": 1.0}}, ["dropout must be in [0, 1)"]),
    ("transfer-pooling", train, {"model": "transfer", "transfer": {"pooling": "sum"}}, ["'transfer.pooling'"]),
    (
        "extract-batch-size",
        extract_features,
        {"model": "stacked", "extract_features": {"batch_size": 0}},
        ["batch_size must be at least 1"],
    ),
    (
        "pretrained-not-a-string",
        extract_features,
        {"model": "stacked", "pretrained": 1},
        ["'pretrained' must be a str"],
    ),
]


@pytest.mark.parametrize("stage, params, fragments", [as_param(case) for case in PARAMS_CASES])
def test_bad_params(project, capsys, stage, params, fragments):
    if params is not None:
        write_base_params(text=params) if isinstance(params, str) else write_base_params(params)
    expect_error(capsys, stage.main, *fragments)


@pytest.mark.parametrize("section, key", [("train", "epochs"), ("augment", "mixup"), ("", "numerics")])
def test_a_missing_param_names_the_line_to_add(project, capsys, section, key):
    """params.yaml holds every default: a key it lacks (an old file, a deleted line) is not
    silently defaulted, but named, with the line the reference (docs/params.md) gives."""
    params = plain_params(BASE_PARAMS)
    del (params[section] if section else params)[key]
    write_base_params(text=yaml.safe_dump(params))
    default = read_mapping(PROJECT_ROOT / PARAMS_FILE)
    value = (default[section] if section else default)[key]
    where = f" under '{section}:'" if section else ""
    dotted = f"{section}.{key}" if section else key
    expect_error(capsys, train.main, f"params.yaml: missing key '{dotted}': add the line '{key}: {value}'{where}")


# --- data sources: download --------------------------------------------------------------------


def link_loop():
    write_tree(Path("pets"), {"cat": 2, "dog": 2})
    os.symlink("..", "pets/cat/up")


LABELS_CSV_CASES = [
    # (id, labels.csv in dog-breed-identification.zip beside train/a1.jpg (None: none), fragment of the error)
    ("missing", None, "labels.csv not found: expected Kaggle's layout"),
    ("header", b"image,label\na1,pug\n", "labels.csv: header is 'image,label', expected 'id,breed'"),
    ("row", b"id,breed\na1,pug,extra\n", "labels.csv line 2: expected <id>,<breed>, got 'a1,pug,extra'"),
    ("path-id", b"id,breed\n../a1,pug\n", "labels.csv line 2: expected <id>,<breed>"),
    ("duplicate", b"id,breed\na1,pug\na1,pug\n", "labels.csv line 3: id a1 is listed twice"),
    ("id-without-image", b"id,breed\na1,pug\nb2,pug\n", "labels.csv: id b2 has no image train/b2.jpg"),
    ("not-utf8", b"id,breed\na1,\xff\xfe\n", "labels.csv: not a readable UTF-8 csv file"),
]

SOURCE_CASES = [
    # (id, data, setup, fragments)
    ("folder-missing", "folder:pets", lambda: None, ["folder pets does not exist"]),
    ("folder-is-a-file", "folder:pets", lambda: Path("pets").write_text("x"), ["pets is not a folder"]),
    (
        "folder-empty",
        "folder:pets",
        lambda: Path("pets").mkdir(),
        ["pets: no class folders", "expected pets/<class>/<image>"],
    ),
    (
        "folder-mixed-splits",
        "folder:pets",
        lambda: write_tree(Path("pets"), {"train/cat": 1, "cat": 1}),
        ["split folders mixed with other folders (cat): move them"],
    ),
    (
        "folder-two-val-folders",
        "folder:pets",
        lambda: write_tree(Path("pets"), {"train/cat": 1, "val/cat": 1, "validation/cat": 1}),
        ["pets: two folders name the same split"],
    ),
    (
        "folder-val-class-not-in-train",
        "folder:pets",
        lambda: write_tree(Path("pets"), {"train/cat": 1, "train/dog": 1, "val/fox": 1}),
        ["pets/val: classes ['fox'] are not in pets/train"],
    ),
    (
        "folder-no-train",
        "folder:pets",
        lambda: write_tree(Path("pets"), {"val/cat": 1, "test/cat": 1}),
        ["pets: has test, val but no train/ folder"],
    ),
    (
        "folder-split-without-classes",
        "folder:pets",
        lambda: write_tree(Path("pets"), {"train/cat": 1}) or Path("pets/test").mkdir(),
        ["pets/test: no class folders"],
    ),
    (
        "folder-dangling-link",
        "folder:pets",
        lambda: write_tree(Path("pets"), {"cat": 2, "dog": 2}) or os.symlink("/nonexistent/x.png", "pets/cat/x.png"),
        ["pets/cat/x.png: a link to /nonexistent/x.png, which does not exist", "remove the link"],
    ),
    (
        "folder-link-loop",
        "folder:pets",
        link_loop,
        ["pets/cat/up/cat leads back to", "(a link loops)", "remove that link"],
    ),
    (
        "zip-not-a-zip",
        "cats_vs_dogs",
        lambda: mirror_file("cats_and_dogs_filtered.zip").write_bytes(b"PK not really"),
        ["cats_and_dogs_filtered.zip: not a readable zip archive", "delete it and rerun"],
    ),
    ("zip-crc", "cats_vs_dogs", lambda: corrupt_zip_member(), ["fails its CRC check", "delete the archive"]),
    (
        "zip-slip",
        "cats_vs_dogs",
        lambda: write_zip("cats_and_dogs_filtered.zip", {**cats_zip_members(), "../evil.jpg": b"x"}),
        ["cats_and_dogs_filtered.zip: refusing unsafe member path '../evil.jpg'"],
    ),
    (
        "zip-absolute-member",
        "cats_vs_dogs",
        lambda: write_zip("cats_and_dogs_filtered.zip", {**cats_zip_members(), "/tmp/evil.jpg": b"x"}),
        ["refusing unsafe member path '/tmp/evil.jpg'"],
    ),
    (
        "zip-link-escaping",
        "cats_vs_dogs",
        lambda: write_zip(
            "cats_and_dogs_filtered.zip",
            cats_zip_members(),
            links={"cats_and_dogs_filtered/train/cats/x.jpg": "../../../../etc/passwd"},
        ),
        ["refusing member 'cats_and_dogs_filtered/train/cats/x.jpg', a link to '../../../../etc/passwd' outside"],
    ),
    (
        "zip-wrong-root",
        "cats_vs_dogs",
        lambda: write_zip("cats_and_dogs_filtered.zip", cats_zip_members("")),
        ["cats_and_dogs_filtered.zip: no folder cats_and_dogs_filtered/ inside", "get the official one"],
    ),
    (
        "zip-no-train",
        "cats_vs_dogs",
        lambda: write_zip(
            "cats_and_dogs_filtered.zip",
            {k.replace("/train/", "/training2/"): v for k, v in cats_zip_members().items()},
        ),
        ["cats_and_dogs_filtered.zip: cats_and_dogs_filtered: split folders mixed with other folders (training2)"],
    ),
    (
        "zip-offline",
        "cats_vs_dogs",
        lambda: None,
        [
            "cannot download https://storage.googleapis.com/",
            "put cats_and_dogs_filtered.zip in a folder",
            "set DATA_MIRROR",
        ],
    ),
    (
        "belgium-second-zip-offline",
        "belgiumtsc",
        lambda: write_zip("BelgiumTSC_Training.zip", {"Training/00000/0.ppm": image_bytes("PPM")}),
        ["cannot download https://btsd.ethz.ch/shareddata/BelgiumTSC/BelgiumTSC_Testing.zip", "set DATA_MIRROR"],
    ),
    ("signs-missing", "signs", lambda: None, ["train_signs.h5 not found", "set DATA_MIRROR"]),
    (
        "signs-not-h5",
        "signs",
        lambda: mirror_file("train_signs.h5").write_bytes(b"not hdf5"),
        ["train_signs.h5: not a SIGNS h5 file"],
    ),
    (
        "signs-wrong-keys",
        "signs",
        lambda: write_signs("train", keys={"train_set_x": "images"}),
        ["train_signs.h5: not a SIGNS h5 file"],
    ),
    (
        "signs-float-images",
        "signs",
        lambda: write_signs("train", x=np.zeros((6, 8, 8, 3), np.float32)),
        ["expected train_set_x uint8 [N,H,W,3] and N labels, got (6, 8, 8, 3) float32"],
    ),
    (
        "signs-label-count",
        "signs",
        lambda: write_signs("train", y=np.zeros(4, int)),
        ["expected train_set_x uint8 [N,H,W,3] and N labels"],
    ),
    (
        "signs-unknown-labels",
        "signs",
        lambda: write_signs("train", y=np.array([0, 1, 2, 7, 8, 9])),
        ["train_signs.h5: labels [7, 8, 9] are not in list_classes"],
    ),
    *[
        (f"labels-csv-{name}", "dog_breeds", dog_breeds_zip(labels_csv), [fragment])
        for name, labels_csv, fragment in LABELS_CSV_CASES
    ],
    (
        "dog-breeds-missing",
        "dog_breeds",
        lambda: None,
        ["dog-breed-identification.zip not found", "https://www.kaggle.com/c/dog-breed-identification/data"],
    ),
    ("tfds-not-prepared", "tfds:beans", lambda: None, ["tfds dataset 'beans'", "prepare it with `tfds build beans`"]),
    (
        "tfds-unknown",
        "tfds:no_such_dataset_xyz",
        lambda: None,
        ["tfds dataset 'no_such_dataset_xyz' not available", "TFDS_DATA_DIR"],
    ),
]


def corrupt_zip_member():
    members = {"cats_and_dogs_filtered/train/cats/0.jpg": b"a" * 1000}
    write_zip("cats_and_dogs_filtered.zip", members)
    data = bytearray(mirror_file("cats_and_dogs_filtered.zip").read_bytes())
    data[data.index(b"a" * 1000) + 10] = ord("b")  # stored uncompressed: one byte of content changes
    mirror_file("cats_and_dogs_filtered.zip").write_bytes(bytes(data))


@pytest.mark.parametrize("data, setup, fragments", [as_param(case) for case in SOURCE_CASES])
def test_bad_sources(project, capsys, data, setup, fragments):
    """In the pipeline's order: the source stage (run at every `dvc repro`) refuses the input with
    the error, or finds nothing wrong with the files themselves and download then refuses it."""
    if data.startswith("tfds:"):
        pytest.importorskip("tensorflow_datasets")
    setup()
    write_base_params({"data": data})
    try:
        source.main()
    except SystemExit:
        capsys.readouterr()
        expect_error(capsys, source.main, *fragments)
        assert not Path("data/source.json").exists()
    expect_error(capsys, download.main, *fragments)
    assert not Path("data/raw").exists()


@pytest.mark.parametrize("stage", [source, download])
def test_data_mirror_not_a_directory(project, capsys, monkeypatch, stage):
    monkeypatch.setenv("DATA_MIRROR", str(project / "params.yaml"))
    write_base_params({"data": "cats_vs_dogs"})
    expect_error(capsys, stage.main, f"DATA_MIRROR={project / 'params.yaml'} is not a directory")


def test_unreachable_url(project, capsys, monkeypatch):
    """The real urlopen against a closed port on this machine: no network is touched."""
    monkeypatch.setattr(urllib.request, "urlopen", REAL_URLOPEN)
    source = datasets.DATASETS["cats_vs_dogs"]
    file = datasets.dataclasses.replace(source.files[0], url="http://127.0.0.1:9/cats_and_dogs_filtered.zip")
    monkeypatch.setitem(datasets.DATASETS, "cats_vs_dogs", datasets.dataclasses.replace(source, files=(file,)))
    write_base_params({"data": "cats_vs_dogs"})
    expect_error(capsys, download.main, "cannot download http://127.0.0.1:9/", "set DATA_MIRROR")


# --- data sources: what preprocess finds in data/raw -------------------------------------------

RAW_CASES = [
    # (id, data, tree written before download, fragments)
    ("one-class", {"cat": 3}, ["dataset 'folder:pets' has only the class ['cat']; a classifier needs two"]),
    ("no-images", {"cat": 0, "dog": 0}, ["dataset 'folder:pets' has no images"]),
]


@pytest.mark.parametrize("tree, fragments", [as_param(case) for case in RAW_CASES])
def test_unusable_trees(project, capsys, tree, fragments):
    for folder, count in tree.items():
        write_images(Path("pets") / folder, count)
    write_base_params()
    download.main()
    expect_error(capsys, preprocess.main, *fragments)
    assert not Path("data/prepared").exists()


def test_signs_files_disagreeing_on_classes(project, capsys):
    write_signs("train")
    write_signs("test", classes=np.array([5, 6, 7]), y=np.array([5, 6, 7] * 2))
    write_base_params({"data": "signs"})
    download.main()
    expect_error(capsys, preprocess.main, "the SIGNS files disagree on list_classes")


# --- images ------------------------------------------------------------------------------------


def test_unreadable_images_beyond_max_bad_fraction(project, capsys):
    write_tree(Path("pets"), {"cat": 5, "dog": 5})
    for index in range(3):
        Path(f"pets/cat/{index}.png").write_text("not an image")
    write_base_params()
    download.main()
    expect_error(
        capsys,
        preprocess.main,
        "pets: 3 of 10 images unreadable, more than max_bad_fraction 0.01",
        "pets/cat/0.png (UnidentifiedImageError",
    )
    assert not Path("data/prepared").exists()


def test_truncated_images_beyond_max_bad_fraction(project, capsys):
    write_tree(Path("pets"), {"cat": 5, "dog": 5})
    for index in range(2):
        path = Path(f"pets/dog/{index}.png")
        path.write_bytes(path.read_bytes()[:60])
    write_base_params({"preprocess": {"max_bad_fraction": 0.1}})
    download.main()
    expect_error(
        capsys, preprocess.main, "2 of 10 images unreadable, more than max_bad_fraction 0.1", "pets/dog/0.png ("
    )


def test_a_huge_image_is_refused_before_decoding(project, capfd):
    """capfd: the decoding workers' own stderr too, where Pillow would warn."""
    write_tree(Path("pets"), {"cat": 4, "dog": 4})
    Path("pets/cat/huge.png").write_bytes(png_header_only(12000, 12000))
    write_base_params({"preprocess": {"max_bad_fraction": 0.2}})
    download.main()
    expect_warnings(
        capfd,
        preprocess.main,
        ["skipped 1 unreadable files", "report.json", "pets/cat/huge.png (ImageTooLarge: 12000×12000 pixels"],
        ["validation split", "fewer than 2 images"],
        ["test split", "fewer than 2 images"],
    )
    (skipped,) = report()["skipped"]
    assert skipped["file"] == "pets/cat/huge.png" and "shrink the image" in skipped["reason"]


@pytest.mark.slow
def test_a_real_huge_png_is_refused_undecoded_and_without_pillows_warning(tmp_path, capfd, monkeypatch):
    from flaxvision.data.images import ImageTooLarge, load_image

    huge_png(tmp_path / "huge.png")

    def decode(*args):
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)
    with pytest.raises(ImageTooLarge, match="12000×12000 pixels, more than the 50,000,000"):
        load_image(tmp_path / "huge.png", (16, 16), "rgb")
    assert capfd.readouterr().err == ""  # Pillow's DecompressionBombWarning stays quiet


@pytest.mark.parametrize("mode", ["I;16", "P", "LA", "L"])
def test_unusual_image_modes_are_prepared(project, capsys, mode):
    write_tree(Path("pets"), {"cat": 5, "dog": 5})
    for path in Path("pets/cat").iterdir():
        img = Image.open(path)
        img = Image.fromarray(np.asarray(img.convert("L"), np.uint16) * 257) if mode == "I;16" else img.convert(mode)
        img.save(path)
    write_base_params()
    download.main()
    preprocess.main()
    assert "error" not in capsys.readouterr().err
    assert report()["skipped"] == []


# --- degenerate data (point 7) -----------------------------------------------------------------


def test_two_images_per_class_warn_naming_the_split_classes_and_param(project, capsys):
    write_tree(Path("pets"), {"cat": 2, "dog": 2, "fox": 2})
    write_base_params()
    download.main()
    lines = expect_warnings(
        capsys,
        preprocess.main,
        [
            "train split (pets minus test and validation)",
            "1 of 3 classes have no image",
            "(fox 0)",
            "add images to pets or lower preprocess.val_fraction and preprocess.test_fraction",
        ],
        ["validation split", "3 of 3 classes have fewer than 2 images", "raise preprocess.val_fraction (now 0.2)"],
        [
            "test split",
            "3 of 3 classes have fewer than 2 images",
            "(cat 1, dog 1, fox 1)",
            "raise preprocess.test_fraction (now 0.2) or add images to pets",
        ],
    )
    assert report()["warnings"] == [line.removeprefix("warning: ") for line in lines]


def test_a_class_without_training_images_is_a_warning(project, capsys):
    write_tree(
        Path("pets"),
        {
            "train/cat": 10,
            "train/dog": 10,
            "train/fox": 0,
            "val/cat": 2,
            "val/dog": 2,
            "val/fox": 2,
            "test/cat": 2,
            "test/dog": 2,
            "test/fox": 2,
        },
    )
    write_base_params()
    download.main()
    expect_warnings(
        capsys,
        preprocess.main,
        [
            "train split (pets/train)",
            "1 of 3 classes have no image, so the model cannot learn them",
            "(fox 0)",
            "add images to pets/train",
        ],
    )


def test_a_predefined_split_short_of_a_class_names_its_folder(project, capsys):
    write_tree(Path("pets"), {"train/cat": 10, "train/dog": 10, "val/cat": 3, "val/dog": 1})
    write_base_params()
    download.main()
    expect_warnings(
        capsys,
        preprocess.main,
        [
            "validation split (pets/val minus test)",
            "1 of 2 classes",
            "(dog 1)",
            "add images to pets/val or lower preprocess.test_fraction",
        ],
        ["test split (20% of pets/val", "dog 0)", "raise preprocess.test_fraction (now 0.2) or add images to pets/val"],
    )


def test_many_thin_classes_are_one_line_per_split(project, capsys):
    write_tree(Path("pets"), {f"class{index:02d}": 3 for index in range(12)})
    write_base_params()
    download.main()
    lines = expect_warnings(
        capsys,
        preprocess.main,
        ["validation split", "12 of 12 classes", "and 7 more"],
        ["test split", "12 of 12 classes", "and 7 more"],
    )
    assert all(len(line) < 400 for line in lines)


@pytest.mark.slow
def test_a_batch_larger_than_the_training_split_is_clamped_and_said(project, capsys):
    write_prepared(counts=(6, 3, 3))
    write_base_params({"train": {"batch_size": 32}})
    extract_features.main()
    expect_warnings(
        capsys,
        train.main,
        ["train.batch_size 32 is more than the 6 training images", "set train.batch_size to 6 or less"],
    )
    assert Path("artifacts/model/model.json").is_file()


@pytest.mark.slow
def test_a_diverged_run_is_an_error_that_leaves_no_model_or_metrics(project, capsys):
    """The issue's `-S train.optimizer=sgd -S train.learning_rate=1e6`, which exited 0 with a model."""
    write_prepared()
    write_base_params({"train": {"optimizer": "sgd", "learning_rate": 1e6, "batch_size": 2}})
    extract_features.main()
    capsys.readouterr()
    expect_error(capsys, train.main, "training diverged in epoch 1", "lower train.learning_rate (now 1e+06)")
    assert not Path("artifacts/model").exists() and not Path("results/train").exists()


def test_a_symlinked_class_folder_is_followed(project, capsys, tmp_path):
    write_tree(Path("pets"), {"cat": 5, "dog": 5})
    write_images(tmp_path / "elsewhere" / "foxes", 5, label=2)
    os.symlink(tmp_path / "elsewhere" / "foxes", "pets/fox")
    os.symlink(tmp_path / "elsewhere", "pets/dog/more")  # a linked folder inside a class folder
    write_base_params()
    download.main()
    preprocess.main()
    splits = report()["splits"].values()
    counts = {name: sum(split["per_class"][name] for split in splits) for name in ("cat", "dog", "fox")}
    assert counts == {"cat": 5, "dog": 10, "fox": 5}
    assert not Path("data/raw/pets/fox").is_symlink()  # the snapshot holds the files, not the link


# --- a stage run without the one before it, or on inconsistent outputs --------------------------


def write_raw_of_folder():
    write_tree(Path("pets"), {"cat": 3, "dog": 3})
    write_base_params()
    download.main()


def features_json(text: str):
    """A case's setup: params, prepared data, and a data/features whose features.json holds ``text``."""

    def setup():
        write_base_params()
        write_prepared()
        Path("data/features").mkdir()
        Path("data/features/features.json").write_text(text)
        write_checksums(Path("data/features"))  # as written: the case is its content, not damage

    return setup


ORDER_CASES = [
    # (id, setup, stage, fragments)
    (
        "preprocess-before-download",
        write_base_params,
        preprocess,
        ["data/raw/PROVENANCE.json not found", "run `dvc repro download`"],
    ),
    (
        "preprocess-other-dataset",
        lambda: write_raw_of_folder() or write_base_params({"data": "signs"}),
        preprocess,
        ["data/raw holds 'folder:pets', params.yaml data is 'signs'", "run `dvc repro download`"],
    ),
    (
        "preprocess-raw-folder-gone",
        lambda: write_raw_of_folder() or os.rename("data/raw/pets", "data/raw/x"),
        preprocess,
        ["data/raw/pets not found", "run `dvc repro download`"],
    ),
    (
        "preprocess-raw-tfds-manifest-gone",
        lambda: write_base_params({"data": "tfds:beans"})
        or Path("data/raw").mkdir(parents=True)
        or Path("data/raw/PROVENANCE.json").write_text('{"data": "tfds:beans"}'),
        preprocess,
        ["data/raw/tfds.json not found or unreadable", "dvc repro download"],
    ),
    (
        "extract-features-before-preprocess",
        lambda: write_base_params({"model": "stacked"}),
        extract_features,
        ["data/prepared is missing or incomplete", "run `dvc repro preprocess`"],
    ),
    (
        "train-before-preprocess",
        write_base_params,
        train,
        ["data/prepared is missing or incomplete", "run `dvc repro preprocess`"],
    ),
    (
        "train-before-extract-features",
        lambda: write_base_params() or write_prepared(),
        train,
        ["no data/features/features.json", "run `dvc repro extract-features` first"],
    ),
    (
        "train-on-broken-features",
        features_json('{"features": ["train"]}'),
        train,
        ["data/features is incomplete or unreadable", "run `dvc repro --force extract-features`"],
    ),
    (
        "train-on-unreadable-features",
        features_json("{"),
        train,
        ["data/features is incomplete or unreadable (JSONDecodeError)"],
    ),
    (
        "train-prepared-split-missing",
        lambda: write_base_params() or write_prepared(missing=("test",)),
        train,
        ["data/prepared is missing or incomplete (FileNotFoundError)", "run `dvc repro preprocess`"],
    ),
    (
        "train-prepared-shape-mismatch",
        lambda: write_base_params() or write_prepared(image_size=[64, 64]),
        train,
        ["data/prepared/train_*.npy do not match dataset.json", "run `dvc repro preprocess`"],
    ),
    ("evaluate-before-preprocess", write_base_params, evaluate, ["data/prepared is missing or incomplete"]),
    (
        "evaluate-before-train",
        lambda: write_base_params() or write_prepared(),
        evaluate,
        ["no trained model in artifacts/model", "run `dvc repro train` first"],
    ),
    (
        "evaluate-unreadable-model",
        lambda: write_base_params()
        or write_prepared()
        or Path("artifacts/model").mkdir(parents=True)
        or Path("artifacts/model/model.json").write_text("{"),
        evaluate,
        ["artifacts/model holds an unreadable model", "run `dvc repro train`"],
    ),
    (
        "evaluate-activation-image",
        lambda: write_base_params({"evaluate": {"activation_image": 3}}) or write_prepared(),
        evaluate,
        ["evaluate.activation_image is 3, but the test split has 3 images: use 0 to 2"],
    ),
    (
        "evaluate-empty-test-split",
        lambda: write_base_params() or write_prepared(counts=(6, 3, 0)),
        evaluate,
        ["the test split is empty: raise preprocess.test_fraction"],
    ),
    (
        "train-empty-validation-split",
        lambda: write_base_params() or write_prepared(counts=(6, 0, 3)) or extract_features.main(),
        train,
        ["the validation split is empty: raise preprocess.val_fraction"],
    ),
    (
        "train-images-too-small",
        lambda: write_base_params() or write_prepared(size=16) or extract_features.main(),
        train,
        ["model 'simple_cnn' cannot take these images", "raise preprocess.image_size"],
    ),
]


@pytest.mark.parametrize("setup, stage, fragments", [as_param(case) for case in ORDER_CASES])
def test_stages_out_of_order(project, capsys, setup, stage, fragments):
    setup()
    capsys.readouterr()
    expect_error(capsys, stage.main, *fragments)


# --- predict -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """An untrained simple_cnn for 32×32 RGB images (its smallest), saved as the train stage saves it."""
    return save_model(tmp_path_factory.mktemp("model") / "model")


def edited_model(model_dir: Path, **changes) -> Path:
    """A copy of the model folder whose model.json has ``changes`` (None: key removed)."""
    folder = Path("edited-model")
    folder.mkdir()
    (folder / "weights.msgpack").write_bytes((model_dir / "weights.msgpack").read_bytes())
    metadata = json.loads((model_dir / "model.json").read_text()) | changes
    (folder / "model.json").write_text(json.dumps({k: v for k, v in metadata.items() if v is not None}))
    write_checksums(folder)  # as if written so: the case is its content, not damage
    return folder


PREDICT_CASES = [
    # (id, arguments (MODEL: the model folder, EDITED: an edited copy), model.json changes, exit status, fragments)
    (
        "model-folder-missing",
        ["x.png", "--model", "nowhere"],
        {},
        2,
        ["no trained model in nowhere", "run `dvc repro train` first"],
    ),
    (
        "weights-other-classes",
        ["x.png", "--model", "EDITED"],
        {"classes": ["a", "b"]},
        2,
        ["edited-model/weights.msgpack does not fit simple_cnn for 32×32×3 inputs and 2 classes"],
    ),
    (
        "weights-other-shape",
        ["x.png", "--model", "EDITED"],
        {"input_shape": [64, 64, 3]},
        2,
        ["does not fit simple_cnn for 64×64×3 inputs"],
    ),
    (
        "model-json-unknown-model",
        ["x.png", "--model", "EDITED"],
        {"model": "alexnet"},
        2,
        ["edited-model/model.json: unknown model 'alexnet'"],
    ),
    (
        "model-json-lacks-color-mode",
        ["x.png", "--model", "EDITED"],
        {"color_mode": None},
        2,
        ["edited-model/model.json lacks color_mode", "retrain with `dvc repro train`"],
    ),
    (
        "top-k-zero",
        ["x.png", "--model", "MODEL", "--top-k", "0"],
        {},
        2,
        ["--top-k and --batch-size must be at least 1"],
    ),
    (
        "top-k-not-a-number",
        ["x.png", "--top-k", "three"],
        {},
        2,
        ["argument --top-k: invalid int value: 'three'", "see flaxvision predict --help"],
    ),
    ("batch-size-zero", ["x.png", "--batch-size", "0"], {}, 2, ["--top-k and --batch-size must be at least 1"]),
    ("unknown-option", ["x.png", "--topk", "3"], {}, 2, ["unrecognized arguments: --topk 3"]),
    ("no-inputs", [], {}, 2, ["the following arguments are required: IMAGE_OR_FOLDER"]),
    (
        "output-suffix",
        ["x.png", "--model", "MODEL", "--output", "out.txt"],
        {},
        2,
        ["--output out.txt: name a .csv or .json file (or give --format)"],
    ),
    (
        "output-folder-missing",
        ["x.png", "--model", "MODEL", "--output", "no/such/out.csv"],
        {},
        2,
        ["--output no/such/out.csv: not a file in an existing folder: create the folder or name another file"],
    ),
    ("image-missing", ["missing.png", "--model", "MODEL"], {}, 1, ["error: missing.png: no such file"]),
    (
        "image-huge",
        ["huge.png", "--model", "MODEL"],
        {},
        1,
        ["huge.png: not a readable image (ImageTooLarge: 12000×12000 pixels", "shrink the image"],
    ),
    ("folder-without-images", ["empty", "--model", "MODEL"], {}, 1, ["empty: a folder without image files"]),
]


@pytest.mark.parametrize("arguments, changes, status, fragments", [as_param(case) for case in PREDICT_CASES])
def test_bad_predict_inputs(project, capsys, model_dir, arguments, changes, status, fragments):
    Path("huge.png").write_bytes(png_header_only(12000, 12000))
    Path("empty").mkdir()
    edited = edited_model(model_dir, **changes) if changes else None
    arguments = [{"MODEL": str(model_dir), "EDITED": str(edited)}.get(a, a) for a in arguments]
    expect_error(capsys, lambda: sys.exit(predict_main(arguments)), *fragments, code=status)


# --- the real command line ---------------------------------------------------------------------


@pytest.mark.slow  # a process of its own
@pytest.mark.parametrize(
    "command, status, fragment",
    [
        pytest.param([sys.executable, "-m", "stages.train"], 1, "unknown key 'train.lr'", id="stage"),
        pytest.param(
            [str(Path(sys.executable).parent / "flaxvision"), "predict", "x.png", "--model", "nowhere"],
            2,
            "no trained model in nowhere",
            id="predict",
        ),
    ],
)
def test_the_command_line_prints_one_line_and_no_traceback(project, command, status, fragment):
    write_base_params({"train": {"lr": 0.1}})
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == status, result.stderr
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, result.stderr
    assert fragment in result.stderr and result.stdout == ""


# --- files the pipeline wrote, damaged afterwards (issue 27) -------------------------------------


def flip_bits(path: Path, at: float = 0.5):
    """Invert one byte of ``path``, ``at`` of the way through it: a disk's or a copy's damage."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * at)] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def with_nan_weight(folder: Path):
    """The model folder's first weight set to NaN, its digests rewritten: a finite-looking file
    that a diverged (or foreign) run could have written."""
    weights = traverse_util.flatten_dict(serialization.msgpack_restore((folder / "weights.msgpack").read_bytes()))
    first = sorted(weights)[0]
    weights[first] = np.full_like(weights[first], np.nan)
    (folder / "weights.msgpack").write_bytes(serialization.msgpack_serialize(traverse_util.unflatten_dict(weights)))
    write_checksums(folder)


def prepared_and_model():
    """A case's setup: params, data/prepared, data/features and a saved model to evaluate."""
    write_base_params()
    write_prepared()
    extract_features.main()
    save_model(Path("artifacts/model"))


SHARD = Path("data/prepared/train_images-00000.npy")
WEIGHTS = Path("artifacts/model/weights.msgpack")
DAMAGE_CASES = [
    # (id, setup, damage, stage, fragments)
    (
        "prepared-shard-bits",
        prepared_and_model,
        lambda: flip_bits(SHARD),
        train,
        [f"{SHARD} is damaged (its content differs from SHA256SUMS)", "run `dvc repro --force preprocess`"],
    ),
    ("prepared-shard-truncated", prepared_and_model, lambda: truncate(SHARD), evaluate, [f"{SHARD} is damaged"]),
    (
        "prepared-labels-deleted",
        prepared_and_model,
        lambda: os.remove("data/prepared/test_labels.npy"),
        evaluate,
        ["data/prepared/test_labels.npy is damaged (No such file or directory)"],
    ),
    (
        "prepared-digests-deleted",
        prepared_and_model,
        lambda: os.remove("data/prepared/SHA256SUMS"),
        train,
        ["data/prepared/SHA256SUMS is missing or unreadable, so data/prepared cannot be trusted"],
    ),
    (
        "features-bits",
        prepared_and_model,
        lambda: flip_bits(Path("data/features/features.json"), at=0.1),
        train,
        ["data/features/features.json is damaged", "run `dvc repro --force extract-features`"],
    ),
    (
        "model-weights-bits",
        prepared_and_model,
        lambda: flip_bits(WEIGHTS),
        evaluate,
        [f"{WEIGHTS} is damaged (its content differs from SHA256SUMS)", "retrain it with `dvc repro -f train`"],
    ),
    (
        "model-weights-nan",
        prepared_and_model,
        lambda: with_nan_weight(WEIGHTS.parent),
        evaluate,
        [f"{WEIGHTS} holds NaN or infinite values in layers.0.bias", "retrain it"],
    ),
]


@pytest.mark.parametrize("setup, damage, stage, fragments", [as_param(case) for case in DAMAGE_CASES])
def test_a_damaged_output_is_one_line_naming_it(project, capsys, setup, damage, stage, fragments):
    setup()
    damage()
    capsys.readouterr()
    expect_error(capsys, stage.main, *fragments)


@pytest.mark.parametrize("damage", [flip_bits, with_nan_weight], ids=["bits", "nan"])
@pytest.mark.parametrize("command", ["predict", "export"])
def test_a_damaged_model_is_neither_served_nor_exported(project, capsys, damage, command):
    model = save_model(Path("model"))
    damage(model / "weights.msgpack" if damage is flip_bits else model)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save("x.png")
    arguments = ["x.png", "--model", "model"] if command == "predict" else ["model", "--output", "exported"]
    main = predict_main if command == "predict" else export_main
    expect_error(capsys, lambda: sys.exit(main(arguments)), "model/weights.msgpack", "retrain it", code=2)


# --- checkpoints damaged between runs: fall back to the one before, or say so ----------------------


def train_with_checkpoints() -> list[Path]:
    """Train 2 epochs of 3 steps; the checkpoint folders left, newest first (after epochs 2 and 1)."""
    write_base_params({"train": {"epochs": 2, "batch_size": 2}})
    write_prepared()
    extract_features.main()
    train.main()
    return sorted((p for p in Path("checkpoints").iterdir() if p.name.isdigit()), key=lambda p: -int(p.name))


def largest_file(folder: Path) -> Path:
    return max((p for p in folder.rglob("*") if p.is_file() and p.name != "SHA256SUMS"), key=lambda p: p.stat().st_size)


def resealed(change):
    """Damage that ``change(folder)`` makes, with the folder's digests rewritten to match it."""
    return lambda folder: change(folder) or write_checksums(folder)


def best_weights_shifted(folder: Path):
    """The checkpoint's best weights finite but changed, saved again by Orbax: a checkpoint whose
    files are sound but whose weights no longer give the metrics it records."""
    manager = ocp.CheckpointManager(folder.parent.absolute())
    step = int(folder.name)
    best = manager.restore(step, args=ocp.args.Composite(best=ocp.args.StandardRestore()))["best"]
    shifted = jax.tree.map(lambda x: x + 0.5 if jnp.issubdtype(x.dtype, jnp.floating) else x, best)
    progress = manager.restore(step, args=ocp.args.Composite(progress=ocp.args.JsonRestore()))["progress"]
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))["state"]
    manager.delete(step)
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            best=ocp.args.StandardSave(shifted),
            progress=ocp.args.JsonSave(progress),
        ),
    )
    manager.close()


NEWEST_CHECKPOINT_DAMAGE = {
    "bits": lambda folder: flip_bits(largest_file(folder)),
    "truncated": lambda folder: truncate(largest_file(folder)),
    "metadata-garbage": resealed(lambda folder: (folder / "state" / "_METADATA").write_text("garbage")),
    "metadata-deleted": resealed(lambda folder: os.remove(folder / "state" / "_METADATA")),
    "best-weights-changed": resealed(best_weights_shifted),
}


@pytest.mark.slow
@pytest.mark.parametrize("damage", NEWEST_CHECKPOINT_DAMAGE.values(), ids=NEWEST_CHECKPOINT_DAMAGE.keys())
def test_a_damaged_checkpoint_falls_back_to_the_one_before_and_gives_the_same_result(project, capsys, damage):
    newest, _ = train_with_checkpoints()
    outputs = ("results/train/metrics.json", "artifacts/model/SHA256SUMS")
    uninterrupted = [Path(path).read_bytes() for path in outputs]
    damage(newest)
    capsys.readouterr()
    train.main()
    err = capsys.readouterr().err
    warnings = [line for line in lines(err) if line.startswith("warning: ")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {newest}"), err
    assert warnings[0].endswith(f"; deleted {newest}"), err
    assert "Traceback" not in err and "error" not in err.replace(warnings[0], ""), err
    assert [Path(path).read_bytes() for path in outputs] == uninterrupted, "the resumed run's model or metrics differ"


@pytest.mark.slow
def test_with_no_intact_checkpoint_left_the_run_stops_and_the_next_starts_over(project, capsys):
    newest, before = train_with_checkpoints()
    uninterrupted = Path("results/train/metrics.json").read_bytes()
    for folder in (newest, before):
        flip_bits(largest_file(folder))
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        train.main()
    err = capsys.readouterr().err
    errors = [line for line in lines(err) if line.startswith("error: ")]
    assert exit_info.value.code == 1 and len(errors) == 1 and "Traceback" not in err, err
    assert (
        errors[0].startswith(f"error: {newest}/") and " is damaged (its content differs from SHA256SUMS)" in errors[0]
    )
    assert errors[0].endswith("no intact checkpoint is left (deleted): rerun to train from the start")
    assert not newest.exists() and not before.exists()
    train.main()
    assert Path("results/train/metrics.json").read_bytes() == uninterrupted


# --- a full disk (issue 27) ----------------------------------------------------------------------


@pytest.fixture
def small_disk(project, tmp_path):
    """The project moved onto a tmpfs of 8 MiB (mounted as root), as cwd; skipped where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if mount.returncode:
        pytest.skip(f"cannot mount a tmpfs to fill ({mount.stderr.strip() or 'not root'})")
    for code in ("flaxvision", "models", "stages"):
        os.symlink(PROJECT_ROOT / code, disk / code)
    os.chdir(disk)
    yield disk
    os.chdir(project)
    subprocess.run(["umount", "-l", str(disk)], check=True)


def leave_free(kib: int):
    """Fill the disk of the cwd up to ``kib`` KiB (a file outside the project's outputs)."""
    free = shutil.disk_usage(".").free - kib * 1024
    with open(".filler", "wb") as filler:
        os.posix_fallocate(filler.fileno(), 0, free)


def test_a_full_disk_in_preprocess_is_one_line_and_leaves_nothing(small_disk, capsys):
    write_tree(Path("pets"), {"cat": 20, "dog": 20})
    write_base_params({"preprocess": {"image_size": [300, 300]}})  # 10.8 MB of pixels: more than the disk
    download.main()
    capsys.readouterr()
    expect_error(capsys, preprocess.main, "no space left on the disk of data/prepared", "free space there")


@pytest.mark.slow
@pytest.mark.parametrize(
    "stage, free_kib, fragment",
    [
        (train, 120, "no space left on the disk of checkpoints (a checkpoint needs"),
        (evaluate, 0, "no space left on the disk of results/evaluate/per_class.json"),
    ],
    ids=["train", "evaluate"],
)
def test_a_full_disk_in_a_stage_is_one_line_and_leaves_nothing(small_disk, capsys, stage, free_kib, fragment):
    prepared_and_model()
    leave_free(free_kib)
    capsys.readouterr()
    expect_error(capsys, stage.main, fragment, "free space there")


# --- memory, as far as a process can see it run out (issue 27) ------------------------------------


@pytest.mark.parametrize(
    "allocate, fragment",
    [
        (lambda: bytearray(1 << 50), "error: out of memory: lower train.batch_size"),
        (
            lambda: jnp.ones((1 << 42,), jnp.float32).block_until_ready(),
            "error: out of device memory (RESOURCE_EXHAUSTED: Out of memory allocating 17592186044416 bytes.)",
        ),
    ],
    ids=["host", "device"],
)
def test_running_out_of_memory_in_a_stage_is_one_line(project, capsys, allocate, fragment):
    """A petabyte on the host (Python's MemoryError) and 16 TiB on the device (XLA's RESOURCE_EXHAUSTED)."""
    write_base_params()
    expect_error(capsys, stage_main(lambda params: allocate()), fragment)


@pytest.mark.slow  # a process of its own
@pytest.mark.parametrize(
    "signum, status, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]
)
def test_a_command_signalled_as_it_starts_ends_in_one_line(project, signum, status, word):
    """`flaxvision predict` while it imports (JAX's imports take seconds): one line, the signal's status."""
    save_model(Path("model"))
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save("x.png")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [str(Path(sys.executable).parent / "flaxvision"), "predict", "x.png", "--model", "model"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # Once it imports numpy (on its way to JAX), after flaxvision's first lines set its handlers;
    # not after a fixed delay: on a busy machine that could fall in the interpreter's own start-up,
    # which no Python program can guard.
    deadline = time.monotonic() + 60
    while "_multiarray_umath" not in Path(f"/proc/{process.pid}/maps").read_text():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.001)
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == status and err == f"{word}: nothing was written\n" and out == "", err
