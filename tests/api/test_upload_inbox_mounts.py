"""An upload into an inbox that is another mount of the same filesystem (a bind mount, as
systemd's ReadWritePaths= or a container's volume makes): st_dev is the same, and still a
rename into it fails with EXDEV. The file is copied in and renamed there instead."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from models.config import Config
from tests.api.conftest import serve, wait_status
from tests.helpers import CORPUS_DIR, bind_mounted


def test_an_upload_into_a_bind_mounted_inbox_is_copied_in_and_processed(
    make_config: Callable[..., Config], start_daemon, tmp_path: Path
) -> None:
    with bind_mounted(tmp_path / "srv-inbox", tmp_path / "mnt" / "inbox") as inbox:
        config = make_config(paths={"data_dir": "data", "inbox": str(inbox)})
        config.uploads_dir.mkdir(parents=True)
        assert os.stat(config.uploads_dir).st_dev == os.stat(inbox).st_dev  # what the old check compared
        start_daemon(config)
        body = (CORPUS_DIR / "flower.jpg").read_bytes()
        with serve(config) as client:
            response = client.post("/api/images", files={"file": ("flower.jpg", body, "image/jpeg")})
            assert response.status_code == 202, response.text
            row = wait_status(config, hashlib.sha256(body).hexdigest())
        assert row["status"] == "done" and row["filename"] == "flower.jpg"
        assert not list(config.uploads_dir.iterdir())
        assert not [path.name for path in inbox.iterdir()]  # no copy left behind, hidden or not
