from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from daemon.cli import main
from models.config import Config
from tests.helpers import CORPUS_DIR, htx_command, read_images, wait_for, write_config_file


def test_ingest_wait_copies_a_folder_follows_it_and_summarises(config: Config, start_daemon, tmp_path: Path) -> None:
    start_daemon(config)
    album = tmp_path / "album"
    (album / "day2").mkdir(parents=True)
    shutil.copyfile(CORPUS_DIR / "flower.jpg", album / "flower.jpg")
    shutil.copyfile(CORPUS_DIR / "hopper.png", album / "day2" / "hopper.png")
    shutil.copyfile(CORPUS_DIR / "hopper.gif", album / "day2" / "hopper.gif")
    shutil.copyfile(CORPUS_DIR / "flower.jpg", album / "day2" / "same-flower.jpg")
    shutil.copyfile(CORPUS_DIR / "hopper.jpg", album / ".hidden.jpg")  # ignored, like the daemon does
    config_file = write_config_file(config, tmp_path / "htx.toml")

    result = subprocess.run(
        htx_command(config_file, "ingest", "--wait", "--timeout", "60", str(album)),
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stderr
    assert "copying 4 file(s)" in result.stderr and "processing" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "4 file(s) copied, 3 distinct: 2 done, 1 failed, 0 unfinished"
    assert lines[1] == "  failed: album/day2/hopper.gif: unsupported format: GIF (only JPEG and PNG are accepted)"
    rows = read_images(config)
    assert sorted(row["filename"] for row in rows) == ["album/day2/hopper.gif", "album/day2/hopper.png", "album/flower.jpg"]


def test_ingest_without_daemon_times_out_with_exit_1(config: Config, tmp_path: Path) -> None:
    config_file = write_config_file(config, tmp_path / "htx.toml")
    result = subprocess.run(
        htx_command(config_file, "ingest", "--wait", "--timeout", "1", str(CORPUS_DIR / "hopper.jpg")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "the daemon does not seem to be running" in result.stderr
    assert (config.inbox_dir / "hopper.jpg").read_bytes() == (CORPUS_DIR / "hopper.jpg").read_bytes()


def test_ingest_of_a_missing_path_is_a_usage_error(config: Config, tmp_path: Path, capsys) -> None:
    config_file = write_config_file(config, tmp_path / "htx.toml")
    assert main(["--config", str(config_file), "ingest", str(tmp_path / "nope")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def _without_root_powers(command: list[str]) -> list[str]:
    """`command` as a user that file permissions apply to: the tests run as root, whom they do
    not stop, so as root it runs without the capabilities that override them."""
    if os.geteuid() != 0:
        return command
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no way to be refused a read")
    caps = "-dac_override,-dac_read_search"
    return ["setpriv", "--bounding-set", caps, "--inh-caps", caps, "--", *command]


@pytest.mark.parametrize("unreadable", ["the folder", "a folder inside it", "a file inside it"])
def test_ingest_of_what_it_may_not_read_says_so_in_one_line(config: Config, tmp_path: Path, unreadable: str) -> None:
    config_file = write_config_file(config, tmp_path / "htx.toml")
    folder = tmp_path / "photos"
    (folder / "inner").mkdir(parents=True)
    shutil.copyfile(CORPUS_DIR / "hopper.jpg", folder / "inner" / "hopper.jpg")
    refused = {"the folder": folder, "a folder inside it": folder / "inner", "a file inside it": folder / "inner" / "hopper.jpg"}[unreadable]
    refused.chmod(0)
    try:
        result = subprocess.run(
            _without_root_powers(htx_command(config_file, "ingest", str(folder))), capture_output=True, text=True, timeout=60
        )
    finally:
        refused.chmod(0o755)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"htx ingest: Permission denied: {refused} (htx runs as the user root)"
    assert "Traceback" not in result.stderr
    assert not (config.inbox_dir / "photos" / "inner" / "hopper.jpg").exists()


@pytest.mark.both_backends
def test_reprocess_failed_images_after_the_limit_is_raised(make_config, start_daemon, tmp_path: Path, capsys) -> None:
    strict = make_config(pipeline={"max_pixels": 1000})
    first = start_daemon(strict)
    shutil.copyfile(CORPUS_DIR / "flower.jpg", strict.inbox_dir / "flower.jpg")
    wait_for(lambda: [row["status"] for row in read_images(strict)] == ["failed"], what="the strict failure")
    first.stop()

    relaxed = make_config()  # same data folder, default limits
    daemon = start_daemon(relaxed)
    stop = threading.Event()
    runner = threading.Thread(target=daemon.run, args=(stop,))
    runner.start()
    try:
        config_file = write_config_file(relaxed, tmp_path / "htx.toml")
        assert main(["--config", str(config_file), "reprocess", "--failed"]) == 0
        row = wait_for(
            lambda: (rows := read_images(relaxed)) and rows[0]["status"] == "done" and rows[0],
            what="the reprocessed image",
        )
    finally:
        stop.set()
        runner.join()
    assert row["error"] is None and row["error_kind"] is None and row["width"] == 480
    assert row["stored_path"].startswith("originals/")
    assert (relaxed.data_dir / row["stored_path"]).is_file()
    assert list((relaxed.data_dir / "failed").iterdir()) == []  # the file and its stale reason
    capsys.readouterr()

    # An id that names no image, and one that is done, not failed: said, and exit status 1.
    assert main(["--config", str(config_file), "reprocess", "--failed", "999", str(row["id"])]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("0 image(s) queued again")
    assert "image 999 not queued: there is no such image" in err
    assert f"image {row['id']} not queued: it is done, not failed" in err
    assert [row["status"] for row in read_images(relaxed)] == ["done"]


def test_reprocess_needs_ids_or_failed(config: Config, tmp_path: Path, capsys) -> None:
    config_file = write_config_file(config, tmp_path / "htx.toml")
    assert main(["--config", str(config_file), "reprocess"]) == 2
