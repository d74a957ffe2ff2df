"""models.trash: a deleted original goes into the trash whole or not at all."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from models import trash
from tests.helpers import fill, mounted_tmpfs


def _original(tmp_path: Path, size: int = 64 * 1024) -> Path:
    source = tmp_path / "data" / "originals" / "a.jpg"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"\xd8" * size)
    return source


def test_staged_files_take_their_names_only_when_kept(tmp_path: Path) -> None:
    source = _original(tmp_path)
    body = source.read_bytes()
    trash_dir = tmp_path / "trash"

    staged = trash.stage([(source, "7-a.jpg"), (tmp_path / "no-note.txt", "7-a.jpg.error.txt")], trash_dir)

    assert source.read_bytes() == body  # still in the data folder until the record is gone
    (temporary,) = trash_dir.iterdir()
    assert temporary.name.startswith(".7-a.jpg.") and temporary.name.endswith(".tmp")
    staged.keep()
    assert [path.name for path in trash_dir.iterdir()] == ["7-a.jpg"]
    assert (trash_dir / "7-a.jpg").read_bytes() == body and not source.exists()


def test_discard_leaves_the_trash_as_it_was(tmp_path: Path) -> None:
    source = _original(tmp_path)
    trash_dir = tmp_path / "trash"
    trash.stage([(source, "7-a.jpg")], trash_dir).discard()
    assert list(trash_dir.iterdir()) == [] and source.is_file()


def test_a_trash_that_is_a_file_is_broken_not_full(tmp_path: Path) -> None:
    source = _original(tmp_path)
    (tmp_path / "trash").write_text("not a folder")
    with pytest.raises(trash.TrashUnavailable) as refused:
        trash.stage([(source, "7-a.jpg")], tmp_path / "trash")
    assert refused.value.full is False
    assert source.is_file() and (tmp_path / "trash").read_text() == "not a folder"


def test_a_read_only_trash_is_broken_not_full(tmp_path: Path) -> None:
    source = _original(tmp_path)
    with mounted_tmpfs(tmp_path / "trash", "1m") as trash_dir:
        subprocess.run(["mount", "-o", "remount,ro", str(trash_dir)], check=True)
        with pytest.raises(trash.TrashUnavailable) as refused:
            trash.stage([(source, "7-a.jpg")], trash_dir)
        assert refused.value.full is False and list(trash_dir.iterdir()) == []
    assert source.is_file()


def test_a_full_trash_on_another_disk_keeps_no_part_of_the_copy(tmp_path: Path) -> None:
    source = _original(tmp_path, size=512 * 1024)
    with mounted_tmpfs(tmp_path / "trash", "1m") as trash_dir:
        filler = fill(trash_dir)
        filler.write_bytes(filler.read_bytes()[: -256 * 1024])  # room, but less than the original
        with pytest.raises(trash.TrashUnavailable) as refused:
            trash.stage([(source, "7-a.jpg")], trash_dir)
        assert refused.value.full is True
        assert [path.name for path in trash_dir.iterdir()] == ["filler"]
    assert source.stat().st_size == 512 * 1024


def test_a_copy_across_disks_is_whole_once_kept(tmp_path: Path) -> None:
    source = _original(tmp_path, size=300 * 1024)
    body = source.read_bytes()
    with mounted_tmpfs(tmp_path / "trash", "4m") as trash_dir:
        staged = trash.stage([(source, "7-a.jpg")], trash_dir)
        assert not (trash_dir / "7-a.jpg").exists()
        staged.keep()
        assert (trash_dir / "7-a.jpg").read_bytes() == body
    assert not source.exists()
