"""Throw-away copies of this DVC project in temporary git repos, their data, and git and DVC run
in them: what the end-to-end files (test_pipeline.py, test_kill.py) share."""

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import yaml
from PIL import Image

from tests.helpers import CLASSES, PROJECT_ROOT, STAGES, pattern_images, write_tree

PROJECT_FILES = [
    "dvc.yaml",
    "params.yaml",
    "uv.lock",
    "stages",
    "models",
    "flaxvision",
    ".dvc/config",
    ".dvc/plots",
    ".dvcignore",
]


def new_project(root: Path, data: str, **train) -> Path:
    """The project's code and pipeline at ``root``, committed, on ``data`` at 32×32 (train
    params: 2 epochs, batch 8, then ``train``)."""
    for name in PROJECT_FILES:
        source, target = PROJECT_ROOT / name, root / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    # As the real .gitignore, and the compilation cache (FLAXVISION_CACHE below) stays out of git too.
    (root / ".gitignore").write_text("/checkpoints/\n/dvc_plots/\n/.downloads/\n__pycache__/\n")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"] = data
    params["preprocess"]["image_size"] = [32, 32]
    params["train"].update({"epochs": 2, "batch_size": 8, **train})
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(root, "init", "-q")
    commit(root, "project")
    return root


def image_folder(folder: Path, count: int = 60) -> Path:
    """A ``<class>/<image>.png`` tree of learnable 32×32 pattern images, ``count`` in all, a class
    per square colour (red, green, blue)."""
    write_tree(folder, {name: count // len(CLASSES) for name in CLASSES}, size=32)
    return folder


def cats_vs_dogs_zip(path: Path, count: int = 60) -> Path:
    """A small stand-in for cats_and_dogs_filtered.zip, with its layout (train/, validation/)."""
    images, labels = pattern_images(count, size=32, classes=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for index, (image, label) in enumerate(zip(images, labels, strict=True)):
            split = "train" if index < count * 2 // 3 else "validation"
            png = io.BytesIO()
            Image.fromarray(image).save(png, format="PNG")
            archive.writestr(f"cats_and_dogs_filtered/{split}/{['cats', 'dogs'][label]}/{index}.png", png.getvalue())
    return path


def environment(root: Path) -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` = this venv
    env.update(
        GIT_AUTHOR_NAME="test",
        GIT_AUTHOR_EMAIL="test@example.com",
        GIT_COMMITTER_NAME="test",
        GIT_COMMITTER_EMAIL="test@example.com",
        FLAXVISION_CACHE=str(root / ".downloads"),
        DVC_NO_ANALYTICS="1",
    )
    env.pop("DATA_MIRROR", None)
    return env


def git(root: Path, *args) -> str:
    return subprocess.run(
        ["git", *args], cwd=root, check=True, env=environment(root), capture_output=True, text=True
    ).stdout


def commit(root: Path, message: str):
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)


def dvc_command(*args) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def dvc(root: Path, *args, check=True) -> str:
    result = subprocess.run(dvc_command(*args), cwd=root, env=environment(root), capture_output=True, text=True)
    output = result.stdout + result.stderr
    if check:
        assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{output}"
    return output


def ran(output: str) -> list[str]:
    return [stage for stage in STAGES if f"Running stage '{stage}'" in output]


def metrics(root: Path) -> dict:
    """The test metrics evaluate wrote."""
    return json.loads((root / "results/evaluate/metrics.json").read_text())["test"]


def experiments(root) -> dict:
    """{experiment name: {"params": ..., "metrics": ...}} of `dvc exp show --json`."""
    found = {}
    for baseline in json.loads(dvc(root, "exp", "show", "--json")):
        for experiment in baseline.get("experiments") or []:
            for revision in experiment["revs"]:
                data = revision["data"]
                found[revision.get("name") or revision["rev"]] = {
                    "params": data["params"]["params.yaml"]["data"],
                    "metrics": data["metrics"]["results/evaluate/metrics.json"]["data"]["test"],
                }
    return found
