"""The fixtures several test files share, and the environment every test runs in.

Tests do not import this file (pytest loads it): plain helpers are in tests/helpers.py.
"""

import os
import urllib.error
import urllib.request
from pathlib import Path

import pytest

# Keras is a test-only dependency (the parity tests); it must run on JAX, the only backend installed.
os.environ.setdefault("KERAS_BACKEND", "jax")


@pytest.fixture
def offline(monkeypatch):
    """No network: urllib's urlopen fails as it does offline (a test may serve its own)."""

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)


@pytest.fixture
def mirror(tmp_path, monkeypatch, offline) -> Path:
    """An empty offline mirror (DATA_MIRROR, tmp_path/mirror), a private download and conversion
    cache (FLAXVISION_CACHE, tmp_path/cache, not made), no network."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    monkeypatch.setenv("DATA_MIRROR", str(folder))
    monkeypatch.setenv("FLAXVISION_CACHE", str(tmp_path / "cache"))
    return folder


@pytest.fixture
def offline_project(tmp_path, monkeypatch, mirror) -> Path:
    """A project folder as cwd (tmp_path/project), the empty mirror and private cache beside it,
    no network: where the stages run in-process."""
    root = tmp_path / "project"
    root.mkdir()
    monkeypatch.chdir(root)
    return root


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slow tests first, each file's in its own order: pytest-xdist's workers then start on the
    longest work and end on short tests that even out their finishing times."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
