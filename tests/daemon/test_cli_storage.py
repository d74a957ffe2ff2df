"""`htx storage gc` and `htx storage copy`, through the command line, on both stores (the data
folder and a real SeaweedFS bucket), with a database made as the daemon makes it."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert

from daemon.cli import main
from models import config as config_module
from models import migrate
from models.config import Config
from models.db import make_engine
from models.store import Store, incoming_key, note_key, original_key, thumbnail_key
from models.store_sweep import listed_objects
from models.stores import open_store
from models.tables import Image
from tests.conftest import s3_storage
from tests.helpers import write_toml

images = Image.__table__
HOUR = 3600.0


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _put(store: Store, key: str, data: bytes) -> None:
    store.write(key, lambda handle: handle.write(data))


def _keys(store: Store) -> set[str]:
    return {listed.key for listed in listed_objects(store)}


def _digests(store: Store) -> dict[str, str]:
    digests = {}
    for key in _keys(store):
        with store.open(key) as stored:
            digests[key] = _sha(stored.reader.read())
    return digests


def _config(tmp_path: Path, storage: dict[str, Any], name: str = "htx", *, database: bool = True) -> tuple[Path, Config]:
    """A configuration file of its own data folder, and the database the daemon would make."""
    path = write_toml(tmp_path / f"{name}.toml", {"paths": {"data_dir": str(tmp_path / name)}, "caption": {"model": "none"}, "storage": storage})
    config = config_module.load(path)
    if database:
        engine = make_engine(config.database_url)
        migrate.upgrade(engine)
        engine.dispose()
    return path, config


def _record(config: Config, rows: list[dict[str, Any]]) -> None:
    engine = make_engine(config.database_url)
    try:
        with engine.begin() as connection:
            for number, row in enumerate(rows):
                plain = {"sha256": _sha(str(number).encode()), "filename": f"{number}.jpg", "received_at": datetime(2026, 1, 1), "size_bytes": 1}
                connection.execute(insert(images).values(plain | row))
    finally:
        engine.dispose()


def _done(store: Store, data: bytes) -> dict[str, Any]:
    """A done image's three objects (the original under its digest), and its row's keys."""
    sha = _sha(data)
    keys = {"stored_path": original_key(sha, "jpg"), "thumb_small_path": thumbnail_key(sha, "small", "webp"),
            "thumb_medium_path": thumbnail_key(sha, "medium", "webp")}
    _put(store, keys["stored_path"], data)
    _put(store, keys["thumb_small_path"], data + b" small")
    _put(store, keys["thumb_medium_path"], data + b" medium")
    return {"sha256": sha, "status": "done"} | keys


def _gc(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> list[str]:
    assert main(["--config", str(path), "storage", "gc", *args]) == 0
    return capsys.readouterr().out.strip().splitlines()


def test_gc_lists_exactly_the_orphans_and_removes_them_only_when_asked(store_kind: str, storage_section: dict[str, Any], tmp_path: Path, capsys) -> None:
    path, config = _config(tmp_path, storage_section)
    store = open_store(config)
    store.prepare()
    done = _done(store, b"a done image")
    failed_sha, pending_sha = _sha(b"failed"), _sha(b"pending")
    for key in ("failed/broken.jpg", note_key("failed/broken.jpg"), incoming_key(pending_sha)):
        _put(store, key, b"named")
    _record(config, [
        done,
        {"sha256": failed_sha, "status": "failed", "stored_path": "failed/broken.jpg", "error": "corrupt", "error_kind": "corrupt"},
        {"sha256": pending_sha, "status": "pending", "stored_path": incoming_key(pending_sha)},
    ])
    orphans = {original_key(_sha(b"gone"), "png"), thumbnail_key(_sha(b"gone"), "small", "webp"), incoming_key(_sha(b"stored since")),
               note_key("failed/gone.jpg")}
    for key in orphans:
        _put(store, key, b"left by a crash")
    # Kept by the daemon with no record of its own (a too large duplicate): for a person.
    unrecorded = {"failed/too-large.jpg", note_key("failed/too-large.jpg")}
    for key in unrecorded:
        _put(store, key, b"kept")
    named = {done["stored_path"], done["thumb_small_path"], done["thumb_medium_path"], "failed/broken.jpg", note_key("failed/broken.jpg"),
             incoming_key(pending_sha)}
    everything = named | orphans | unrecorded
    assert _keys(store) == everything

    # At the default age every object is too young to be sure of: nothing is an orphan yet.
    assert _gc(path, capsys) == ["4 objects no record names left alone: younger than 3600 s",
                                 "2 files in failed/ without a record kept: the daemon keeps there what it could not register", "0 orphans, 0.0 MB"]
    assert _gc(path, capsys, "--delete", "--min-age-s", "86400")[-1] == "removed 0 orphans, 0.0 MB"
    assert _keys(store) == everything

    out = _gc(path, capsys, "--min-age-s", "0")
    assert set(out[:4]) == orphans and out[-1] == "4 orphans, 0.0 MB; run with --delete to remove them"
    assert _keys(store) == everything  # a dry run removes nothing

    assert _gc(path, capsys, "--min-age-s", "0", "--delete")[-1] == "removed 4 orphans, 0.0 MB"
    assert _keys(store) == named | unrecorded
    assert _gc(path, capsys, "--min-age-s", "0")[-1] == "0 orphans, 0.0 MB"


def test_gc_takes_an_old_orphan_and_leaves_a_fresh_one(tmp_path: Path, capsys) -> None:
    path, config = _config(tmp_path, {"backend": "folder"})
    store = open_store(config)
    old, fresh = original_key(_sha(b"old"), "jpg"), original_key(_sha(b"fresh"), "jpg")
    _put(store, old, b"old" * 1000)
    _put(store, fresh, b"fresh")
    two_hours_ago = time.time() - 2 * HOUR
    os.utime(config.data_dir / old, (two_hours_ago, two_hours_ago))
    assert _gc(path, capsys) == [old, "1 object no record names left alone: younger than 3600 s", "1 orphan, 0.0 MB; run with --delete to remove them"]
    assert _gc(path, capsys, "--min-age-s", str(3 * HOUR)) == ["2 objects no record names left alone: younger than 10800 s", "0 orphans, 0.0 MB"]
    assert _gc(path, capsys, "--delete") == [old, "1 object no record names left alone: younger than 3600 s", "removed 1 orphan, 0.0 MB"]
    assert not store.exists(old) and store.exists(fresh)


def test_gc_says_in_one_line_what_it_cannot_reach(tmp_path: Path, capsys) -> None:
    path, _ = _config(tmp_path, {"backend": "folder"}, database=False)
    assert main(["--config", str(path), "storage", "gc"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == ["htx storage gc: no database yet: the daemon has not run with this configuration"]

    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    storage = {"backend": "s3", "s3": {"bucket": "photos", "endpoint": endpoint, "allow_http": True, "path_style": True, "timeout_s": 1.0,
                                 "access_key_id": "htx", "secret_access_key": "htx-test-secret"}}
    path, _ = _config(tmp_path, storage, "unreachable")
    assert main(["--config", str(path), "storage", "gc", "--delete"]) == 1
    assert capsys.readouterr().err.strip().splitlines() == ["htx storage gc: the store: object store unreachable"]


def _progress(out: list[str]) -> list[str]:
    return [line for line in out if "/" in line and line.split("/")[0].isdigit()]


def test_copy_both_ways_checks_every_object_and_a_second_run_copies_nothing(object_store_server, tmp_path: Path, capsys) -> None:
    s3 = s3_storage(object_store_server, tmp_path.name)
    folder_file, folder_config = _config(tmp_path, {"backend": "folder", "s3": s3["s3"]}, "folder", database=False)
    folder = open_store(folder_config)
    for number in range(300):
        _done(folder, f"image {number}".encode())
    source = _digests(folder)
    assert len(source) == 900
    bucket_file, bucket_config = _config(tmp_path, s3, "back", database=False)
    bucket = open_store(bucket_config)

    assert main(["--config", str(folder_file), "storage", "copy", "--to", "s3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert _progress(out)[0] == "100/900 objects: 100 copied, 0 already there" and len(_progress(out)) == 9
    assert out[-2:] == ["copied 900 objects (0.0 MB), 0 already there", 'every object checked by its sha256: set storage.backend = "s3", then start the daemons']
    assert _digests(bucket) == source

    assert main(["--config", str(folder_file), "storage", "copy", "--to", "s3"]) == 0
    assert "copied 0 objects (0.0 MB), 900 already there" in capsys.readouterr().out

    # A damaged copy in the bucket (same key, other bytes) is found and replaced by the source's.
    original, thumbnail = sorted(source)[0], sorted(source)[-1]
    for key in (original, thumbnail):
        _put(bucket, key, b"damaged")
    assert main(["--config", str(folder_file), "storage", "copy", "--to", "s3"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert {line for line in out if line.startswith("replaced ")} == {f"replaced {key}: the destination held other bytes" for key in (original, thumbnail)}
    assert "copied 2 objects (0.0 MB, 2 in place of other bytes), 898 already there" in out
    assert _digests(bucket) == source

    # And back: from the bucket into an empty data folder.
    assert main(["--config", str(bucket_file), "storage", "copy", "--to", "folder"]) == 0
    assert "copied 900 objects (0.0 MB), 0 already there" in capsys.readouterr().out
    back = open_store(config_module.replace(bucket_config, storage={"backend": "folder"}))
    assert _digests(back) == source
    written = {key: os.stat(bucket_config.data_dir / key).st_mtime_ns for key in source}
    assert main(["--config", str(bucket_file), "storage", "copy", "--to", "folder"]) == 0
    assert "copied 0 objects (0.0 MB), 900 already there" in capsys.readouterr().out
    assert {key: os.stat(bucket_config.data_dir / key).st_mtime_ns for key in source} == written
    assert not any((bucket_config.work_dir).iterdir())  # no fetched copy left behind


def test_copy_names_an_original_whose_bytes_are_not_its_name_and_fails(object_store_server, tmp_path: Path, capsys) -> None:
    s3 = s3_storage(object_store_server, tmp_path.name)
    path, config = _config(tmp_path, {"backend": "folder", "s3": s3["s3"]}, database=False)
    folder = open_store(config)
    _done(folder, b"sound")
    damaged = original_key(_sha(b"as it came"), "jpg")
    _put(folder, damaged, b"rotted on the disk")
    assert main(["--config", str(path), "storage", "copy", "--to", "s3"]) == 1
    captured = capsys.readouterr()
    assert "copied 3 objects" in captured.out and "every object checked" not in captured.out
    assert captured.err.strip().splitlines() == [
        f"htx storage copy: {damaged}: the source holds other bytes than its name says (sha256 {_sha(b'rotted on the disk')})",
        "htx storage copy: 1 mismatch: keep storage.backend as it is",
    ]
    assert not open_store(config_module.replace(config, storage={"backend": "s3"})).exists(damaged)


def test_copy_refuses_a_destination_that_is_the_source_or_not_set(tmp_path: Path, capsys) -> None:
    path, _ = _config(tmp_path, {"backend": "folder"}, database=False)
    assert main(["--config", str(path), "storage", "copy", "--to", "folder"]) == 2
    assert capsys.readouterr().err.strip() == "htx storage copy: storage.backend is 'folder' already: copy --to the other store"
    assert main(["--config", str(path), "storage", "copy", "--to", "s3"]) == 2
    assert "set storage.s3.bucket" in capsys.readouterr().err


def test_copy_help_says_to_stop_the_daemons_and_switch_the_backend_after(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["storage", "copy", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "Stop every daemon and API of this configuration first" in help_text
    assert "set storage.backend to the destination" in help_text
