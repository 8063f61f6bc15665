import os
import socket
import subprocess
import sys

import pytest

from flaxvision.files import TEMP_AREA, atomic_directory, write_bytes


def test_atomic_directory_replaces_the_folder_only_on_success(tmp_path):
    final = tmp_path / "data" / "raw"
    with atomic_directory(final) as tmp:
        (tmp / "v1").write_text("1")
    assert [p.name for p in final.iterdir()] == ["v1"]

    with pytest.raises(RuntimeError), atomic_directory(final) as tmp:
        (tmp / "half").write_text("written")
        raise RuntimeError("crash while building")
    assert [p.name for p in final.iterdir()] == ["v1"]

    with atomic_directory(final) as tmp:
        (tmp / "v2").write_text("2")
    assert [p.name for p in final.iterdir()] == ["v2"]
    assert sorted(p.name for p in final.parent.iterdir()) == ["raw"], "no temp folders left behind"


def test_temporaries_of_a_dvc_project_stay_in_its_dvc_tmp(tmp_path):
    (tmp_path / ".dvc").mkdir()
    final = tmp_path / "data" / "raw"
    with atomic_directory(final) as tmp:
        assert tmp.parent == tmp_path / TEMP_AREA
        write_bytes(tmp / "file", b"x")
        assert list(final.parent.iterdir()) == [], "nothing beside the output while it is written"
    write_bytes(tmp_path / "metrics.json", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dvc", "data", "metrics.json"]
    assert list((tmp_path / TEMP_AREA).iterdir()) == []


def test_temporaries_of_dead_processes_are_swept_by_the_next_write(tmp_path):
    (tmp_path / ".dvc").mkdir()
    area = tmp_path / TEMP_AREA
    area.mkdir(parents=True)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    ).stdout.strip()
    host = socket.gethostname()
    (area / f".raw.0a1b2c3d.{host}-{dead}.tmp").mkdir()  # a folder left by a killed download
    (area / f".metrics.json.0a1b2c3d.{host}-{dead}.tmp").write_text("{")
    writing = area / f".plots.0a1b2c3d.{host}-{os.getpid()}.tmp"  # its writer is alive
    writing.mkdir()
    elsewhere = area / f".x.0a1b2c3d.other-host-{dead}.tmp"  # the pid is another host's
    elsewhere.mkdir()

    write_bytes(tmp_path / "out.json", b"{}")
    assert sorted(area.iterdir()) == sorted([writing, elsewhere])
