"""Writing result files and folders so that a killed process never leaves a half-written one under
the real name, nor a temporary one where git, DVC or a user would take it for a result; and
checking, when reading a folder back, that its files are still the ones written (`SHA256SUMS`).

Temporaries go into the DVC project's ``.dvc/tmp/flaxvision/`` (git-ignored by DVC, and on the
target's filesystem, so the final rename stays atomic), or beside the target outside a DVC project.
Their names carry the writer's host and process id, and every write removes those whose writer has
died: a stage cannot rely on cleaning up after itself when it runs again, because DVC may restore
its outputs from the run cache without running it.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flaxvision.errors import UserError

TEMP_AREA = Path(".dvc/tmp/flaxvision")  # relative to the DVC project's root
CHECKSUMS = "SHA256SUMS"  # in the format of sha256sum, so `sha256sum -c SHA256SUMS` checks a folder too


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file, then rename it into place (atomic on one filesystem)."""
    path = Path(path)
    tmp = _temp_path(_temp_dir(path), path)
    try:
        with open(tmp, "xb") as file:
            file.write(data)
        os.replace(tmp, path)
    except OSError as error:  # a full disk, say: name the file being written, not its temporary
        _name_target(error, tmp, path)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, value: Any) -> None:  # any JSON value
    write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


@contextlib.contextmanager
def atomic_directory(final: Path) -> Iterator[Path]:
    """Yield an empty temp folder that replaces ``final`` on success.

    On any error the temp folder is removed and ``final`` is left as it was.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    temp_dir = _temp_dir(final)
    tmp = _temp_path(temp_dir, final)
    tmp.mkdir()
    try:
        yield tmp
        if final.is_dir() and not final.is_symlink():
            old = _temp_path(temp_dir, final)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old)
        else:
            if final.exists() or final.is_symlink():
                final.unlink()
            os.replace(tmp, final)
    except OSError as error:  # a full disk, say: name the folder being written, not its temporary
        _name_target(error, tmp, final)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_checksums(folder: Path) -> None:
    """Record the SHA-256 of every file under ``folder`` in ``folder/SHA256SUMS``, written last."""
    folder = Path(folder)
    files = sorted(path for path in folder.rglob("*") if path.is_file() and path.name != CHECKSUMS)
    lines = (f"{_sha256(path)}  {path.relative_to(folder).as_posix()}\n" for path in files)
    write_bytes(folder / CHECKSUMS, "".join(lines).encode())


def verify_checksums(folder: Path, fix: str) -> str:
    """The text of ``folder/SHA256SUMS`` once every file it lists has its recorded content; else a
    UserError naming the first damaged file and ``fix`` (what to run)."""
    if damage := find_damage(folder):
        raise UserError(f"{damage}: {fix}")
    return (Path(folder) / CHECKSUMS).read_text()


def find_damage(folder: Path) -> str:
    """What is wrong with ``folder`` by its SHA256SUMS, naming the file ('' if nothing)."""
    folder = Path(folder)
    try:
        recorded = [line.split("  ", 1) for line in (folder / CHECKSUMS).read_text().splitlines()]
        if not recorded or any(len(entry) != 2 or len(entry[0]) != 64 for entry in recorded):
            raise ValueError
    except (OSError, ValueError):
        return f"{folder / CHECKSUMS} is missing or unreadable, so {folder} cannot be trusted"
    for digest, name in recorded:
        path = folder / name
        try:
            if _sha256(path) != digest:
                return f"{path} is damaged (its content differs from {CHECKSUMS})"
        except OSError as error:
            return f"{path} is damaged ({error.strerror or type(error).__name__})"
    return ""


def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _name_target(error: OSError, temporary: Path, target: Path) -> None:
    """Make ``error`` name ``target`` where it names ``temporary`` (or anything in it) or no file."""
    if error.filename is None or str(error.filename).startswith(str(temporary)):
        error.filename = str(target)


def _temp_path(folder: Path, target: Path) -> Path:
    """A new name in ``folder`` for a temporary of ``target``, ending with its writer's host and pid."""
    return folder / f".{target.name}.{uuid.uuid4().hex[:8]}.{socket.gethostname()}-{os.getpid()}.tmp"


def _temp_dir(target: Path) -> Path:
    """The folder for ``target``'s temporaries, swept of those left by dead processes."""
    folder = parent = target.absolute().parent
    for ancestor in (parent, *parent.parents):
        if (ancestor / ".dvc").is_dir():
            area = ancestor / TEMP_AREA
            area.mkdir(parents=True, exist_ok=True)
            if area.stat().st_dev == parent.stat().st_dev:  # else a rename could not move it into place
                folder = area
            break
    _sweep(folder)
    return folder


def _sweep(folder: Path) -> None:
    """Remove this host's temporaries in ``folder`` whose process is gone (killed before cleaning up)."""
    owned = re.compile(rf"\.{re.escape(socket.gethostname())}-(\d+)\.tmp$")
    for entry in folder.iterdir():
        if (match := owned.search(entry.name)) and not _alive(int(match[1])):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True
