"""End to end: the real dvc.yaml run by DVC in a temporary git repo, on tiny generated images."""

import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

import models
from tests.helpers import dvc, environment, git, make_project

STAGES = ["download", "preprocess", "extract-features", "train", "evaluate"]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return make_project(tmp_path_factory.mktemp("project"), tmp_path_factory.mktemp("images"),
                        epochs=2, batch_size=8)


def ran(output: str) -> list[str]:
    return [stage for stage in STAGES if f"Running stage '{stage}'" in output]


def metrics(root) -> dict:
    return json.loads((root / "results/evaluate/metrics.json").read_text())


def set_param(root, section, key, value):
    params = yaml.safe_load((root / "params.yaml").read_text())
    params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def test_repro_runs_every_stage_then_nothing(project):
    assert ran(dvc(project, "repro")) == STAGES
    summary = metrics(project)
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["examples"] > 0
    per_class = json.loads((project / "results/evaluate/per_class.json").read_text())
    assert {row["class"] for row in per_class} == {"blue", "green", "red"}
    curve = (project / "results/train/plots/metrics/val/loss.tsv").read_text().splitlines()
    assert curve[0].split("\t") == ["step", "loss"] and len(curve) == 3  # header + 2 epochs
    assert json.loads((project / "artifacts/model/model.json").read_text())["classes"] == ["blue", "green", "red"]
    plots = project / "results/evaluate/plots"
    assert sorted(path.name for path in plots.glob("*.png")) == [
        "samples.png", "samples_augmented.png", "test_misclassified.png"]
    assert len(list((plots / "activations").glob("*.png"))) == 3  # simple_cnn's three convolutions

    assert ran(dvc(project, "repro")) == []
    assert "up to date" in dvc(project, "status")


def test_train_param_reruns_only_train_and_evaluate(project):
    set_param(project, "train", "learning_rate", 0.002)
    assert ran(dvc(project, "repro")) == ["train", "evaluate"]
    git(project, "checkout", "params.yaml")
    dvc(project, "repro")  # back to the committed run (restored from the run cache)


def test_switching_from_scratch_models_extracts_nothing(project):
    output = dvc(project, "repro", "-s", "extract-features", "--force")
    assert "no features to extract" in output
    features = json.loads((project / "data/features/features.json").read_text())
    assert features["features"] is None


def test_experiment_variant_and_metrics_diff(project):
    git(project, "add", "-A")
    git(project, "commit", "-qm", "baseline results")
    output = dvc(project, "exp", "run", "-S", "model=tutorial_cnn", "-S", "train.epochs=1")
    assert ran(output) == ["preprocess", "extract-features", "train", "evaluate"]
    assert "tutorial_cnn" in dvc(project, "exp", "show", "--csv")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "tutorial_cnn")
    diff = json.loads(dvc(project, "metrics", "diff", "HEAD~1", "--json"))
    accuracy = diff["results/evaluate/metrics.json"]["accuracy"]
    assert set(accuracy) >= {"old", "new"}


def test_plots_render_offline(project):
    dvc(project, "plots", "show")
    page = (project / "dvc_plots/index.html").read_text()
    assert "vegaEmbed" in page and "Confusion matrix" in page and "Per-class F1" in page
    for picture in ["samples.png", "samples_augmented.png", "test_misclassified.png", "activations/001_layers.0.png"]:
        name = "workspace_results_evaluate_plots_" + picture.replace("/", "_")
        assert f'<img src="static/{name}">' in page and (project / "dvc_plots/static" / name).is_file()
    assert "cdn.jsdelivr" not in page and "<script src=" not in page


def test_killed_train_stage_resumes(project):
    set_param(project, "train", "epochs", 60)
    shutil.rmtree(project / "checkpoints", ignore_errors=True)  # the finished runs' checkpoints
    command = [sys.executable, "-m", "stages.train"]
    process = subprocess.Popen(command, cwd=project, env=environment(project),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # A finished Orbax step is a folder named by its number (it writes into a *-tmp-* one first).
    while not any(path.name.isdigit() for path in (project / "checkpoints").glob("*")):
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()

    result = subprocess.run(command, cwd=project, env=environment(project), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "resuming from the checkpoint after epoch" in result.stdout
    git(project, "checkout", "params.yaml")


@pytest.fixture(scope="module")
def stand_in_weights(tmp_path_factory):
    """Keras-written random weights under the official file names, standing in for the downloads."""
    from flaxvision.conversion.weights import imagenet_weights
    from models.backbones import BACKBONES
    from tests import keras_files

    folder = tmp_path_factory.mktemp("weights")
    for name in models.TRANSFER_PRESETS["stacked"].backbones:
        model = keras_files.applications_model(BACKBONES[name].keras_class, include_top=False,
                                               input_shape=(32, 32, 3))
        file = imagenet_weights(name, include_top=False, input_shape=(32, 32, 3)).name
        keras_files.save_weights_only(model, folder / file)
    return folder


def test_stacked_model_end_to_end_then_head_only_experiments_reuse_the_features(project, stand_in_weights):
    output = dvc(project, "exp", "run", "-S", "model=stacked", "-S", f"pretrained={stand_in_weights}")
    assert ran(output)[-3:] == ["extract-features", "train", "evaluate"]
    features = json.loads((project / "data/features/features.json").read_text())
    assert features["backbones"] == ["resnet50v2", "densenet121"] and features["features"]
    assert np.load(project / "data/features/train.npy").shape[1] == 2048 + 1024
    assert 0.0 <= metrics(project)["accuracy"] <= 1.0

    output = dvc(project, "exp", "run", "-S", "model=stacked", "-S", f"pretrained={stand_in_weights}",
                 "-S", "train.learning_rate=0.0005")
    assert ran(output) == ["train", "evaluate"]
    git(project, "checkout", "params.yaml")
