"""End to end: the real dvc.yaml run by DVC in a temporary git repo, on tiny generated images.

The experiments run by DVC's own machinery (`dvc exp run --temp`, queued experiments) run in a copy
of the project under .dvc/tmp, where the default mirror and relative `folder:` paths must still
resolve against the project's root, as in the workspace."""

import json
import re
import time

import numpy as np
import pytest
from PIL import Image

from tests.helpers import STAGES, pattern_images
from tests.projects import (
    cats_vs_dogs_zip,
    dvc,
    experiments,
    git,
    image_folder,
    metrics,
    new_project,
    ran,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The project with a relative folder: dataset and the default mirror (../shared/datasets) beside it."""
    base = tmp_path_factory.mktemp("beside")
    image_folder(base / "images")
    cats_vs_dogs_zip(base / "shared" / "datasets" / "cats_and_dogs_filtered.zip")
    return new_project(base / "project", "folder:../images")


def test_repro_runs_every_stage_then_nothing(project):
    assert ran(dvc(project, "repro")) == list(STAGES)
    summary = metrics(project)  # three classes: no top-5 accuracy, and no counters beside the scores
    assert set(summary) == {"loss", "accuracy", "macro_precision", "macro_recall", "macro_f1"}
    assert 0.0 <= summary["accuracy"] <= 1.0
    train = json.loads((project / "results/train/metrics.json").read_text())
    assert set(train) == {"best_epoch", "epochs", "train", "val"} and train["epochs"] == 2
    per_class = json.loads((project / "results/evaluate/per_class.json").read_text())
    assert {row["class"] for row in per_class} == {"blue", "green", "red"}
    curve = (project / "results/train/plots/metrics/val/loss.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "loss"] and len(curve) == 3  # header + 2 epochs
    assert json.loads((project / "artifacts/model/model.json").read_text())["classes"] == ["blue", "green", "red"]
    plots = project / "results/evaluate/plots"
    assert sorted(path.name for path in plots.glob("*.png")) == [
        "samples.png",
        "samples_augmented.png",
        "test_misclassified.png",
    ]
    assert len(list((plots / "activations").glob("*.png"))) == 3  # simple_cnn's three convolutions

    assert ran(dvc(project, "repro")) == ["source"]  # it only re-checks the data source
    assert json.loads(dvc(project, "status", "--json")) == {"source": ["always changed"]}


def test_library_code_change_reruns_the_stages_that_import_it(project):
    """The stale-train reproduction of issue 10: train must see a change to load_prepared."""
    prepared = project / "flaxvision/data/prepared.py"
    original = prepared.read_text()
    prepared.write_text(original + "# edited\n")
    try:
        changed = set(json.loads(dvc(project, "status", "--json")))
    finally:
        prepared.write_text(original)
    assert changed == set(STAGES)
    config = project / "flaxvision/params.py"
    config.write_text(config.read_text() + "# edited\n")
    try:
        assert set(json.loads(dvc(project, "status", "--json"))) == set(STAGES)
    finally:
        git(project, "checkout", "flaxvision/params.py")


def test_changed_folder_contents_rerun_what_depends_on_them(project):
    """No --force: the source stage sees the folder's new contents, download re-snapshots it and
    preprocess (and so what follows it) is out of date; going back restores the old snapshot (from
    DVC's run-cache, keyed by the source's identity, never by the param alone)."""
    extra = project.parent / "images" / "red" / "extra.png"
    snapshot = project / "data/raw/images/red/extra.png"
    Image.fromarray(pattern_images(1, size=32)[0][0][::-1]).save(extra)
    try:
        assert ran(dvc(project, "repro", "download")) == ["source", "download"]
        assert snapshot.is_file()
        assert set(json.loads(dvc(project, "status", "--json"))) == {"source", "preprocess"}
    finally:
        extra.unlink()
    dvc(project, "repro", "download")
    assert not snapshot.exists()
    assert set(json.loads(dvc(project, "status", "--json"))) == {"source"}


def test_switching_from_scratch_models_extracts_nothing(project):
    output = dvc(project, "repro", "-s", "extract-features", "--force")
    assert "no features to extract" in output
    features = json.loads((project / "data/features/features.json").read_text())
    assert features["features"] is None


def test_experiment_variant_and_metrics_diff(project):
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baseline results")
    output = dvc(project, "exp", "run", "-S", "model=tutorial_cnn", "-S", "train.epochs=1")
    assert ran(output) == ["source", "preprocess", "extract-features", "train", "evaluate"]
    assert "tutorial_cnn" in dvc(project, "exp", "show", "--csv")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tutorial_cnn")
    diff = json.loads(dvc(project, "metrics", "diff", "HEAD~1", "--all", "--json"))  # unchanged ones too
    accuracy = diff["results/evaluate/metrics.json"]["test.accuracy"]
    assert set(accuracy) >= {"old", "new"}


def test_queued_experiments_find_the_relative_folder_and_the_default_mirror(project):
    """Both paths resolve against the project's root from DVC's copy under .dvc/tmp/exps (where
    `--queue` and `--temp` runs alike execute): a grid of two data sources, one queued experiment each."""
    output = dvc(project, "exp", "run", "--queue", "-S", "data=folder:../images,cats_vs_dogs")
    names = re.findall(r"Queued experiment '([\w-]+)'", output)
    assert len(names) == 2
    dvc(project, "queue", "start")
    deadline = time.monotonic() + 600
    while any(state in (status := dvc(project, "queue", "status")) for state in ("Queued", "Running")):
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert "Failed" not in status, status
    found = experiments(project)
    data = {found[name]["params"]["data"]: name for name in names}
    assert sorted(data) == ["cats_vs_dogs", "folder:../images"]
    assert all(0 <= found[name]["metrics"]["accuracy"] <= 1 for name in names)
    assert "offline mirror" in dvc(project, "queue", "logs", data["cats_vs_dogs"])


def test_plots_render_offline(project):
    dvc(project, "plots", "show")
    page = (project / "dvc_plots/index.html").read_text()
    assert "vegaEmbed" in page and "Confusion matrix" in page and "Per-class F1" in page
    assert "Learning rate per epoch" in page
    curves = json.loads(dvc(project, "plots", "show", "--json"))["data"]
    for title in ("Loss per epoch", "Accuracy per epoch", "Learning rate per epoch"):  # whole epochs on the axis
        assert curves[title][0]["content"]["encoding"]["x"]["axis"] == {"tickMinStep": 1, "format": "d"}
    for picture in ["samples.png", "samples_augmented.png", "test_misclassified.png", "activations/001_layers.0.png"]:
        name = "workspace_results_evaluate_plots_" + picture.replace("/", "_")
        assert f'<img src="static/{name}">' in page and (project / "dvc_plots/static" / name).is_file()
    assert "cdn.jsdelivr" not in page and "<script src=" not in page


# Two backbones (stacked's shape, cheaper ones than its ResNet50V2 and DenseNet121) under the dense head.
TWO_BACKBONES = ["-S", "model=transfer", "-S", "transfer.backbones=[mobilenet_v2,vgg16]", "-S", "transfer.alpha=0.35"]


@pytest.fixture(scope="module")
def stand_in_weights(tmp_path_factory):
    """Keras-written random weights under the official file names, standing in for the downloads."""
    from flaxvision.conversion.weights import imagenet_weights
    from flaxvision.models.backbones import BACKBONES
    from tests import keras_files

    folder = tmp_path_factory.mktemp("weights")
    for name, options in [("mobilenet_v2", {"alpha": 0.35}), ("vgg16", {})]:
        shape = (32, 32, 3)
        model = keras_files.applications_model(
            BACKBONES[name].keras_class, include_top=False, input_shape=shape, **options
        )
        file = imagenet_weights(name, include_top=False, input_shape=shape, **options).name
        keras_files.save_weights_only(model, folder / file)
    return folder


def test_frozen_backbones_end_to_end_then_head_only_experiments_reuse_the_features(project, stand_in_weights):
    output = dvc(project, "exp", "run", *TWO_BACKBONES, "-S", f"pretrained={stand_in_weights}")
    assert ran(output)[-3:] == ["extract-features", "train", "evaluate"]
    features = json.loads((project / "data/features/features.json").read_text())
    assert features["backbones"] == ["mobilenet_v2", "vgg16"] and features["features"]
    assert np.load(project / "data/features/train.npy").shape[1] == 1280 + 512
    assert 0.0 <= metrics(project)["accuracy"] <= 1.0

    # A train param reruns train and evaluate only: the features come from extract-features' last run.
    rate = ["-S", "train.learning_rate=0.0005"]
    output = dvc(project, "exp", "run", *TWO_BACKBONES, "-S", f"pretrained={stand_in_weights}", *rate)
    assert ran(output) == ["source", "train", "evaluate"]
    git(project, "checkout", "params.yaml")
