"""Where the project and the cache are. No project imports, so any module can use them without an
import cycle: flaxvision.runtime, which flaxvision.errors loads, needs cache_dir, and the data code needs errors."""

import os
from pathlib import Path

DEFAULT_CACHE = Path("~/.cache/flaxvision/downloads")


def project_root() -> Path:
    """The DVC project's root, against which relative paths of params and DATA_MIRROR resolve.

    DVC runs a stage with $DVC_ROOT set to the project's root, also when it runs the stage in a
    copy of the project (``dvc exp run --temp``, queued experiments), where the working directory
    is that copy under .dvc/tmp.
    """
    return Path(os.environ.get("DVC_ROOT") or ".")


def cache_dir() -> Path:
    """$FLAXVISION_CACHE, else ~/.cache/flaxvision/downloads: downloads, converted weights, XLA programs."""
    return Path(os.environ.get("FLAXVISION_CACHE") or DEFAULT_CACHE).expanduser()
