"""The predict command (flaxvision.predict) on a model trained here on generated images."""

import csv
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from flax import nnx
from PIL import ExifTags, Image

from flaxvision import models
from flaxvision.classifier import load
from flaxvision.evaluation import softmax
from flaxvision.files import write_checksums
from flaxvision.inference import model_logits
from flaxvision.model_folder import load_trained
from flaxvision.predict import main, predict_files
from flaxvision.training import Trainer, fit
from tests.helpers import CLASSES, PROJECT_ROOT, augment_config, pattern_images, save_model, train_config


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """simple_cnn trained on coloured squares (32×32 RGB), saved as the train stage saves it."""
    root = tmp_path_factory.mktemp("trained")
    config = train_config(epochs=6, batch_size=8, early_stopping_patience=10)
    model = models.create_model("simple_cnn", num_classes=3, input_shape=(32, 32, 3), rngs=nnx.Rngs(0))
    trainer = Trainer(model, config, augment_config(), models.preprocessing("simple_cnn"))
    progress = fit(trainer, pattern_images(96, seed=0), pattern_images(24, seed=1), root / "checkpoints", "run")
    assert progress.history[progress.best_epoch]["val"]["accuracy"] == 1.0  # the images below are easy
    return save_model(root / "model", model=trainer.model)


@pytest.fixture(scope="module")
def known_images(tmp_path_factory) -> dict[str, Path]:
    """One new image per class, saved at 64×64 (predict resizes it) as PNG or JPEG."""
    folder = tmp_path_factory.mktemp("images")
    images, labels = pattern_images(3, size=32, seed=7)
    paths = {}
    for image, label, suffix in zip(images, labels, [".png", ".jpg", ".png"], strict=True):
        path = folder / f"{CLASSES[label]}{suffix}"
        Image.fromarray(image).resize((64, 64), Image.Resampling.NEAREST).save(path, quality=95)
        paths[CLASSES[label]] = path
    return paths


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A red square as a camera writes it: a JPEG 10×7.5 times the model's input, which decoding
    reads at a reduced scale, stored sideways with the EXIF orientation that decoding turns it by."""
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # turn 90° clockwise to view
    image = pattern_images(1, size=32, seed=7)[0][0]  # label 0: red
    Image.fromarray(image).resize((320, 240), Image.Resampling.NEAREST).save(path, quality=95, exif=exif)
    return path


def predicted_class(line: str) -> str:
    """The first (most probable) class of a text output line ``file: class 97.0%, ...``."""
    return line.split(": ", 1)[1].split(" ")[0]


@pytest.mark.slow
def test_known_images_get_their_class(model_dir, known_images, capsys):
    assert main([*map(str, known_images.values()), "--model", str(model_dir)]) == 0
    output = capsys.readouterr()
    lines = output.out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(path) for path in known_images.values()]
    assert [predicted_class(line) for line in lines] == list(known_images)
    assert all(line.count("%") == 3 for line in lines)  # top 3 of 3 classes
    assert "error" not in output.err


def test_an_image_file_gets_what_evaluation_gets_for_the_prepared_array(model_dir, tmp_path):
    # Same size as the model input and lossless: predict must reproduce the pipeline's logits exactly.
    images, _ = pattern_images(2, size=32, seed=3)
    paths = []
    for index, image in enumerate(images):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(image).save(paths[-1])
    results = predict_files(paths, model_dir, top_k=3, batch_size=32)

    model, _ = load_trained(model_dir)
    expected = softmax(model_logits(model, "tf", images, batch_size=2))
    for result, row in zip(results, expected, strict=True):
        got = {p["class"]: p["probability"] for p in result["predictions"]}
        np.testing.assert_allclose([got[name] for name in CLASSES], row, rtol=1e-5, atol=1e-6)


def test_the_readme_python_api_example(model_dir, photo, tmp_path, monkeypatch, capsys):
    """The docs' example, run as written in a folder with the model and a photo where it expects them."""
    page = (PROJECT_ROOT / "docs" / "predict.md").read_text()
    example = re.search(r"## Python API\n.*?```python\n(.*?)```", page, re.S).group(1)
    shutil.copytree(model_dir, tmp_path / "artifacts" / "model")
    shutil.copy(photo, tmp_path / "photo.jpg")
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/predict.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    # The file and the array the example builds from it: the very same prediction, to the last bit.
    assert len(lines) == 2 and lines[0] == lines[1] and lines[0].startswith("red ('red', "), lines

    # The file's decoded pixels, not Pillow's plain ones: decoding turns the photo and reads it reduced.
    model = load(tmp_path / "artifacts" / "model")
    from_file, from_pixels, from_plain_pillow = model.predict(
        [photo, model.decode(photo), np.asarray(Image.open(photo))]
    )
    assert from_pixels == from_file and from_plain_pillow != from_file
    # The same numbers as the predict command's (a batch of one: the same up to float rounding).
    (result,) = predict_files([photo], model_dir, top_k=3, batch_size=32)
    assert [p["class"] for p in result["predictions"]] == list(from_file.classes)
    np.testing.assert_allclose(from_file.probabilities, [p["probability"] for p in result["predictions"]], rtol=1e-5)
    assert model.classes == tuple(CLASSES) and model.predict([]) == []


def test_bad_files_get_one_line_errors_and_the_others_are_predicted(model_dir, known_images, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "truncated.jpg").write_bytes(known_images["green"].read_bytes()[:40])
    inputs = [tmp_path / "notes.txt", known_images["red"], tmp_path / "truncated.jpg", tmp_path / "missing.png"]

    assert main([*map(str, inputs), "--model", str(model_dir)]) == 1

    output = capsys.readouterr()
    assert [predicted_class(line) for line in output.out.splitlines()] == ["red"]
    errors = [line for line in output.err.splitlines() if line.startswith("error: ")]
    assert [line.split(": ")[1] for line in errors] == [
        str(tmp_path / name) for name in ("notes.txt", "truncated.jpg", "missing.png")
    ]
    assert "not a readable image (UnidentifiedImageError" in errors[0]
    assert errors[2].endswith("missing.png: no such file")


def test_folders_are_searched_recursively_for_images(model_dir, known_images, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "b" / "c").mkdir(parents=True)
    shutil.copy(known_images["blue"], folder / "b" / "c" / "blue.png")
    shutil.copy(known_images["red"], folder / "red.png")
    (folder / "README.txt").write_text("ignored: not an image suffix\n")
    (tmp_path / "empty").mkdir()

    output = tmp_path / "predictions.json"
    status = main([str(folder), str(tmp_path / "empty"), "--model", str(model_dir), "--output", str(output)])

    assert status == 1  # the empty folder
    results = json.loads(output.read_text())
    assert [r["file"] for r in results] == [
        str(folder / "b/c/blue.png"),
        str(folder / "red.png"),
        str(tmp_path / "empty"),
    ]
    assert [r["predictions"][0]["class"] for r in results[:2]] == ["blue", "red"]
    assert sum(p["probability"] for p in results[0]["predictions"]) == pytest.approx(1.0, abs=1e-5)
    assert results[2] == {"file": str(tmp_path / "empty"), "error": "a folder without image files"}
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'empty'}: a folder without image files"


def test_csv_output_has_one_row_per_image(model_dir, known_images, tmp_path):
    output = tmp_path / "predictions.csv"
    inputs = [known_images["green"], tmp_path / "missing.png"]
    assert main([*map(str, inputs), "--model", str(model_dir), "--top-k", "2", "--output", str(output)]) == 1

    rows = list(csv.DictReader(output.open()))
    assert list(rows[0]) == ["file", "class_1", "probability_1", "class_2", "probability_2", "error"]
    assert rows[0]["class_1"] == "green" and rows[0]["error"] == ""
    assert float(rows[0]["probability_1"]) > float(rows[0]["probability_2"])
    assert rows[1]["error"] == "no such file" and rows[1]["class_1"] == ""


def test_a_model_for_another_input_shape_is_a_one_line_error(model_dir, known_images, tmp_path, capsys):
    other = tmp_path / "model"
    shutil.copytree(model_dir, other)
    metadata = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps(metadata | {"input_shape": [48, 48, 3]}))
    write_checksums(other)  # a folder written so, not one damaged since

    assert main([str(known_images["red"]), "--model", str(other)]) == 2

    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"error: {other / 'weights.msgpack'} does not fit simple_cnn for 48×48×3 inputs and 3 classes"
    )
    assert main([str(known_images["red"]), "--model", str(tmp_path / "nothing")]) == 2
    assert "no trained model in" in capsys.readouterr().err


def test_a_grayscale_model_gets_grayscale_images(tmp_path, known_images):
    save_model(tmp_path / "grey", "belgiumtsc_cnn", (24, 24, 1), classes=list("abcd"))
    (result,) = predict_files([known_images["red"]], tmp_path / "grey", top_k=9, batch_size=4)
    assert sorted(p["class"] for p in result["predictions"]) == list("abcd")  # k capped at the classes
    assert sum(p["probability"] for p in result["predictions"]) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow  # a process of its own
def test_the_predict_command(model_dir, known_images):
    command = Path(sys.executable).parent / "flaxvision"  # the [project.scripts] entry point
    result = subprocess.run(
        [str(command), "predict", str(known_images["blue"]), "--model", str(model_dir), "--top-k", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"{known_images['blue']}: blue ") and result.stdout.count("\n") == 1
