"""flaxvision.data.download: mirror, cache, verified and atomic downloads, safe extraction."""

import hashlib
import io
import urllib.request
import zipfile

import pytest

from flaxvision.data import download as dl
from flaxvision.errors import UserError

URL = "https://example.invalid/files/data.zip"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch, offline):
    """No mirror, a private cache, and no network unless a test fakes it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATA_MIRROR", raising=False)
    monkeypatch.setenv("FLAXVISION_CACHE", str(tmp_path / "cache"))


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def remote(**kwargs) -> dl.RemoteFile:
    return dl.RemoteFile(name="data.zip", url=URL, check=dl.check_zip, **kwargs)


class FakeResponse(io.BytesIO):
    """What urlopen returns: a readable body with headers; fails after ``fail_after`` bytes."""

    def __init__(self, data: bytes, length: int | None = None, fail_after: int | None = None, error=OSError):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data) if length is None else length)}
        self.fail_after, self.error = fail_after, error

    def read(self, size=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise self.error("connection reset")
        return super().read(min(size, 100))


def serve(monkeypatch, response: FakeResponse) -> list[str]:
    calls = []

    def urlopen(url, timeout=None):
        calls.append(url)
        return response

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return calls


def test_mirror_file_is_read_in_place_and_verified_by_a_known_copy(tmp_path, monkeypatch):
    data = zip_bytes({"a.txt": b"a"})
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "data.zip").write_bytes(data)
    monkeypatch.setenv("DATA_MIRROR", str(mirror))
    digest = hashlib.sha256(data).hexdigest()

    path, record = dl.fetch(remote(known_copies={digest: "test copy"}))

    assert path == mirror / "data.zip"
    assert record.source == "offline mirror" and record.sha256 == digest
    assert record.verification == "sha256 matches a known copy (test copy)"
    assert not (tmp_path / "cache").exists()


def test_default_mirror_is_shared_datasets_beside_the_project(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (tmp_path / "shared" / "datasets").mkdir(parents=True)
    project.mkdir()
    monkeypatch.chdir(project)
    assert dl.mirror_dir() == dl.Path("../shared/datasets")


def test_published_checksum_mismatch_is_an_error(tmp_path, monkeypatch):
    (tmp_path / "data.zip").write_bytes(zip_bytes({"a.txt": b"a"}))
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path))
    with pytest.raises(UserError, match="does not match the published 0000"):
        dl.fetch(remote(sha256="0" * 64))


def test_unknown_copy_is_checked_by_size_and_crc_with_a_notice(tmp_path, monkeypatch, capsys):
    data = zip_bytes({"a.txt": b"a" * 1000})
    (tmp_path / "data.zip").write_bytes(data)
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path))

    _, record = dl.fetch(remote(size=len(data)))

    assert record.verification == (
        f"unverified (no published checksum): size matches the official {len(data):,} bytes; zip CRCs ok"
    )
    notice = capsys.readouterr().err.strip()
    assert notice.startswith("notice: ") and "\n" not in notice and record.sha256 in notice


def test_corrupt_zip_fails_its_crc_check(tmp_path, monkeypatch):
    data = bytearray(zip_bytes({"a.txt": b"a" * 1000}))
    data[data.index(b"a" * 1000) + 10] = ord("b")  # stored uncompressed: flip one byte of content
    (tmp_path / "data.zip").write_bytes(bytes(data))
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path))
    with pytest.raises(UserError, match="a.txt fails its CRC check"):
        dl.fetch(remote())


def test_download_streams_through_part_file_into_the_cache(tmp_path, monkeypatch):
    data = zip_bytes({"a.txt": b"x" * 500})
    calls = serve(monkeypatch, FakeResponse(data))

    path, record = dl.fetch(remote(known_copies={hashlib.sha256(data).hexdigest(): "test"}))

    assert path == tmp_path / "cache" / "data.zip" and path.read_bytes() == data
    assert record.source == URL and calls == [URL]
    assert list((tmp_path / "cache").iterdir()) == [path]
    dl.fetch(remote(known_copies={hashlib.sha256(data).hexdigest(): "test"}))
    assert calls == [URL], "a cached file is not downloaded again"


@pytest.mark.parametrize(
    "response, expected",
    [
        (FakeResponse(b"x" * 1000, fail_after=300), UserError),  # connection dropped
        (FakeResponse(b"x" * 1000, fail_after=300, error=KeyboardInterrupt), KeyboardInterrupt),
        (FakeResponse(b"x" * 300, length=1000), UserError),  # body shorter than announced
        (FakeResponse(b"not a zip"), UserError),  # complete but fails verification
    ],
)
def test_failed_download_leaves_neither_file_nor_part(tmp_path, monkeypatch, response, expected):
    serve(monkeypatch, response)
    with pytest.raises(expected):
        dl.fetch(remote())
    assert list((tmp_path / "cache").iterdir()) == []


def test_offline_and_not_in_mirror_names_url_file_and_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path))
    with pytest.raises(UserError) as error:
        dl.fetch(remote())
    message = str(error.value)
    assert URL in message and "put data.zip in a folder and set DATA_MIRROR" in message
    assert str(tmp_path) in message and "\n" not in message


def test_manual_file_missing_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path / "mirror"))
    monkeypatch.setenv("FLAXVISION_CACHE", str(tmp_path / "cache"))
    (tmp_path / "mirror").mkdir()
    file = dl.RemoteFile(name="manual.h5", url=None, manual="ask the course staff")
    with pytest.raises(
        UserError,
        match=f"manual.h5 not found in the mirror {tmp_path / 'mirror'} or the "
        f"download cache {tmp_path / 'cache'}: ask the course staff",
    ):
        dl.fetch(file)


def test_manual_file_in_the_download_cache_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_MIRROR", str(tmp_path))
    monkeypatch.setenv("FLAXVISION_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "manual.bin").write_bytes(b"placed by hand")
    path, record = dl.fetch(dl.RemoteFile(name="manual.bin", url=None, manual="ask the course staff"))
    assert path == tmp_path / "cache" / "manual.bin" and record.source == "download cache"


@pytest.mark.parametrize("member", ["../evil.txt", "/etc/evil.txt", "ok/../../evil.txt"])
def test_extract_rejects_path_traversal(tmp_path, member):
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fine.txt", b"fine")
        zf.writestr(zipfile.ZipInfo(member), b"evil")  # ZipInfo keeps the name as given
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(UserError, match=f"bad.zip: refusing unsafe member path '{member}'"):
        dl.extract_zip(archive, dest)
    assert list(dest.iterdir()) == []


def test_extract_rejects_links_pointing_outside(tmp_path):
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, target in (("a/inside", "../b/file"), ("a/outside", "../../etc/passwd")):
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16  # a symlink
            zf.writestr(info, target)
    with pytest.raises(UserError, match="'a/outside', a link to '../../etc/passwd' outside"):
        dl.extract_zip(archive, tmp_path / "out")


def test_snapshot_hardlinks_visible_files(tmp_path):
    src = tmp_path / "src"
    (src / "a" / ".hidden").mkdir(parents=True)
    (src / "a" / "x.jpg").write_bytes(b"x")
    (src / ".DS_Store").write_bytes(b"")
    files, size = dl.snapshot_tree(src, tmp_path / "dest")
    assert (files, size) == (1, 1)
    assert (tmp_path / "dest" / "a" / "x.jpg").stat().st_ino == (src / "a" / "x.jpg").stat().st_ino
