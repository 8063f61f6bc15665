import os
from pathlib import Path

import pytest

# Keras is a test-only dependency (the parity tests); it must run on JAX, the only backend installed.
os.environ.setdefault("KERAS_BACKEND", "jax")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# The offline mirror of the seeds' datasets, beside the project (see README: offline mirror).
SHARED_DATASETS = Path(os.environ.get("DATA_MIRROR", PROJECT_ROOT.parent / "shared" / "datasets"))


def shared_file(name: str) -> Path:
    """A file of the shared dataset mirror, or skip the test with the reason."""
    path = SHARED_DATASETS / name
    if not path.is_file():
        pytest.skip(f"{path} not present (the shared dataset mirror is not beside the project)")
    return path
