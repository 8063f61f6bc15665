"""Small generated data and a tiny copy of the DVC project, shared by the tests."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import yaml
from flax import nnx
from jax import lax
from PIL import Image

from tests.conftest import PROJECT_ROOT

PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "models", "flaxvision", ".dvc/config", ".dvc/plots"]


def pattern_images(count: int, size: int = 32, classes: int = 3, seed: int = 0):
    """uint8 images whose class is the colour of a bright square on a noisy background.

    Learnable in a few steps, so tests can check that training makes progress.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    images = rng.integers(0, 60, size=(count, size, size, 3), dtype=np.uint8)
    colours = np.eye(3, dtype=np.uint8)[np.arange(classes) % 3] * 200 + 40
    for image, label in zip(images, labels):
        top, left = rng.integers(0, size // 2, size=2)
        image[top:top + size // 2, left:left + size // 2] = colours[label]
    return images, labels.astype(np.int32)


def assert_conv_matches_lax(layer, x, strides: int, padding):
    """An nnx.Conv of models.layers, whichever path it takes, against lax.conv_general_dilated:
    values and gradients (the fast paths are differentiated by JAX, not written by hand).
    ``padding`` is as lax takes it."""

    def reference(x, kernel):
        return lax.conv_general_dilated(
            x, kernel, (strides, strides), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=layer.feature_group_count,
        ) + layer.bias[...]

    np.testing.assert_allclose(layer(x), reference(x, layer.kernel[...]), rtol=1e-5, atol=1e-5)
    want_x, want_kernel = jax.grad(lambda *a: jnp.sum(reference(*a) ** 2), (0, 1))(x, layer.kernel[...])
    got_x = jax.grad(lambda x: jnp.sum(layer(x) ** 2))(x)
    got_kernel = nnx.grad(lambda layer: jnp.sum(layer(x) ** 2))(layer).kernel[...]
    np.testing.assert_allclose(got_x, want_x, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_kernel, want_kernel, rtol=1e-4, atol=1e-3)


def make_project(root: Path, images_dir: Path, image_size: int = 32, **train) -> Path:
    """The real pipeline in a new git repo at ``root``, on 60 `pattern_images` of three classes
    written as PNG files into ``images_dir`` (params: ``data: folder:<images_dir>``, ``train``
    updated with ``train``); committed."""
    for name in PROJECT_FILES:
        source, target = PROJECT_ROOT / name, root / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
    # As the real .gitignore, and the compilation cache (FLAXVISION_CACHE below) stays out of git too.
    (root / ".gitignore").write_text("/checkpoints/\n/dvc_plots/\n/.downloads/\n__pycache__/\n")

    images, labels = pattern_images(60, size=image_size)
    for index, (image, label) in enumerate(zip(images, labels)):
        folder = images_dir / ["red", "green", "blue"][label]
        folder.mkdir(exist_ok=True)
        Image.fromarray(image).save(folder / f"{index}.png")

    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"] = f"folder:{images_dir}"
    params["preprocess"]["image_size"] = [image_size, image_size]
    params["train"].update(train)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "project")
    return root


def git(root: Path, *args) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, env=environment(root),
                          capture_output=True, text=True).stdout


def environment(root: Path) -> dict:
    """The environment for commands in the project at ``root``: this venv, offline, its own caches."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` = this venv
    env.update(GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com",
               FLAXVISION_CACHE=str(root / ".downloads"), DVC_NO_ANALYTICS="1")
    env.pop("DATA_MIRROR", None)
    return env


def dvc_command(*args) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def dvc(root: Path, *args, check=True) -> str:
    result = subprocess.run(dvc_command(*args), cwd=root, env=environment(root), capture_output=True,
                            text=True)
    output = result.stdout + result.stderr
    if check:
        assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{output}"
    return output
