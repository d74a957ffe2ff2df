"""The store: keys laid out as the data folder always was, and the operations every store has,
on both stores: the data folder, and a bucket of a real S3 server (SeaweedFS)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from models.s3_store import S3Store
from models.store import (
    FolderStore,
    StoreProblem,
    free_failed_key,
    note_key,
    original_key,
    remove_image_files,
    remove_thumbnails,
    thumbnail_key,
    write_note,
)
from tests.seaweedfs import BUCKET

SHA = "ab" + "c" * 62
AnyStore = FolderStore | S3Store


@pytest.fixture
def store(tmp_path: Path) -> FolderStore:
    store = FolderStore(tmp_path)
    store.prepare()
    return store


@pytest.fixture(params=["folder", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> AnyStore:
    if request.param == "folder":
        return request.getfixturevalue("store")
    server = request.getfixturevalue("object_store_server")
    # A prefix of its own per test: the bucket is shared by the session's tests.
    return S3Store(BUCKET, endpoint=server.endpoint, prefix=tmp_path.name, path_style=True, allow_http=True,
                   access_key_id=server.access_key_id, secret_access_key=server.secret_access_key)


def _put_bytes(store: AnyStore, key: str, data: bytes) -> None:
    store.write(key, lambda handle: handle.write(data))


def test_keys_are_the_data_folders_layout(store: FolderStore, tmp_path: Path) -> None:
    assert original_key(SHA, "jpg") == f"originals/ab/{SHA}.jpg"
    assert thumbnail_key(SHA, "small", "webp") == f"thumbnails/ab/{SHA}-small.webp"
    assert note_key("failed/a.jpg") == "failed/a.jpg.error.txt"
    _put_bytes(store, original_key(SHA, "jpg"), b"jpeg")
    assert (tmp_path / "originals" / "ab" / f"{SHA}.jpg").read_bytes() == b"jpeg"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["failed", "originals", "thumbnails"]


def test_a_put_moves_the_file_in_and_a_repeated_put_keeps_the_bytes_stored(any_store: AnyStore, tmp_path: Path) -> None:
    source = tmp_path / "inbox-photo.jpg"
    source.write_bytes(b"first")
    key = original_key(SHA, "jpg")
    any_store.put_file(key, source)
    assert not source.exists()
    again = tmp_path / "again.jpg"
    again.write_bytes(b"first")  # a crash after the move, and the same bytes offered again
    any_store.put_file(key, again)
    assert not again.exists()
    with any_store.open(key) as stored:
        assert (stored.reader.read(), stored.size) == (b"first", 5)


def test_a_version_changes_with_the_bytes(any_store: AnyStore) -> None:
    key = thumbnail_key(SHA, "small", "jpg")
    _put_bytes(any_store, key, b"one")
    with any_store.open(key) as first:
        version = first.version
    _put_bytes(any_store, key, b"other")
    with any_store.open(key) as second:
        assert second.version != version


def test_list_remove_and_a_key_not_there(any_store: AnyStore) -> None:
    for size in ("small", "medium"):
        _put_bytes(any_store, thumbnail_key(SHA, size, "jpg"), b"t")
    _put_bytes(any_store, thumbnail_key("ab" + "d" * 62, "small", "jpg"), b"other image")
    listed = sorted(any_store.list(f"thumbnails/ab/{SHA}-"))
    assert listed == [f"thumbnails/ab/{SHA}-medium.jpg", f"thumbnails/ab/{SHA}-small.jpg"]
    remove_thumbnails(any_store, SHA)
    assert list(any_store.list(f"thumbnails/ab/{SHA}-")) == []
    assert len(list(any_store.list("thumbnails/ab/"))) == 1
    any_store.remove(thumbnail_key(SHA, "small", "jpg"))  # gone already: no error
    with pytest.raises(FileNotFoundError):
        any_store.open(thumbnail_key(SHA, "small", "jpg"))


@pytest.mark.parametrize("key", ["../htx.db", "inbox/a.jpg", "originals/../../etc/passwd", ""])
def test_only_keys_of_the_store_are_files_of_it(store: FolderStore, key: str) -> None:
    with pytest.raises(ValueError):
        store.open(key)


def test_a_deleted_images_files_go_with_its_note(any_store: AnyStore) -> None:
    original = "failed/broken.jpg"
    _put_bytes(any_store, original, b"broken")
    write_note(any_store, original, "image 1 (broken.jpg): cannot be decoded\n")
    _put_bytes(any_store, thumbnail_key(SHA, "small", "jpg"), b"t")
    remove_image_files(any_store, original, (thumbnail_key(SHA, "small", "jpg"),))
    keys = (original, note_key(original), thumbnail_key(SHA, "small", "jpg"))
    assert [any_store.exists(key) for key in keys] == [False] * 3


def test_free_names_and_their_notes_fit_the_filesystem(any_store: AnyStore) -> None:
    name = "n" * 251 + ".jpg"
    first = free_failed_key(any_store, name, "a" * 64)
    _put_bytes(any_store, first, b"")
    write_note(any_store, first, "why")  # would be ENAMETOOLONG unshortened
    second = free_failed_key(any_store, name, "b" * 64)
    assert second != first and second.endswith(".jpg") and "-bbbbbbbbbbbb" in second
    _put_bytes(any_store, second, b"")
    write_note(any_store, second, "why")


def test_a_store_it_cannot_write_is_a_problem_named_by_its_part(store: FolderStore, tmp_path: Path) -> None:
    (tmp_path / "thumbnails").rmdir()
    (tmp_path / "thumbnails").write_bytes(b"")
    with pytest.raises(StoreProblem) as problem:
        store.check()
    assert problem.value.part == "thumbnails" and isinstance(problem.value.cause, FileExistsError)
    assert str(tmp_path) not in str(problem.value)
    os.unlink(tmp_path / "thumbnails")
    store.check()


def test_a_missing_bucket_or_an_unreachable_store_is_a_fault_never_a_missing_key(object_store_server, tmp_path: Path) -> None:
    from models.store_fault import StoreFault

    server = object_store_server
    missing = S3Store("no-such-bucket", endpoint=server.endpoint, path_style=True, allow_http=True,
                      access_key_id=server.access_key_id, secret_access_key=server.secret_access_key)
    for operation in (lambda: missing.open("originals/ab/x.jpg"), lambda: missing.exists("originals/ab/x.jpg"),
                      lambda: missing.remove("originals/ab/x.jpg"), lambda: list(missing.list("thumbnails/ab/x-"))):
        with pytest.raises(StoreFault) as raised:
            operation()
        assert raised.value.problem == "bucket missing"
    with pytest.raises(StoreProblem, match="bucket missing"):
        missing.check()
    import socket

    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    nobody = S3Store(BUCKET, endpoint=f"http://127.0.0.1:{port}", path_style=True, allow_http=True,
                     access_key_id="htx", secret_access_key="x", timeout_s=2.0)
    with pytest.raises(StoreFault) as raised:
        nobody.exists("originals/ab/x.jpg")
    assert raised.value.problem == "object store unreachable"
    assert str(port) not in str(raised.value)  # never the endpoint


@pytest.mark.parametrize(
    ("said", "problem"),
    [
        ("Server returned non-2xx status code: 403 Forbidden: <Code>AccessDenied</Code>", "object store denied access"),
        ("Server returned non-2xx status code: 403 Forbidden: <Code>SignatureDoesNotMatch</Code>", "object store denied access"),
        ("Server returned non-2xx status code: 503 Service Unavailable: <Code>SlowDown</Code>", "object store error (server)"),
        ("request or response body error: operation timed out", "object store timed out"),
        ("HTTP error: error sending request, max_retries: 3, retry_timeout: 10s", "object store unreachable"),
        ("Error performing list request: <Code>NoSuchBucket</Code>", "bucket missing"),
        ("something else entirely", "object store error"),
    ],
)
def test_what_the_object_store_says_becomes_a_problem_in_a_few_words(said: str, problem: str) -> None:
    from obstore.exceptions import GenericError

    from models.s3_store import _fault_of

    fault = _fault_of(GenericError(said))
    assert fault.problem == problem
    assert fault.strerror == "a request to the bucket failed"
