"""atomic_path: all-or-nothing output, ordinary file permissions, unwritable targets as SACError."""

from __future__ import annotations

import os
import stat

import pytest

from sac.atomic import atomic_path, atomic_write_text, check_writable
from sac.errors import SACError


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp.exists()
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_new_files_get_umask_permissions_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o002)
        atomic_write_text(tmp_path / "b.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "b.txt").stat().st_mode) == 0o664


def test_unwritable_targets_raise_sacerror_naming_them(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    with pytest.raises(SACError, match=f"cannot write {folder}: it is a folder"):
        atomic_write_text(folder, "x")
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SACError, match=f"cannot write {blocker / 'sub' / 'out.json'}"):
        atomic_write_text(blocker / "sub" / "out.json", "x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "results"]
    assert list(folder.iterdir()) == []


def test_check_writable_probes_without_leaving_anything(tmp_path):
    check_writable(tmp_path / "new" / "deeper" / "r.json")  # folders that do not exist yet are fine
    assert list(tmp_path.iterdir()) == []  # nothing created, not even the folders
    (tmp_path / "file").write_text("x")
    for bad, why in ((tmp_path, "it is a folder"), (tmp_path / "file" / "r.json", "is not a folder")):
        with pytest.raises(SACError, match=f"cannot write {bad}: .*{why}"):
            check_writable(bad)
    assert [p.name for p in tmp_path.iterdir()] == ["file"]
