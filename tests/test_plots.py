"""The pictures: image grids and activation maps (flaxvision.plots), the conv outputs they show
(flaxvision.activations), and the evaluate stage that writes them as DVC image plots."""

import json
import re
import sys

import numpy as np
import pytest
import yaml
from flax import nnx
from PIL import Image

from flaxvision import models, plots
from flaxvision.activations import conv_activations, select_layers
from flaxvision.errors import UserError
from flaxvision.evaluation import most_confident_errors
from flaxvision.models.resnet import seed_resnet
from flaxvision.plots import (
    activation_map,
    image_grid,
    spread_over_classes,
    standardise_channels,
    tile_channels,
    write_png,
)
from flaxvision.recipes import plain_params
from stages import evaluate as evaluate_stage
from tests.helpers import CLASSES, pattern_images, save_model, write_prepared


def texts(figure) -> str:
    """Every title and text of a figure, one per line."""
    titles = [figure.get_suptitle()] + [ax.get_title() for ax in figure.axes]
    return "\n".join(titles + [text.get_text() for ax in figure.axes for text in ax.texts])


def png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


# --- drawing -------------------------------------------------------------------------------


def test_image_grid_captions_every_image_and_writes_a_png(tmp_path):
    images, labels = pattern_images(10, size=24)
    captions = [CLASSES[label] for label in labels]
    figure = image_grid(images, captions, "Training images", columns=4)

    assert len([ax for ax in figure.axes if ax.images]) == 10  # 3 rows of 4, two cells empty
    assert figure.get_suptitle() == "Training images"
    assert [ax.get_title() for ax in figure.axes[:10]] == captions
    write_png(figure, tmp_path / "grid.png")
    width, height = png_size(tmp_path / "grid.png")
    assert 500 < width < 1500 and 400 < height < 1200, (width, height)


def test_grayscale_images_are_drawn_in_grey_and_an_empty_grid_says_why():
    images, _ = pattern_images(2, size=8)
    figure = image_grid(images[..., :1], ["a", "b"], "grey")
    assert figure.axes[0].images[0].get_cmap().name == "gray"

    empty = image_grid(np.zeros((0, 8, 8, 3), np.uint8), [], "Misclassified", empty="no errors")
    assert "no errors" in texts(empty)


def test_spread_over_classes_shows_every_class_in_turn():
    labels = np.array([2, 2, 2, 0, 0, 1, 2])
    chosen = spread_over_classes(labels, 5)
    assert labels[chosen].tolist() == [0, 1, 2, 0, 2]
    assert len(spread_over_classes(labels, 100)) == len(labels)


def test_most_confident_errors_come_first():
    probabilities = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    labels = np.array([0, 0, 0, 1])  # rows 1, 2, 3 are wrong, with confidence 0.6, 0.8, 0.7
    assert most_confident_errors(probabilities, labels, 2).tolist() == [2, 3]
    assert most_confident_errors(probabilities, np.array([0, 1, 1, 0]), 5).tolist() == []


def test_channels_are_standardised_and_tiled_with_gaps():
    maps = np.stack([np.full((3, 4), 7.0), np.arange(12.0).reshape(3, 4)] * 3, axis=-1)  # 6 channels
    scaled = standardise_channels(maps)
    assert scaled.min() >= 0 and scaled.max() <= 1
    np.testing.assert_array_equal(scaled[..., 0], 0.5)  # a constant channel sits mid-scale
    assert scaled[..., 1].mean() == pytest.approx(0.5)

    mosaic = tile_channels(scaled)  # 6 channels: 4 columns, 2 rows of 3x4 tiles, 1-pixel gaps
    assert mosaic.shape == (2 * 3 + 1, 4 * 4 + 3)
    np.testing.assert_array_equal(mosaic[0:3, 5:9], scaled[..., 1])  # channel 1: row 0, column 1
    np.testing.assert_array_equal(mosaic[4:7, 0:4], scaled[..., 4])  # channel 4: row 1, column 0
    assert np.isnan(mosaic[3]).all() and np.isnan(mosaic[4:7, 10:]).all()  # a gap; the empty tiles


def test_activation_map_titles_the_layer_and_caps_the_channels(tmp_path):
    image, _ = pattern_images(1, size=16)
    activation = np.random.default_rng(0).normal(size=(14, 14, 100))
    figure = activation_map(
        activation, "layers.0 (conv 3×3)", image=image[0], image_caption="true: red", max_channels=32
    )
    assert "layers.0 (conv 3×3)" in texts(figure) and "true: red" in texts(figure)
    assert "channels 1–32 of 100" in texts(figure)
    maps = figure.axes[1].images[0].get_array()
    assert maps.shape == (4 * 15 - 1, 8 * 15 - 1)  # 32 channels: 8 columns, 4 rows
    write_png(figure, tmp_path / "map.png")
    width, height = png_size(tmp_path / "map.png")
    assert width == 1200 and 300 < height < 1500, (width, height)


# --- activations ---------------------------------------------------------------------------


@pytest.mark.slow
def test_conv_outputs_are_recorded_in_the_order_they_run():
    model = seed_resnet((1,), num_classes=2, input_shape=(32, 32, 3), rngs=nnx.Rngs(0))
    model.eval()
    image, _ = pattern_images(1, size=32)

    activations = conv_activations(model, image[0], "unit")

    # The projection block runs its shortcut first, then reduce, middle, expand (not sorted by name).
    assert [a.path for a in activations] == [
        "layers.1",
        "layers.5.shortcut.layers.0",
        "layers.5.reduce.layers.0",
        "layers.5.middle.layers.0",
        "layers.5.expand.layers.0",
    ]
    assert activations[0].output.shape == (16, 16, 64)
    assert activations[0].description == "conv 7×7/2, 3→64, output 16×16×64"
    stem = model.layers[1](model.layers[0](image[:1] / 255.0))  # zero padding, then the stem conv
    np.testing.assert_allclose(activations[0].output, stem[0], rtol=1e-5, atol=1e-5)
    assert sys.getprofile() is None  # the observing is undone
    assert conv_activations(model, image[0], "unit")[0].index == 0  # and does not accumulate


@pytest.mark.slow
def test_layers_are_chosen_by_index_or_path_or_spread_over_the_depth():
    model = models.create_model("belgiumtsc_cnn", num_classes=3, input_shape=(16, 16, 1), rngs=nnx.Rngs(0))
    model.eval()
    activations = conv_activations(model, np.zeros((16, 16, 1), np.uint8), "unit")
    assert len(activations) == 6

    def paths(chosen, limit=8):
        return [a.path for a in select_layers(activations, chosen, limit)]

    assert paths([]) == [a.path for a in activations]
    assert paths([], limit=3) == [activations[i].path for i in (0, 2, 5)]  # first, middle, last
    assert paths([0, -1, "layers.1"]) == [activations[0].path, activations[5].path, "layers.1"]
    with pytest.raises(UserError, match="no conv layer 'layers.99'.*from 0 to 5"):
        select_layers(activations, ["layers.99"], 8)
    with pytest.raises(UserError, match="no conv layer 6"):
        select_layers(activations, [6], 8)


# --- the evaluate stage --------------------------------------------------------------------


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A project folder as cwd with data/prepared, an (untrained) artifacts/model and params.yaml."""
    monkeypatch.chdir(tmp_path)
    write_prepared(counts=(30, 6, 12))
    save_model(tmp_path / "artifacts" / "model")
    params = plain_params(
        {
            "convolutions": "xla",
            "numerics": "portable",
            "augment": {"rotation": 30.0, "horizontal_flip": True},
            "evaluate": {"samples": 6, "misclassified": 5, "activation_image": 3},
        }
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp_path


@pytest.mark.slow
def test_evaluate_stage_writes_labelled_pictures(project, monkeypatch):
    figures = {}

    def recording_write_png(figure, path):  # keep each figure's text to check the labels
        figures[path.name] = texts(figure)
        write_png(figure, path)

    monkeypatch.setattr(plots, "write_png", recording_write_png)
    evaluate_stage.main()

    folder = project / "results" / "evaluate" / "plots"
    maps = sorted(path.name for path in (folder / "activations").iterdir())
    assert maps == ["001_layers.0.png", "002_layers.4.png", "003_layers.8.png"]  # simple_cnn's three convs
    assert sorted(path.name for path in folder.iterdir()) == [
        "activations",
        "samples.png",
        "samples_augmented.png",
        "test_misclassified.png",
    ]
    for path in [*folder.glob("*.png"), *(folder / "activations").iterdir()]:
        width, height = png_size(path)
        assert 600 <= width <= 2000 and 200 <= height <= 2000, (path.name, width, height)
        assert path.stat().st_size < 1_000_000

    assert figures["samples.png"].count("\nred\n") == 2 and "blue" in figures["samples.png"]
    assert "rotation 30.0, horizontal_flip" in figures["samples_augmented.png"]
    predictions = json.loads((project / "results/evaluate/predictions.json").read_text())
    wrong = sum(row["actual"] != row["predicted"] for row in predictions)
    misclassified = figures["test_misclassified.png"]
    assert misclassified.count("true: ") == min(5, wrong) > 0  # an untrained model: errors are certain
    assert f"{wrong} of 12 test images are misclassified" in misclassified
    assert all(re.search(r"predicted: (red|green|blue) \d+%", caption) for caption in misclassified.split("true: ")[1:])
    assert "Conv layer 1 of 3: layers.0" in figures["001_layers.0.png"]
    assert "test image 3\ntrue: red" in figures["001_layers.0.png"]  # pattern_images: label 3 % 3 = red
    # The augmented images really differ from the samples (rotation), and the run is repeatable.
    before = (folder / "samples_augmented.png").read_bytes()
    assert before != (folder / "samples.png").read_bytes()
    evaluate_stage.main()
    assert (folder / "samples_augmented.png").read_bytes() == before


def test_an_activation_image_outside_the_test_split_is_a_one_line_error(project, capsys):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["evaluate"]["activation_image"] = 12
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit):
        evaluate_stage.main()
    assert capsys.readouterr().err == (
        "error: params.yaml: evaluate.activation_image is 12, but the test split has 12 images: use 0 to 11\n"
    )
