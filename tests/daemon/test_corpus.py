"""Every file of the acceptance corpus, dropped into a watched inbox, gets its expected outcome."""

from __future__ import annotations

import pytest
from PIL import Image

from models.config import Config
from tests.helpers import copy_in, corpus, finished, read_images, wait_for

pytestmark = pytest.mark.both_backends


def test_every_corpus_file_gets_its_expected_outcome(config: Config, start_daemon) -> None:
    daemon = start_daemon(config)
    files = corpus()
    for item in files:
        copy_in(item.path, config.inbox_dir / item.name)

    rows = wait_for(
        lambda: (rows := read_images(config)) and len(finished(rows)) == len(files) and rows,
        timeout=60,
        what="every corpus file to finish",
    )
    assert daemon.wait_idle(timeout=10)  # originals move just after their row is committed
    by_name = {row["filename"]: row for row in rows}
    assert sorted(by_name) == sorted(item.name for item in files)
    for item in files:
        row = by_name[item.name]
        assert (row["status"], row["error_kind"]) == (item.expected_status, item.expected_error_kind), item.name
        if item.expected == "accept":
            for size, edge in (("small", 150), ("medium", 300)):
                with Image.open(config.data_dir / row[f"thumb_{size}_path"]) as thumbnail:
                    thumbnail.load()
                    assert max(thumbnail.size) <= edge, (item.name, size, thumbnail.size)
                    assert thumbnail.size == (row[f"thumb_{size}_width"], row[f"thumb_{size}_height"])
            assert (config.data_dir / row["stored_path"]).is_file()
        else:
            assert row["error"] and str(config.data_dir) not in row["error"] and "/" not in row["error"]
            assert (config.data_dir / row["stored_path"]).is_file()
        assert row["inbox_path"] is None
    # Everything left the inbox, and the daemon is still alive and taking files.
    assert list(config.inbox_dir.iterdir()) == []
    copy_in(files[0].path.with_name("hopper.png"), config.inbox_dir / "after.png")
    wait_for(lambda: daemon.wait_idle(timeout=0.1) and not list(config.inbox_dir.iterdir()), what="the daemon to keep working")
