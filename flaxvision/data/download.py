"""Getting dataset and weight files onto disk safely: mirror, cache, download, verification, extraction.

A file is looked for, in order, in the offline mirror (env ``DATA_MIRROR``, default
``../shared/datasets`` beside the project when it exists; read in place), in the download
cache (env ``FLAXVISION_CACHE``, default ``~/.cache/flaxvision/downloads``) and finally at its
official URL. Downloads stream to ``<name>.part`` beside the final file and are renamed only
once verified, so an interrupted download never leaves a file that looks complete.

Verification policy:

* a *published* sha256 or md5 (Keras publishes md5s for its weight files) must match (a
  mismatch is an error);
* otherwise a sha256 in the file's *known copies* verifies it;
* otherwise the file's own content check decides (a zip's per-member CRCs; an h5 file's
  keys and shapes), the size is compared with the official size where one is known, and a
  one-line notice says that the file is unverified.

Every file used is recorded (url, where it came from, size, sha256, verification result) in
``data/raw/PROVENANCE.json`` by the caller.
"""

import dataclasses
import hashlib
import http.client
import os
import shutil
import stat
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import NoReturn, cast

from tqdm import tqdm

from flaxvision.errors import UserError
from flaxvision.paths import cache_dir, project_root

CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """A dataset or weight file and what is known about its bytes."""

    name: str  # file name in the mirror and the cache (the URL's basename)
    url: str | None  # None: no public download; the user places the file by hand
    sha256: str | None = None  # published digest: must match
    md5: str | None = None  # published md5 (Keras' weight files): must match
    known_copies: Mapping[str, str] = dataclasses.field(default_factory=dict)  # sha256 -> which copy
    size: int | None = None  # size of the official file, where known
    check: Callable[[Path], str] | None = None  # content check: raises UserError, returns what it checked
    manual: str = ""  # for url=None: how the user gets the file


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """Provenance of one file used to build data/raw (written to PROVENANCE.json)."""

    name: str
    url: str | None
    source: str  # "offline mirror", or the URL it was downloaded from
    size: int
    sha256: str
    verification: str


def mirror_dir() -> Path | None:
    """The offline mirror folder: $DATA_MIRROR, else ../shared/datasets beside the project if it exists."""
    configured = os.environ.get("DATA_MIRROR")
    if configured:
        path = project_root() / configured
        if not path.is_dir():
            raise UserError(
                f"DATA_MIRROR={configured} is not a directory: set it to the folder of dataset files, or unset it"
            )
        return path
    default = project_root() / ".." / "shared" / "datasets"
    return default if default.is_dir() else None


def fetch(file: RemoteFile) -> tuple[Path, FileRecord]:
    """The verified local path of ``file`` (mirror, cache or fresh download) and its record."""
    mirror = mirror_dir()
    if mirror is not None and (mirror / file.name).is_file():
        path = mirror / file.name
        # Not the path: PROVENANCE.json (and so the hash of data/raw) must not depend on where the
        # mirror is mounted.
        return path, verify(file, path, source="offline mirror")
    cached = cache_dir() / file.name
    if cached.is_file():
        return cached, verify(file, cached, source=file.url or "download cache")
    if file.url is None:
        where = f"in the mirror {mirror}" if mirror is not None else "(no DATA_MIRROR set)"
        raise UserError(f"{file.name} not found {where} or the download cache {cache_dir()}: {file.manual}")
    record = download(file, cached, mirror)
    return cached, record


def identify_files(files: Sequence[RemoteFile]) -> list[dict]:
    """What data/source.json records of ``files``: name, url and content (size, SHA-256), fetched first."""
    records = (fetch(file)[1] for file in files)
    return [{"name": r.name, "url": r.url, "size": r.size, "sha256": r.sha256} for r in records]


def download(file: RemoteFile, dest: Path, mirror: Path | None = None) -> FileRecord:
    """Stream ``file.url`` to ``dest`` through ``dest.part``; verify before the final rename."""
    url = cast(str, file.url)  # only files with a URL are downloaded
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        try:
            response = urllib.request.urlopen(url, timeout=60)
        except (urllib.error.URLError, OSError) as error:
            looked = mirror if mirror is not None else "no DATA_MIRROR set"
            raise UserError(
                f"cannot download {file.url} ({getattr(error, 'reason', error)}); offline? put "
                f"{file.name} in a folder and set DATA_MIRROR to it (looked in: {looked}), "
                f"or into the download cache {dest.parent}"
            ) from None
        with response:
            expected = int(response.headers.get("Content-Length") or 0) or None
            try:
                received = _stream(response, part, expected, file.name)
            except (OSError, http.client.HTTPException) as error:
                raise UserError(f"download of {file.url} failed ({error}): rerun to retry") from None
        if expected is not None and received != expected:
            raise UserError(f"download of {file.url} stopped at {received} of {expected} bytes: rerun to retry")
        record = verify(file, part, source=url, label=file.name)
        os.replace(part, dest)
        return record
    finally:
        part.unlink(missing_ok=True)


def _stream(response: http.client.HTTPResponse, part: Path, expected: int | None, name: str) -> int:
    received = 0
    with (
        open(part, "wb") as out,
        tqdm(total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=name, disable=None) as bar,
    ):
        while chunk := response.read(CHUNK):
            out.write(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return received


def verify(file: RemoteFile, path: Path, source: str, label: str | None = None) -> FileRecord:
    """Apply the verification policy (module docstring) to ``path``; raise UserError on failure."""
    label = label or str(path)
    digest = sha256(path)
    size = path.stat().st_size
    if file.sha256 is not None or file.md5 is not None:
        algorithm, expected = ("sha256", file.sha256) if file.sha256 is not None else ("md5", file.md5)
        actual = digest if algorithm == "sha256" else file_digest(path, algorithm)
        if actual != expected:
            raise UserError(
                f"{label}: {algorithm} {actual} does not match the published {expected}: "
                "the file is corrupt or not the official one; delete it and rerun"
            )
        result = f"{algorithm} matches the published digest"
    elif digest in file.known_copies:
        result = f"sha256 matches a known copy ({file.known_copies[digest]})"
    else:
        checks = []
        if file.size is not None:
            official = f"the official {file.size:,} bytes"
            checks.append(f"size matches {official}" if size == file.size else f"size differs from {official}")
        if file.check is not None:
            checks.append(file.check(path))
        result = "unverified (no published checksum): " + "; ".join(checks or ["no content check"])
        print(f"notice: {label}: {result}; sha256 {digest}", file=sys.stderr)
    return FileRecord(file.name, file.url, source, size, digest, result)


def sha256(path: Path) -> str:
    return file_digest(path, "sha256")


def file_digest(path: Path, algorithm: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def check_zip(path: Path) -> str:
    """Content check for zip archives: every member's CRC."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise UserError(f"{path}: not a readable zip archive ({error}); delete it and rerun") from None
    if bad is not None:
        raise UserError(f"{path}: member {bad} fails its CRC check; delete the archive and rerun")
    return "zip CRCs ok"


def extract_zip(archive: Path, dest: Path) -> None:
    """Extract ``archive`` into ``dest``, refusing members that would land outside it."""
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                _check_member(archive, member, zf)
            zf.extractall(dest)
    except zipfile.BadZipFile as error:
        raise UserError(f"{archive}: corrupt zip archive ({error}); delete it and rerun") from None


def _check_member(archive: Path, member: zipfile.ZipInfo, zf: zipfile.ZipFile) -> None:
    name = member.filename
    if _escapes(PurePosixPath(name)):
        raise UserError(f"{archive}: refusing unsafe member path {name!r}")
    if stat.S_ISLNK(member.external_attr >> 16):
        target = PurePosixPath(zf.read(member).decode("utf-8", "replace"))
        if _escapes(PurePosixPath(name).parent / target):
            raise UserError(f"{archive}: refusing member {name!r}, a link to {str(target)!r} outside it")


def _escapes(path: PurePosixPath) -> bool:
    """True if ``path`` is absolute or climbs above its starting folder."""
    if path.is_absolute():
        return True
    depth = 0
    for part in path.parts:
        depth += -1 if part == ".." else part != "."
        if depth < 0:
            return True
    return False


def link_or_copy(src: Path, dest: Path) -> None:
    """Hardlink ``src`` to ``dest`` (instant, no extra space), or copy where linking fails."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
    except OSError:  # another filesystem, or a file we do not own (protected_hardlinks)
        shutil.copy2(src, dest)


def snapshot_tree(src: Path, dest: Path) -> tuple[int, int]:
    """Mirror the visible files of ``src`` into ``dest``; returns (files, bytes).

    Links to folders and files are followed (the snapshot holds what they point to), so a
    class folder that is a link is not dropped; see ``visible_tree`` for what is refused.
    """
    files = size = 0
    for folder, filenames in visible_tree(src):
        target = dest / folder.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for filename in filenames:
            link_or_copy(folder / filename, target / filename)
            files += 1
            size += (target / filename).stat().st_size
    return files, size


def visible_tree(src: Path) -> Iterator[tuple[Path, list[str]]]:
    """(folder, its visible regular files' names) for ``src`` and each visible folder under it,
    top-down and sorted, following links.

    A link to nothing, a link back to a folder it is in (the walk would never end) and an
    unreadable folder are UserErrors naming them: a file is never left out without a word.
    """

    def unreadable(error: OSError) -> NoReturn:
        raise UserError(f"{error.filename}: cannot read the folder ({error.strerror}): fix its permissions")

    # The real folders from src down to each folder, to recognise a link that loops.
    chains = {str(src): {os.path.realpath(src)}}
    for folder, dirnames, filenames in os.walk(src, onerror=unreadable, followlinks=True):
        chain = chains.pop(folder)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in dirnames:
            path = os.path.join(folder, name)
            real = os.path.realpath(path)
            if real in chain:
                raise UserError(
                    f"{path} leads back to {real}, a folder above it (a link loops), so the tree "
                    "has no end: remove that link"
                )
            chains[path] = chain | {real}
        visible = []
        for name in sorted(f for f in filenames if not f.startswith(".")):
            path = os.path.join(folder, name)
            if os.path.islink(path) and not os.path.exists(path):
                raise UserError(
                    f"{path}: a link to {os.readlink(path)}, which does not exist: "
                    "remove the link or restore its target"
                )
            if os.path.isfile(path):  # not sockets or pipes (reading a pipe would wait forever)
                visible.append(name)
        yield Path(folder), visible


def tree_digest(src: Path) -> tuple[int, int, str]:
    """(files, bytes, sha256) of the files ``snapshot_tree`` would copy: their paths and contents."""
    files = size = 0
    digest = hashlib.sha256()
    for folder, filenames in visible_tree(src):
        for filename in filenames:
            path = folder / filename
            digest.update(f"{path.relative_to(src).as_posix()}\0{sha256(path)}\n".encode())
            files += 1
            size += path.stat().st_size
    return files, size, digest.hexdigest()
