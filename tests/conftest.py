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


# The files whose tests take longest (pyproject.toml's --durations shows them in a CI log).
LONGEST_FIRST = ("test_portable_bits.py", "test_pipeline.py", "test_kill.py", "test_backbones.py", "test_export.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, then the other slow tests, each file's in its own order: the
    pytest-xdist workers (one file each at a time) start on the longest work and end on short
    files that even out their finishing times."""

    def order(item: pytest.Item) -> tuple[bool, int]:
        name = item.path.name
        return item.get_closest_marker("slow") is None, LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(
            LONGEST_FIRST
        )

    items.sort(key=order)
