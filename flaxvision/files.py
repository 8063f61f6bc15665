"""Writing result files and folders so that a killed process never leaves a half-written one under
the real name."""

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def write_bytes(path: Path, data: bytes):
    """Write ``data`` beside ``path``, then rename it into place (atomic on one filesystem)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_json(path: Path, value):
    write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield an empty temp folder beside ``final`` that replaces ``final`` on success.

    On any error the temp folder is removed and ``final`` is left as it was.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.*-tmp"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix="-tmp", dir=final.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", suffix="-tmp", dir=final.parent))
            os.replace(final, old / final.name)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            if final.exists() or final.is_symlink():
                final.unlink()
            os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
