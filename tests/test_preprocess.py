"""Decoding (flaxvision.data.images), splitting (splits) and the preprocess stage on folder trees."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flaxvision.data import load_prepared
from flaxvision.data.images import load_image
from flaxvision.data.splits import plan_splits, stratified_split
from flaxvision.errors import UserError
from stages import download as download_stage
from stages import preprocess as preprocess_stage
from tests.helpers import expect_user_error, prepare, report, write_params, write_tree

RED, BLUE = (255, 0, 0), (0, 0, 255)


def halves(width=40, height=20, left=RED, right=BLUE) -> Image.Image:
    """An RGB image whose left half is ``left`` and right half ``right``."""
    img = Image.new("RGB", (width, height), right)
    img.paste(left, (0, 0, width // 2, height))
    return img


# --- decoding ------------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display needs 90 degrees clockwise
    halves().save(path, exif=exif, quality=95)

    pixels = load_image(path, (40, 20), "rgb")  # upright it is 20 wide, 40 high

    assert pixels.shape == (40, 20, 3)
    top, bottom = pixels[5, 10], pixels[35, 10]
    assert top[0] > 200 and top[2] < 60, "the left (red) half ends up on top"
    assert bottom[2] > 200 and bottom[0] < 60


def as_mode(mode: str) -> Image.Image:
    """A 4x4 image in ``mode``, every pixel mid grey (white for the bilevel mode "1")."""
    grey = Image.new("L", (4, 4), 128)
    if mode == "1":
        return Image.new("1", (4, 4), 1)
    if mode == "I;16":
        return Image.fromarray(np.full((4, 4), 128 * 257, dtype=np.uint16))
    if mode.startswith("P"):
        img = Image.merge("RGB", [grey] * 3).convert("P", palette=Image.Palette.ADAPTIVE)
        if mode == "P+transparency":
            img.info["transparency"] = 1  # an unused palette entry, as GIFs often have
        return img
    return Image.merge("RGB", [grey] * 3).convert(mode) if mode != "L" else grey


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB", "RGBA", "LA", "P", "P+transparency", "CMYK", "1"])
@pytest.mark.parametrize("color_mode, channels", [("rgb", 3), ("grayscale", 1)])
def test_every_colour_mode_is_converted(tmp_path, mode, color_mode, channels):
    img = as_mode(mode)
    suffix = ".tif" if mode == "CMYK" else ".png"
    path = tmp_path / f"image{suffix}"
    img.save(path)

    pixels = load_image(path, (8, 6), color_mode)

    assert pixels.shape == (8, 6, channels) and pixels.dtype == np.uint8
    expected = 255 if mode == "1" else 128
    assert np.abs(pixels.astype(int) - expected).max() <= 2, f"{mode} -> {color_mode}: {pixels[0, 0]}"


def test_ppm_and_arrays_are_decoded(tmp_path):
    path = tmp_path / "sign.ppm"
    halves().save(path)
    from_file = load_image(path, (20, 40), "rgb")
    from_array = load_image(np.asarray(halves()), (20, 40), "rgb")
    assert np.array_equal(from_file, from_array) and from_file[10, 5].tolist() == list(RED)
    assert load_image(np.zeros((5, 5, 1), np.uint8), (3, 3), "grayscale").shape == (3, 3, 1)


def test_large_jpeg_is_decoded_to_the_target_size(tmp_path):
    path = tmp_path / "big.jpg"
    halves(1600, 1200).save(path, quality=90)
    pixels = load_image(path, (60, 80), "rgb")
    assert pixels.shape == (60, 80, 3)
    assert pixels[30, 10, 0] > 200 and pixels[30, 70, 2] > 200


# --- splits --------------------------------------------------------------------------------


def test_stratified_split_is_seeded_disjoint_and_keeps_every_class():
    labels = np.array([0] * 50 + [1] * 30 + [2] * 3 + [3] * 2)
    kept, held = stratified_split(labels, 0.2, seed=0)

    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(len(labels)))
    assert not set(kept) & set(held)
    assert set(labels[kept]) == set(labels[held]) == {0, 1, 2, 3}
    # round(0.2 * 85) = 17 shared 10, 6, 1, 0; the 2-member class still gets one: 18
    assert np.bincount(labels[held]).tolist() == [10, 6, 1, 1]
    again, _ = stratified_split(labels, 0.2, seed=0)
    other, _ = stratified_split(labels, 0.2, seed=1)
    assert np.array_equal(kept, again) and not np.array_equal(kept, other)


def test_test_split_comes_from_validation_when_there_is_one():
    labels = {"train": np.repeat([0, 1], 20), "validation": np.repeat([0, 1], 10)}
    plans = plan_splits(labels, {"train": "t", "validation": "v"}, 0.2, 0.2, seed=0)
    sizes = [(p.source, len(p.indices)) for p in plans.values()]
    assert sizes == [("train", 40), ("validation", 16), ("validation", 4)]
    assert plans["test"].description == "20% of v, stratified, seed 0"


def test_missing_test_and_validation_both_come_from_train():
    plans = plan_splits({"train": np.repeat([0, 1], 50)}, {"train": "all"}, 0.25, 0.2, seed=3)
    assert {name: len(p.indices) for name, p in plans.items()} == {"train": 55, "validation": 25, "test": 20}
    assert plans["train"].description == "all minus test and validation"
    assert plans["validation"].description == "25% of all, stratified, seed 3"
    assert not set(plans["test"].indices) & set(plans["validation"].indices)


# --- the stage, on folder trees --------------------------------------------------------------


def test_bad_files_are_skipped_and_reported(offline_project, capsys):
    write_tree(Path("pets/train"), {"cat": 60, "dog": 60}, suffix=".jpg")
    write_tree(Path("pets/val"), {"cat": 10, "dog": 10}, suffix=".jpg")
    truncated = Path("pets/train/cat/0.jpg").read_bytes()
    Path("pets/train/cat/0.jpg").write_bytes(truncated[: len(truncated) // 2])
    Path("pets/train/dog/notes.jpg").write_text("not an image")
    Path("pets/train/dog/README.txt").write_text("ignored, not counted")

    prepare("folder:pets", image_size=[16, 16], max_bad_fraction=0.05)

    summary = report()
    assert {s["file"]: s["split"] for s in summary["skipped"]} == {
        "pets/train/cat/0.jpg": "train",
        "pets/train/dog/notes.jpg": "train",
    }
    assert all(s["reason"] for s in summary["skipped"])
    assert summary["ignored"] == [{"file": "pets/train/dog/README.txt", "reason": "not an image file name"}]
    assert summary["splits"]["train"] == {"count": 119, "per_class": {"cat": 59, "dog": 60}}
    assert summary["splits"]["test"]["count"] == 4
    assert "warning: skipped 2 unreadable files" in capsys.readouterr().err


def test_too_many_bad_files_fail_naming_them(offline_project, capsys):
    write_tree(Path("pets"), {"cat": 10, "dog": 10}, suffix=".jpg")
    for i in range(5):
        Path(f"pets/cat/{i}.jpg").write_text("broken")
    with pytest.raises(SystemExit):
        prepare("folder:pets", image_size=[16, 16])
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: pets: 5 of 20 images unreadable, more than max_bad_fraction 0.01: ")
    assert "pets/cat/0.jpg (UnidentifiedImageError" in line and line.endswith("and 2 more")
    assert not Path("data/prepared").exists()


def test_grayscale_arrays_and_reader(offline_project):
    write_tree(Path("shapes"), {"circle": 10, "square": 10, "star": 10}, suffix=".jpg")
    info = prepare("folder:shapes", color_mode="grayscale", image_size=[12, 10])

    prepared = load_prepared()
    assert prepared.classes == ["circle", "square", "star"]
    assert prepared.image_shape == (12, 10, 1) and prepared.color_mode == "grayscale"
    images, labels = prepared.splits["train"]
    assert images.shape == (18, 12, 10, 1) and images.dtype == np.uint8 and labels.dtype == np.int32
    assert {name: len(s[0]) for name, s in prepared.splits.items()} == {"train": 18, "validation": 6, "test": 6}
    assert info["split_sources"]["test"] == "20% of shapes, stratified, seed 0"


def test_load_prepared_without_preprocess_says_what_to_run(tmp_path):
    with pytest.raises(UserError, match=r"run `dvc repro preprocess`"):
        load_prepared(tmp_path / "data" / "prepared")


@pytest.mark.parametrize(
    "tree, fragments",
    [
        ({}, ["no class folders"]),
        ({"cat": 0, "dog": 0}, ["has no images"]),
        ({"cat": 5}, ["only the class ['cat']"]),
    ],
)
def test_unusable_trees_are_one_line_errors(offline_project, capsys, tree, fragments):
    Path("pets").mkdir()
    write_tree(Path("pets"), tree, suffix=".jpg")
    write_params("folder:pets")
    if tree:
        download_stage.main()
        expect_user_error(capsys, preprocess_stage.main, *fragments)
    else:
        expect_user_error(capsys, download_stage.main, *fragments)


def test_preprocess_before_download_is_a_one_line_error(offline_project, capsys):
    write_params("signs")
    expect_user_error(capsys, preprocess_stage.main, "data/raw/PROVENANCE.json not found", "dvc repro download")


def test_bad_preprocess_params_are_one_line_errors(offline_project, capsys):
    write_params("signs", preprocess={"val_fraction": 1.5})
    expect_user_error(capsys, preprocess_stage.main, "val_fraction must be between 0 and 1")
