"""The store a configuration names: the data folder, or a bucket of an object store. Made
once, where the config is loaded, and passed down."""

from __future__ import annotations

from models.config import Config
from models.store import FolderStore, Store


def open_store(config: Config) -> Store:
    if config.storage.backend == "s3":
        from models.s3_store import S3Store  # obstore is loaded only by who uses it

        s3 = config.storage.s3
        return S3Store(
            s3.bucket,
            endpoint=s3.endpoint,
            region=s3.region,
            prefix=s3.prefix,
            path_style=s3.path_style,
            allow_http=s3.allow_http,
            access_key_id=s3.access_key_id or None,
            secret_access_key=s3.secret_access_key or None,
            timeout_s=s3.timeout_s,
        )
    return FolderStore(config.data_dir)
