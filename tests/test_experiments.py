"""DVC's own experiment machinery: `dvc exp run --temp` and queued experiments run in a copy of the
project under .dvc/tmp, where the default mirror (../shared/datasets) and relative `folder:` paths
must still resolve against the project's root, as in the workspace."""

import json
import time

import pytest

from tests.projects import cats_vs_dogs_zip, commit, dvc, image_folder, new_project, ran

QUEUE_TIMEOUT = 600


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with a relative folder: dataset and the default mirror beside it, reproduced."""
    base = tmp_path_factory.mktemp("beside")
    image_folder(base / "images")
    cats_vs_dogs_zip(base / "shared" / "datasets" / "cats_and_dogs_filtered.zip")
    root = new_project(base / "project", "folder:../images")
    dvc(root, "repro")
    commit(root, "results")
    return root


def experiments(root) -> dict:
    """{experiment name: {"params": ..., "metrics": ...}} of `dvc exp show --json`."""
    found = {}
    for baseline in json.loads(dvc(root, "exp", "show", "--json")):
        for experiment in baseline.get("experiments") or []:
            for revision in experiment["revs"]:
                data = revision["data"]
                found[revision.get("name") or revision["rev"]] = {
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": data["metrics"]["results/evaluate/metrics.json"]["data"],
                }
    return found


def test_temp_experiment_finds_the_default_mirror(project):
    output = dvc(project, "exp", "run", "--temp", "-n", "temp-mirror", "-S", "data=cats_vs_dogs")
    assert ran(output)[:2] == ["source", "download"]
    assert "offline mirror" in output
    run = experiments(project)["temp-mirror"]
    assert run["params"]["data"] == "cats_vs_dogs" and 0 <= run["metrics"]["accuracy"] <= 1


def test_queued_grid_resolves_relative_folder(project):
    output = dvc(project, "exp", "run", "--queue", "-S", "train.learning_rate=0.001,0.0003")
    assert output.count("Queued experiment") == 2
    dvc(project, "queue", "start")
    deadline = time.monotonic() + QUEUE_TIMEOUT
    while any(state in (status := dvc(project, "queue", "status")) for state in ("Queued", "Running")):
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert "Failed" not in status, status
    runs = [run for run in experiments(project).values() if run["params"]["data"] == "folder:../images"]
    rates = sorted(run["params"]["train"]["learning_rate"] for run in runs)
    assert rates == [0.0003, 0.001]
    assert all(0 <= run["metrics"]["accuracy"] <= 1 for run in runs)
