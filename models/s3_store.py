"""The store in an S3 bucket (AWS, or any S3-compatible server: SeaweedFS, MinIO, Garage, R2),
under the same keys as the data folder's layout (models.store), through obstore (Rust's
object_store: streaming, timeouts and retries of its own, no boto3's weight).

Keys of originals are their content, so a put repeated after a crash changes nothing. Every
failure but a missing key is a `StoreFault` (models.store_fault): a fault of the environment.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

import obstore
from obstore.exceptions import BaseError, PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store as ObjectStoreS3

from models.files import CHUNK_BYTES
from models.store import Listed, StoredObject, StoreProblem
from models.store_fault import StoreFault

# Every request gives up after this long: a store that hangs is a fault, not a wait for ever.
CONNECT_TIMEOUT = "5s"
# object_store retries a failed request itself, for up to this long, before it is a fault.
RETRIES = {"max_retries": 3, "retry_timeout": timedelta(seconds=10), "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2), "base": 2}}
# How long a bucket that answered is trusted to be there, when a key is not found in it.
BUCKET_SEEN_S = 10.0
# Objects larger than this go up in parts (and several parts at once).
MULTIPART_BYTES = 8 * CHUNK_BYTES

# What a failed request means, from the words object_store and the server use.
_FAULTS = (
    (re.compile(r"NoSuchBucket", re.I), "bucket missing"),
    (re.compile(r"AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|403 Forbidden", re.I), "object store denied access"),
    (re.compile(r"timed out|deadline", re.I), "object store timed out"),  # not "retry_timeout: 10s"
    (re.compile(r"error sending request|connect|dns|refused|reset", re.I), "object store unreachable"),
    (re.compile(r"\b5\d\d\b"), "object store error (server)"),
)


def _fault_of(error: BaseError) -> StoreFault:
    if isinstance(error, PermissionDeniedError | UnauthenticatedError):
        return StoreFault("object store denied access")
    said = str(error)
    for pattern, problem in _FAULTS:
        if pattern.search(said):
            return StoreFault(problem)
    return StoreFault("object store error")


@contextmanager
def _requests() -> Iterator[None]:
    try:
        yield
    except FileNotFoundError as error:
        # object_store says "not found" of a missing bucket too: that is no missing key.
        if "NoSuchBucket" in str(error):
            raise StoreFault("bucket missing") from error
        raise
    except BaseError as error:
        raise _fault_of(error) from error


class _StreamReader:
    """An object's bytes as a file to read, streamed: never the whole object in memory."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def read(self, size: int = -1) -> bytes:
        with _requests():
            while size < 0 or len(self._buffer) < size:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._buffer += bytes(chunk)
        if size < 0:
            size = len(self._buffer)
        taken, self._buffer = self._buffer[:size], self._buffer[size:]
        return taken

    def close(self) -> None:
        self._chunks = iter(())
        self._buffer = b""


class S3Store:
    remote = True

    def __init__(
        self,
        bucket: str,
        *,
        endpoint: str = "",
        region: str = "us-east-1",
        prefix: str = "",
        path_style: bool = False,
        allow_http: bool = False,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.bucket = bucket
        self._bucket_seen_at = -BUCKET_SEEN_S
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        options = {"timeout": f"{int(timeout_s * 1000)}ms", "connect_timeout": CONNECT_TIMEOUT, "allow_http": allow_http}
        credentials = {}
        if access_key_id and secret_access_key:
            credentials = {"access_key_id": access_key_id, "secret_access_key": secret_access_key}
        self._s3 = ObjectStoreS3(
            bucket,
            region=region or "us-east-1",
            virtual_hosted_style_request=not path_style,
            client_options=options,
            retry_config=RETRIES,
            **({"endpoint": endpoint} if endpoint else {}),
            **credentials,
        )

    def _path(self, key: str) -> str:
        return self._prefix + key

    def prepare(self) -> int:
        self.check()
        return 0

    def check(self) -> None:
        try:
            self._list_one()
        except StoreFault as fault:
            raise StoreProblem(fault.problem, f"bucket {self.bucket}", fault) from fault

    def _list_one(self) -> None:
        """StoreFault unless the bucket answers a listing."""
        with _requests():
            next(iter(obstore.list(self._s3, prefix=self._prefix or None, chunk_size=1)), None)
        self._bucket_seen_at = time.monotonic()

    def upload(self, key: str, source: Path) -> None:
        if self.exists(key):
            return
        with _requests(), open(source, "rb") as handle:
            obstore.put(self._s3, self._path(key), handle, chunk_size=MULTIPART_BYTES)

    def put_file(self, key: str, source: Path) -> None:
        self.upload(key, source)
        source.unlink(missing_ok=True)

    def write(self, key: str, write: Callable[[BinaryIO], None]) -> None:
        # What is written is small (a thumbnail, a note): whole, so it appears only complete.
        buffer = io.BytesIO()
        write(buffer)
        with _requests():
            obstore.put(self._s3, self._path(key), buffer.getvalue())

    def copy(self, source_key: str, key: str) -> None:
        with _requests():
            obstore.copy(self._s3, self._path(source_key), self._path(key))

    def open(self, key: str) -> StoredObject:
        with _requests():
            got = obstore.get(self._s3, self._path(key))
        meta = got.meta
        reader = _StreamReader(iter(got.stream(min_chunk_size=CHUNK_BYTES)))
        return StoredObject(reader, meta["size"], (meta["e_tag"] or "").strip('"'))  # type: ignore[arg-type]

    def exists(self, key: str) -> bool:
        try:
            with _requests():
                obstore.head(self._s3, self._path(key))
        except FileNotFoundError:
            # A HEAD's 404 has no body to tell a missing key from a missing bucket: the bucket
            # is checked again once it has not been seen for a while.
            if time.monotonic() - self._bucket_seen_at > BUCKET_SEEN_S:
                self._list_one()
            return False
        self._bucket_seen_at = time.monotonic()
        return True

    def remove(self, key: str) -> None:
        try:
            with _requests():
                obstore.delete(self._s3, self._path(key))
        except FileNotFoundError:
            pass

    def list(self, prefix: str) -> Iterator[str]:
        for listed in self.scan(prefix):
            yield listed.key

    def scan(self, prefix: str) -> Iterator[Listed]:
        # object_store lists by whole path segments: the folder's keys, then the name's start.
        wanted = self._path(prefix)
        with _requests():
            for batch in obstore.list(self._s3, prefix=wanted.rpartition("/")[0] or None, chunk_size=1000):
                for meta in batch:
                    if meta["path"].startswith(wanted):
                        yield Listed(meta["path"][len(self._prefix) :], meta["size"], meta["last_modified"].timestamp())

    def local_path(self, key: str) -> None:
        return None

    def signed_url(self, key: str, expires_s: int) -> str:
        """A URL that reads the object without credentials, for `expires_s` seconds."""
        with _requests():
            return obstore.sign(self._s3, "GET", self._path(key), timedelta(seconds=expires_s))
