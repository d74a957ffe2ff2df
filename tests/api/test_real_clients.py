"""Real clients against a real `htx run`: rsync and cp -r into the inbox, curl uploads.

rsync writes each file as a hidden `.name.XXXXXX` and renames it; cp writes in place; curl
posts multipart. Every file must end as exactly one record with its MANIFEST outcome, and no
temporary name may ever become a record.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models import config as config_module
from tests.api.live import Htx, write_config
from tests.helpers import CorpusFile, corpus, finished, read_images, wait_for

_MISSING = [tool for tool in ("rsync", "curl") if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(
    bool(_MISSING), reason=f"{' and '.join(_MISSING)} needed (.ci/run installs them from Debian's packages)"
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Htx]:
    htx = Htx(write_config(tmp_path / "htx"), "run")
    htx.wait_healthy()
    yield htx
    assert htx.stop(signal.SIGINT) == 0, htx.log()
    assert "Traceback" not in htx.log()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _folder(files: list[CorpusFile], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for item in files:
        shutil.copyfile(item.path, folder / item.name)
    return folder


def test_rsync_cp_and_curl_each_give_one_record_per_file(server: Htx, tmp_path: Path) -> None:
    config = config_module.load(server.config_file)
    # Three disjoint thirds of the corpus, one per client (the same bytes twice would be one record).
    files = corpus()
    by_rsync, by_cp, by_curl = files[0::3], files[1::3], files[2::3]

    rsync = subprocess.run(
        ["rsync", "-a", f"{_folder(by_rsync, tmp_path / 'rsync-src')}/", f"{config.inbox_dir}/rsynced/"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rsync.returncode == 0, rsync.stderr

    subprocess.run(["cp", "-r", str(_folder(by_cp, tmp_path / "copied")), str(config.inbox_dir)], check=True, timeout=60)

    expected_uploads = []
    for item in by_curl:
        result = subprocess.run(
            ["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-F", f"file=@{item.path}", f"{server.base_url}/api/images"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        body, _, status = result.stdout.rpartition("\n")
        if item.expected == "reject-unsupported":
            assert (status, json.loads(body)) == ("400", {"error": "Only JPEG and PNG files are allowed."}), item.name
        else:
            assert status == "202", (item.name, status, body)
            expected_uploads.append(item)

    expected = [*by_rsync, *by_cp, *expected_uploads]
    rows = wait_for(
        lambda: (rows := read_images(config)) and len(finished(rows)) == len(expected) and rows,
        timeout=90,
        what=f"{len(expected)} files from rsync, cp and curl",
    )
    by_sha = {row["sha256"]: row for row in rows}
    assert len(rows) == len(by_sha) == len(expected)
    for item, prefix in [*((i, "rsynced/") for i in by_rsync), *((i, "copied/") for i in by_cp), *((i, "") for i in expected_uploads)]:
        row = by_sha[_sha256(item.path)]
        assert row["filename"] == prefix + item.name, row["filename"]
        assert (row["status"], row["error_kind"]) == (item.expected_status, item.expected_error_kind), item.name
    # rsync's temporary names never became records, and nothing is left in the inbox.
    assert not [row["filename"] for row in rows if "/." in row["filename"] or row["filename"].startswith(".")]
    assert not [path for path in config.inbox_dir.rglob("*") if path.is_file()]

    with httpx.Client(base_url=server.base_url) as client:
        stats = client.get("/api/stats").json()
    assert stats["total"] == len(expected)
