import pytest

from flaxvision.files import atomic_directory


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
