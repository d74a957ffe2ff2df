"""`htx storage gc` and `htx storage copy`, through the command line, on both stores (the data
folder and a real SeaweedFS bucket), with a database made as the daemon makes it."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from daemon.cli import main
from daemon.database import records
from models import config as config_module
from models import migrate
from models.config import Config
from models.db import make_engine
from models.store import Store, incoming_key, note_key, original_key, thumbnail_key
from models.store_sweep import listed_objects
from models.stores import open_store
from tests.conftest import s3_storage
from tests.helpers import write_toml

HOUR = 3600


def _sha(number: int) -> str:
    return hashlib.sha256(f"image {number}".encode()).hexdigest()


def _put(store: Store, key: str, data: bytes) -> None:
    store.write(key, lambda handle: handle.write(data))


def _config_file(tmp_path: Path, storage: dict[str, Any]) -> tuple[Path, Config]:
    path = write_toml(tmp_path / "htx.toml", {"paths": {"data_dir": str(tmp_path / "data")}, "caption": {"model": "none"}, "storage": storage})
    config = config_module.load(path)
    engine = make_engine(config.database_url)
    migrate.upgrade(engine)
    engine.dispose()
    return path, config


def _add_done(config: Config, store: Store, number: int) -> dict[str, str]:
    """A done image's row and its three objects (original bytes: its name's digest)."""
    data = f"image {number}".encode()
    sha = hashlib.sha256(data).hexdigest()
    keys = {"stored_path": original_key(sha, "jpg"), "thumb_small_path": thumbnail_key(sha, "small", "jpg"),
            "thumb_medium_path": thumbnail_key(sha, "medium", "jpg")}
    _put(store, keys["stored_path"], data)
    _put(store, keys["thumb_small_path"], data + b" small")
    _put(store, keys["thumb_medium_path"], data + b" medium")
    engine = make_engine(config.database_url)
    with engine.begin() as connection:
        image_id = records.insert_pending(connection, sha256=sha, filename=f"{number}.jpg", inbox_path=None, size_bytes=len(data), hash_ms=1.0)
        records.update_image(connection, image_id, {"status": "done", **keys})
    engine.dispose()
    return keys


def _add_row(config: Config, sha: str, **values: Any) -> None:
    engine = make_engine(config.database_url)
    with engine.begin() as connection:
        image_id = records.insert_pending(connection, sha256=sha, filename="x.jpg", inbox_path=None, size_bytes=1, hash_ms=1.0)
        records.update_image(connection, image_id, values)
    engine.dispose()


@pytest.fixture
def storage(store_kind: str, storage_section: dict[str, Any]) -> dict[str, Any]:
    return storage_section


def test_gc_lists_only_the_orphans_and_removes_them_only_when_asked(storage: dict[str, Any], tmp_path: Path, capsys) -> None:
    path, config = _config_file(tmp_path, storage)
    store = open_store(config)
    store.prepare()
    done = _add_done(config, store, 1)
    failed_sha, pending_sha = _sha(2), _sha(3)
    _add_row(config, failed_sha, status="failed", stored_path="failed/broken.jpg", error="corrupt", error_kind="corrupt")
    _put(store, "failed/broken.jpg", b"broken")
    _put(store, note_key("failed/broken.jpg"), b"why")
    _add_row(config, pending_sha, stored_path=incoming_key(pending_sha))
    _put(store, incoming_key(pending_sha), b"incoming")
    orphans = {original_key(_sha(9), "png"), thumbnail_key(_sha(9), "small", "jpg"), incoming_key(_sha(8)), note_key("failed/gone.jpg")}
    for key in orphans:
        _put(store, key, b"left by a crash")
    named = set(done.values()) | {"failed/broken.jpg", note_key("failed/broken.jpg"), incoming_key(pending_sha)}

    # Too young to be sure of, at the default age: nothing is an orphan yet.
    assert main(["--config", str(path), "storage", "gc"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"0 orphan(s), 0.0 MB, among {len(named)} named object(s); 4 younger than 3600 s kept"

    assert main(["--config", str(path), "storage", "gc", "--min-age-s", "0"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert set(out[:-1]) == orphans
    assert out[-1].startswith("4 orphan(s)") and out[-1].endswith("run with --delete to remove them")
    assert {listed.key for listed in listed_objects(store)} == named | orphans  # a dry run removes nothing

    assert main(["--config", str(path), "storage", "gc", "--min-age-s", "0", "--delete"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("removed 4 orphan(s)")
    assert {listed.key for listed in listed_objects(store)} == named


def test_gc_leaves_an_object_younger_than_the_age_given(tmp_path: Path, capsys) -> None:
    path, config = _config_file(tmp_path, {"backend": "folder"})
    store = open_store(config)
    old, fresh = original_key(_sha(1), "jpg"), original_key(_sha(2), "jpg")
    _put(store, old, b"old")
    _put(store, fresh, b"fresh")
    two_hours_ago = time.time() - 2 * HOUR
    os.utime(config.data_dir / old, (two_hours_ago, two_hours_ago))
    assert main(["--config", str(path), "storage", "gc", "--delete"]) == 0
    assert not store.exists(old) and store.exists(fresh)


def test_copy_both_ways_checks_every_object_and_a_second_run_copies_nothing(
    object_store_server, tmp_path: Path, capsys
) -> None:
    s3 = s3_storage(object_store_server, tmp_path.name)
    folder_file, folder_config = _config_file(tmp_path, {"backend": "folder", "s3": s3["s3"]})
    folder = open_store(folder_config)
    folder.prepare()
    keys = [key for number in range(200) for key in _add_done(folder_config, folder, number).values()]
    bucket = open_store(dataclasses.replace(folder_config, storage=dataclasses.replace(folder_config.storage, backend="s3")))

    assert main(["--config", str(folder_file), "storage", "copy", "--to", "s3"]) == 0
    out = capsys.readouterr().out
    assert f"copied {len(keys)} object(s)" in out and "0 already there" in out
    assert all(_digest(bucket, key) == _digest(folder, key) for key in keys)
    assert main(["--config", str(folder_file), "storage", "copy", "--to", "s3"]) == 0
    assert f"copied 0 object(s) (0.0 MB) into s3; {len(keys)} already there" in capsys.readouterr().out

    # A damaged copy in the bucket (same key, other bytes) is found and replaced.
    _put(bucket, keys[0], b"damaged")
    assert main(["--config", str(folder_file), "storage", "copy", "--to", "s3"]) == 0
    assert "copied 1 object(s)" in capsys.readouterr().out
    assert _digest(bucket, keys[0]) == _digest(folder, keys[0])

    # And back: into an empty data folder, from the bucket.
    s3_file = write_toml(tmp_path / "s3.toml", {"paths": {"data_dir": str(tmp_path / "back")}, "database": {"url": folder_config.database_url},
                                                "caption": {"model": "none"}, "storage": s3})
    assert main(["--config", str(s3_file), "storage", "copy", "--to", "folder"]) == 0
    assert f"copied {len(keys)} object(s)" in capsys.readouterr().out
    back = open_store(config_module.replace(folder_config, paths={"data_dir": str(tmp_path / "back")}))
    assert all(_digest(back, key) == _digest(folder, key) for key in keys)


def test_copy_refuses_to_copy_a_store_onto_itself(tmp_path: Path, capsys) -> None:
    path, _ = _config_file(tmp_path, {"backend": "folder"})
    assert main(["--config", str(path), "storage", "copy", "--to", "folder"]) == 2
    assert "storage.backend is 'folder' already" in capsys.readouterr().err


def _digest(store: Store, key: str) -> str:
    with store.open(key) as stored:
        return hashlib.sha256(stored.reader.read()).hexdigest()
