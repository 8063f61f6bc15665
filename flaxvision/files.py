"""Writing result files so that a killed process never leaves a half-written one under the real name."""

import json
from pathlib import Path


def write_bytes(path: Path, data: bytes):
    """Write ``data`` beside ``path``, then rename it into place (atomic on one filesystem)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_json(path: Path, value):
    write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())
