"""Each dataset of params `data`, in its real layout, through the download and preprocess stages."""

import json
import os
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest

from flaxvision.data import load_prepared, read_dataset
from flaxvision.data.datasets import TfdsSource, get_source
from flaxvision.errors import UserError
from stages import download as download_stage
from stages import preprocess as preprocess_stage
from tests.helpers import (
    expect_user_error,
    image_bytes,
    mirror_file,
    prepare,
    report,
    shared_file,
    write_params,
    write_tree,
    write_zip,
)

pytestmark = pytest.mark.usefixtures("offline_project")  # each test in a project folder, offline


def raw_files() -> list[dict]:
    """What data/raw/PROVENANCE.json records of each file the download stage took."""
    return json.loads(Path("data/raw/PROVENANCE.json").read_text())["files"]


def splits(info: dict) -> dict[str, tuple[int, str]]:
    """Each split of dataset.json ``info``: its size and where it came from."""
    assert info["splits"].keys() == info["split_sources"].keys()
    return {name: (count, info["split_sources"][name]) for name, count in info["splits"].items()}


# --- cats_vs_dogs ----------------------------------------------------------------------------


def test_cats_vs_dogs_zip_from_the_mirror(capsys):
    with zipfile.ZipFile(mirror_file("cats_and_dogs_filtered.zip"), "w") as zf:
        zf.writestr("cats_and_dogs_filtered/vectorize.py", "print('not data')\n")
        for split, count in (("train", 10), ("validation", 10)):
            for animal, colour in (("cats", "orange"), ("dogs", "brown")):
                for i in range(count):
                    name = f"cats_and_dogs_filtered/{split}/{animal}/{animal[:-1]}.{i}.jpg"
                    zf.writestr(name, image_bytes("JPEG", colour))

    info = prepare("cats_vs_dogs")

    assert info["classes"] == ["cats", "dogs"]
    assert splits(info) == {
        "train": (20, "cats_and_dogs_filtered/train"),
        "validation": (16, "cats_and_dogs_filtered/validation minus test"),
        "test": (4, "20% of cats_and_dogs_filtered/validation, stratified, seed 0"),
    }
    (record,) = raw_files()
    assert record["source"] == "offline mirror"
    assert record["verification"].startswith("unverified (no published checksum): size differs from the official")
    assert "cats_and_dogs_filtered.zip: unverified" in capsys.readouterr().err
    images, labels = load_prepared().splits["test"]
    assert images.shape == (4, 8, 8, 3) and sorted(labels.tolist()) == [0, 0, 1, 1]


def test_real_cats_vs_dogs_zip_is_a_known_copy(monkeypatch):
    monkeypatch.setenv("DATA_MIRROR", str(shared_file("cats_and_dogs_filtered.zip").parent))
    write_params("cats_vs_dogs")
    download_stage.main()

    (record,) = raw_files()
    assert record["verification"] == "sha256 matches a known copy (re-zip in shared/datasets)"
    dataset = read_dataset("cats_vs_dogs")
    assert dataset.classes == ["cats", "dogs"]
    assert {name: len(split) for name, split in dataset.splits.items()} == {"train": 2000, "validation": 1000}


# --- belgiumtsc ------------------------------------------------------------------------------


def write_belgium_zip(part: str, classes: dict[str, int]) -> None:
    """BelgiumTSC_<part>.zip: <part>/<class>/*.ppm with GT-<class>.csv, as the official zips."""
    with zipfile.ZipFile(mirror_file(f"BelgiumTSC_{part}.zip"), "w") as zf:
        for name, count in classes.items():
            rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
            for i in range(count):
                filename = f"{i:05d}_00000.ppm"
                zf.writestr(f"{part}/{name}/{filename}", image_bytes("PPM", (int(name) * 40, 0, 0)))
                rows.append(f"{filename};30;20;2;2;28;18;{int(name)}")
            zf.writestr(f"{part}/{name}/GT-{name}.csv", "\n".join(rows) + "\n")


def test_belgiumtsc_zips_with_an_empty_class_folder():
    # 00002 has test images only; 00003 has none anywhere (csv files only) and is left out.
    write_belgium_zip("Training", {"00000": 10, "00001": 10, "00002": 0, "00003": 0})
    write_belgium_zip("Testing", {"00000": 3, "00001": 3, "00002": 2, "00003": 0})

    info = prepare("belgiumtsc", color_mode="grayscale")

    assert info["classes"] == ["00000", "00001", "00002"]
    assert info["splits"] == {"train": 16, "validation": 4, "test": 8}
    assert info["split_sources"]["test"] == "Testing"
    assert [r["verification"] for r in raw_files()] == ["unverified (no published checksum): zip CRCs ok"] * 2
    summary = report()
    assert summary["empty_classes"] == ["00003"]
    assert summary["splits"]["test"]["per_class"] == {"00000": 3, "00001": 3, "00002": 2}
    ignored = {entry["file"] for entry in summary["ignored"]}
    assert {"Training/00000/GT-00000.csv", "Testing/00003/GT-00003.csv"} <= ignored
    # a class has the same label in train and test: class 00001 is red 40, luma 0.299 * 40 = 12
    for images, labels in load_prepared().splits.values():
        assert np.all(np.abs(images[labels == 1].astype(int) - 12) <= 1) and np.all(images[labels == 0] == 0)


def test_belgiumtsc_offline_without_mirror_copy(capsys):
    write_params("belgiumtsc")
    expect_user_error(
        capsys,
        download_stage.main,
        "https://btsd.ethz.ch/shareddata/BelgiumTSC/BelgiumTSC_Training.zip",
        "put BelgiumTSC_Training.zip in a folder and set DATA_MIRROR",
    )
    assert not os.path.exists("data/raw")


# --- signs -----------------------------------------------------------------------------------


def write_signs(split: str, count: int) -> None:
    rng = np.random.default_rng(0)
    with h5py.File(mirror_file(f"{split}_signs.h5"), "w") as h5:
        h5[f"{split}_set_x"] = rng.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)
        h5[f"{split}_set_y"] = np.arange(count) % 6
        h5["list_classes"] = np.arange(6)


def test_signs_h5_files():
    write_signs("train", 60)
    write_signs("test", 12)

    info = prepare("signs", image_size=[64, 64])

    assert info["classes"] == ["0", "1", "2", "3", "4", "5"]
    assert info["splits"] == {"train": 48, "validation": 12, "test": 12}
    images, labels = load_prepared().splits["test"]
    with h5py.File(mirror_file("test_signs.h5")) as h5:
        assert np.array_equal(images, h5["test_set_x"][()]), "64x64 RGB passes through unchanged"
        assert np.array_equal(labels, h5["test_set_y"][()])


def test_signs_with_wrong_keys_is_an_error(capsys):
    write_signs("train", 6)
    with h5py.File(mirror_file("test_signs.h5"), "w") as h5:
        h5["images"] = np.zeros((2, 64, 64, 3), np.uint8)
    write_params("signs")
    expect_user_error(capsys, download_stage.main, "test_signs.h5: not a SIGNS h5 file")


def test_signs_missing_says_where_to_put_it(capsys):
    write_params("signs")
    expect_user_error(capsys, download_stage.main, "train_signs.h5 and test_signs.h5", "set DATA_MIRROR")


def test_real_signs_files(monkeypatch):
    shared_file("test_signs.h5")
    monkeypatch.setenv("DATA_MIRROR", str(shared_file("train_signs.h5").parent))

    info = prepare("signs", image_size=[64, 64])

    assert info["splits"] == {"train": 864, "validation": 216, "test": 120}
    assert [r["verification"] for r in raw_files()] == ["sha256 matches a known copy (shared/datasets copy)"] * 2


# --- dog_breeds ------------------------------------------------------------------------------

BREED_COLOURS = {"whippet": (220, 40, 40), "beagle": (40, 220, 40), "collie": (40, 40, 220)}


def breed_rows(per_breed: int) -> list[tuple[str, str]]:
    """(id, breed) rows in labels.csv order: breeds interleaved, ids hex-like as Kaggle's."""
    return [(f"{i:03x}{breed[0]}", breed) for i in range(per_breed) for breed in BREED_COLOURS]


def write_dog_breeds_zip(rows, header="id,breed", without_image=(), labels=True) -> None:
    """dog-breed-identification.zip as Kaggle serves it: labels.csv, train/, test/, sample_submission.csv."""
    with zipfile.ZipFile(mirror_file("dog-breed-identification.zip"), "w") as zf:
        if labels:
            zf.writestr("labels.csv", "\n".join([header, *(f"{i},{b}" for i, b in rows)]) + "\n")
        for image_id, breed in dict(rows).items():  # one image per id, even where labels.csv repeats it
            if image_id not in without_image:
                zf.writestr(f"train/{image_id}.jpg", image_bytes("JPEG", BREED_COLOURS.get(breed, "grey")))
        zf.writestr("train/fffstray.jpg", image_bytes("JPEG", "white"))  # not in labels.csv
        for i in range(3):
            zf.writestr(f"test/{i:03x}t.jpg", image_bytes("JPEG", "black"))
        zf.writestr("sample_submission.csv", "id," + ",".join(sorted(BREED_COLOURS)) + "\n")


def test_dog_breeds_zip_in_kaggle_layout(capsys):
    write_dog_breeds_zip(breed_rows(10))

    info = prepare("dog_breeds")

    assert info["classes"] == ["beagle", "collie", "whippet"]
    assert splits(info) == {
        "train": (18, "train minus test and validation"),
        "validation": (6, "20% of train, stratified, seed 0"),
        "test": (6, "20% of train, stratified, seed 0"),
    }
    (record,) = raw_files()
    assert record["name"] == "dog-breed-identification.zip" and record["url"] is None
    assert record["verification"] == "unverified (no published checksum): zip CRCs ok"
    summary = report()
    assert summary["splits"]["test"]["per_class"] == {"beagle": 2, "collie": 2, "whippet": 2}
    assert summary["ignored"] == [
        {"file": "train/fffstray.jpg", "reason": "not in labels.csv"},
        {"file": "sample_submission.csv", "reason": "not used: only labels.csv and train/ are"},
        {"file": "test/", "reason": "3 files, not used: only labels.csv and train/ are"},
    ]
    # every image carries its own breed's label: the breed's colour, after JPEG and resizing
    colours = np.array([BREED_COLOURS[name] for name in info["classes"]])
    for images, labels in load_prepared().splits.values():
        assert np.all(np.abs(np.asarray(images).mean(axis=(1, 2)) - colours[labels]) < 12)


def test_dog_breeds_missing_says_where_to_get_it(capsys):
    write_params("dog_breeds")
    expect_user_error(
        capsys,
        download_stage.main,
        "dog-breed-identification.zip not found in the mirror",
        "https://www.kaggle.com/c/dog-breed-identification/data",
        "set DATA_MIRROR",
    )
    assert not os.path.exists("data/raw")


@pytest.mark.parametrize(
    "zip_args, fragments",
    [
        ({"labels": False}, ["dog-breed-identification.zip: labels.csv not found: expected Kaggle's layout"]),
        ({"header": "image,label"}, ["labels.csv: header is 'image,label', expected 'id,breed'"]),
        ({"header": ""}, ["labels.csv: header is 'none', expected 'id,breed'"]),
        (
            {"without_image": ("001w", "002b")},
            ["zip: labels.csv: id 001w has no image train/001w.jpg (and 1 more ids without an image)"],
        ),
    ],
)
def test_dog_breeds_layout_errors(capsys, zip_args, fragments):
    write_dog_breeds_zip(breed_rows(3), **zip_args)
    write_params("dog_breeds")
    expect_user_error(capsys, download_stage.main, *fragments)
    assert not os.path.exists("data/raw")


@pytest.mark.parametrize(
    "rows, fragment",
    [
        ([("000w", "whippet"), ("000w", "beagle")], "labels.csv line 3: id 000w is listed twice"),
        ([("000w", "whippet"), ("001b", "")], "labels.csv line 3: expected <id>,<breed>, got '001b,'"),
    ],
)
def test_dog_breeds_bad_labels_rows(capsys, rows, fragment):
    write_dog_breeds_zip(rows)
    write_params("dog_breeds")
    expect_user_error(capsys, download_stage.main, fragment)


def test_real_dog_breeds_zip(monkeypatch):
    monkeypatch.setenv("DATA_MIRROR", str(shared_file("dog-breed-identification.zip").parent))
    write_params("dog_breeds")
    download_stage.main()

    dataset = read_dataset("dog_breeds")
    assert len(dataset.classes) == 120 and dataset.classes == sorted(dataset.classes)
    assert {name: len(split) for name, split in dataset.splits.items()} == {"train": 10222}
    assert {"file": "test/", "reason": "10357 files, not used: only labels.csv and train/ are"} in dataset.ignored


# --- folder:<path> ---------------------------------------------------------------------------


def test_folder_with_train_val_test_subfolders(tmp_path):
    counts = {"train": 8, "val": 3, "test": 2}
    write_tree(tmp_path / "mine", {f"{split}/{c}": n for split, n in counts.items() for c in "ab"})

    info = prepare(f"folder:{tmp_path / 'mine'}")

    assert splits(info) == {"train": (16, "mine/train"), "validation": (6, "mine/val"), "test": (4, "mine/test")}
    snapshot = os.stat("data/raw/mine/train/a/0.png")
    assert snapshot.st_ino == os.stat(tmp_path / "mine/train/a/0.png").st_ino, "hardlinked, not copied"


def test_folder_of_class_folders_only():
    write_tree(Path("pets"), {"cat": 10, "dog": 10})
    info = prepare("folder:pets")
    assert info["splits"] == {"train": 12, "validation": 4, "test": 4}
    assert info["split_sources"]["train"] == "pets minus test and validation"


@pytest.mark.parametrize(
    "setup, data, fragment",
    [
        (lambda: None, "folder:nowhere", "folder nowhere does not exist"),
        (lambda: open("a_file", "w").close(), "folder:a_file", "a_file is not a folder"),
        (lambda: os.makedirs("flat") or open("flat/x.png", "w").close(), "folder:flat", "flat: no class folders"),
        (lambda: None, "imagenet", "unknown data 'imagenet'; valid forms: cats_vs_dogs, signs, belgiumtsc"),
    ],
)
def test_bad_data_params_are_one_line_errors(capsys, setup, data, fragment):
    setup()
    write_params(data)
    expect_user_error(capsys, download_stage.main, fragment)


def test_preprocess_refuses_raw_data_of_another_dataset(capsys):
    write_tree(Path("pets"), {"cat": 5, "dog": 5})
    prepare("folder:pets")
    write_params("signs")
    expect_user_error(capsys, preprocess_stage.main, "data/raw holds 'folder:pets'", "run `dvc repro download`")


# --- tfds:<name> -----------------------------------------------------------------------------


@pytest.fixture
def mock_beans(tmp_path, monkeypatch):
    """TFDS 'beans' metadata (3 classes, train/validation/test) and mock_data serving 5 examples a split."""
    tfds = pytest.importorskip("tensorflow_datasets")
    data_dir = tmp_path / "tfds"
    builder = tfds.builder("beans", data_dir=str(data_dir))
    builder.info.set_splits(
        tfds.core.SplitDict(
            [tfds.core.SplitInfo(name=s, shard_lengths=[5], num_bytes=0) for s in ("train", "validation", "test")]
        )
    )
    os.makedirs(builder.data_dir)
    builder.info.write_to_directory(builder.data_dir)
    monkeypatch.setenv("TFDS_DATA_DIR", str(data_dir))
    with tfds.testing.mock_data(num_examples=5, data_dir=str(data_dir)):
        yield data_dir


def test_tfds_dataset_through_data_source(mock_beans):
    info = prepare("tfds:beans", image_size=[16, 16])

    assert info["classes"] == ["angular_leaf_spot", "bean_rust", "healthy"]
    assert info["splits"] == {"train": 5, "validation": 5, "test": 5}
    manifest = json.loads(Path("data/raw/tfds.json").read_text())
    assert manifest["name"] == "beans" and manifest["version"] == "0.1.0"
    assert manifest["splits"] == {"test": 5, "train": 5, "validation": 5}
    assert "dataset_info.json" in manifest["files"]
    images, _ = load_prepared().splits["train"]
    assert images.shape == (5, 16, 16, 3)


def test_tfds_change_after_download_is_noticed(mock_beans, capsys):
    write_params("tfds:beans")
    download_stage.main()
    (mock_beans / "beans" / "0.1.0" / "extra.array_record").write_bytes(b"new shard")
    expect_user_error(capsys, preprocess_stage.main, "changed since download")


def test_tfds_not_prepared_says_how(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"not prepared in .*empty: prepare it with `tfds build beans`.*TFDS_DATA"):
        get_source("tfds:beans").download(tmp_path)


def test_tfds_name_and_version_are_parsed():
    assert get_source("tfds:mnist:3.0.1") == TfdsSource("mnist", "3.0.1")
    assert get_source("tfds:mnist:3.0.1").spec == "mnist:3.0.1"


def test_source_identity_follows_the_content_not_the_location(tmp_path, monkeypatch):
    from flaxvision.data import identify_dataset

    write_zip("cats_and_dogs_filtered.zip", {"cats_and_dogs_filtered/train/cats/1.png": image_bytes("PNG", "red")})
    first = identify_dataset("cats_vs_dogs")
    moved = tmp_path / "elsewhere"
    os.replace(os.environ["DATA_MIRROR"], moved)
    monkeypatch.setenv("DATA_MIRROR", str(moved))
    assert identify_dataset("cats_vs_dogs") == first  # where the mirror is does not count
    with zipfile.ZipFile(moved / "cats_and_dogs_filtered.zip", "a") as zf:
        zf.writestr("cats_and_dogs_filtered/train/dogs/2.png", image_bytes("PNG", "blue"))
    changed = identify_dataset("cats_vs_dogs")
    assert changed["files"][0]["sha256"] != first["files"][0]["sha256"]


def test_source_identity_of_a_folder_changes_with_any_image(tmp_path):
    from flaxvision.data import identify_dataset

    folder = tmp_path / "images"
    write_tree(folder, {"cats": 1, "dogs": 1})
    first = identify_dataset(f"folder:{folder}")
    assert first["files"][0]["files"] == 2
    (folder / "dogs" / "0.png").write_bytes(image_bytes("PNG", "blue"))
    assert identify_dataset(f"folder:{folder}") != first


def test_relative_paths_resolve_against_dvc_root(tmp_path, monkeypatch, capsys):
    """As in `dvc exp run --temp`: the stage runs in a copy under .dvc/tmp, DVC_ROOT names the project."""
    from stages import source as source_stage

    write_tree(tmp_path / "images", {"cats": 1, "dogs": 1})
    copy = Path.cwd() / ".dvc" / "tmp" / "exps" / "tmp1234"
    copy.mkdir(parents=True)
    monkeypatch.setenv("DVC_ROOT", str(Path.cwd()))
    monkeypatch.chdir(copy)
    write_params("folder:../images")
    source_stage.main()
    assert json.loads(Path("data/source.json").read_text())["files"][0]["files"] == 2
    download_stage.main()
    assert Path("data/raw/images/cats/0.png").is_file()

    write_zip("cats_and_dogs_filtered.zip", {"cats_and_dogs_filtered/train/cats/1.png": image_bytes("PNG", "red")})
    monkeypatch.setenv("DATA_MIRROR", "../mirror")  # beside the project, not beside the copy
    write_params("cats_vs_dogs")
    source_stage.main()
    assert json.loads(Path("data/source.json").read_text())["files"][0]["name"] == "cats_and_dogs_filtered.zip"


def test_a_mirror_that_no_longer_exists_is_an_error(tmp_path, monkeypatch, capsys):
    from stages import source as source_stage

    monkeypatch.setenv("DATA_MIRROR", str(tmp_path / "gone"))
    write_params("cats_vs_dogs")
    with pytest.raises(SystemExit):
        source_stage.main()
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: DATA_MIRROR=") and "is not a directory" in line
