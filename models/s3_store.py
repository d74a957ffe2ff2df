"""The store in an S3 bucket (AWS, or any S3-compatible server: SeaweedFS, MinIO, Garage, R2),
under the same keys as the data folder's layout (models.store), through obstore (Rust's
object_store: streaming, timeouts and retries of its own, no boto3's weight).

Keys of originals are their content, so a put repeated after a crash changes nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import obstore
from obstore.store import S3Store as ObjectStoreS3

from models.store import StoredObject, StoreProblem

# Every request gives up after this long: a store that hangs is a fault, not a wait for ever.
REQUEST_TIMEOUT = "30s"
CONNECT_TIMEOUT = "5s"


class S3Store:
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
    ) -> None:
        self.bucket = bucket
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        options = {"timeout": REQUEST_TIMEOUT, "connect_timeout": CONNECT_TIMEOUT, "allow_http": allow_http}
        credentials = {}
        if access_key_id and secret_access_key:
            credentials = {"access_key_id": access_key_id, "secret_access_key": secret_access_key}
        self._s3 = ObjectStoreS3(
            bucket,
            region=region,
            virtual_hosted_style_request=not path_style,
            client_options=options,
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
            next(iter(obstore.list(self._s3, prefix=self._prefix or None, chunk_size=1)), None)
        except OSError as error:
            raise StoreProblem("the object store cannot be reached", f"bucket {self.bucket}", error) from error

    def put_file(self, key: str, source: Path) -> None:
        if not self.exists(key):
            with open(source, "rb") as handle:
                obstore.put(self._s3, self._path(key), handle)
        source.unlink(missing_ok=True)

    def write(self, key: str, write: Callable[[BinaryIO], None]) -> None:
        buffer = io.BytesIO()
        write(buffer)
        obstore.put(self._s3, self._path(key), buffer.getvalue())

    def open(self, key: str) -> StoredObject:
        got = obstore.get(self._s3, self._path(key))
        meta = got.meta
        return StoredObject(io.BytesIO(bytes(got.bytes())), meta["size"], (meta["e_tag"] or "").strip('"'))

    def exists(self, key: str) -> bool:
        try:
            obstore.head(self._s3, self._path(key))
        except FileNotFoundError:
            return False
        return True

    def remove(self, key: str) -> None:
        obstore.delete(self._s3, self._path(key))

    def list(self, prefix: str) -> Iterator[str]:
        # object_store lists by whole path segments: the folder's keys, then the name's start.
        wanted = self._path(prefix)
        for batch in obstore.list(self._s3, prefix=wanted.rpartition("/")[0] or None):
            for meta in batch:
                if meta["path"].startswith(wanted):
                    yield meta["path"][len(self._prefix) :]

    def local_path(self, key: str) -> None:
        return None
