from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

import pytest
from pathlib import Path

from daemon.cli import main
from models import config as config_module
from tests.helpers import CORPUS_DIR, daemon_started, read_images, wait_for


def _config_file(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "htx.toml"
    path.write_text('[paths]\ndata_dir = "data"\n[watch]\nsettle_ms = 100\n[caption]\nmodel = "none"\n' + extra)
    return path


def test_check_config_prints_the_effective_settings(tmp_path: Path, capsys) -> None:
    path = _config_file(tmp_path)
    assert main(["--config", str(path), "check-config"]) == 0
    out = capsys.readouterr().out
    assert f"configuration from {path}" in out
    assert 'mode = "auto"' in out and "settle_ms = 100" in out
    assert f"# inbox: {tmp_path / 'data' / 'inbox'}" in out


def test_check_config_shows_the_object_stores_credentials_as_stars(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("HTX_S3_ACCESS_KEY_ID", "AKIAEXAMPLEKEY")
    monkeypatch.setenv("HTX_S3_SECRET_ACCESS_KEY", "very-secret-value")
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    path = _config_file(tmp_path, f'[storage]\nbackend = "s3"\n[storage.s3]\nbucket = "photos"\nendpoint = "{endpoint}"\nallow_http = true\npath_style = true\n')
    assert main(["--config", str(path), "check-config"]) == 1
    out = capsys.readouterr().out
    assert f"# problem: storage.s3: object store unreachable (bucket photos, {endpoint})" in out
    assert "[storage.s3]" in out and 'bucket = "photos"' in out
    assert 'access_key_id = "***"' in out and 'secret_access_key = "***"' in out
    assert "AKIAEXAMPLEKEY" not in out and "very-secret-value" not in out
    assert f"# store: bucket photos at {endpoint} (credentials set)" in out


def test_a_path_the_command_cannot_use_is_one_line_never_a_traceback(tmp_path: Path, capsys) -> None:
    (tmp_path / "not-a-folder").write_text("a file where the inbox's folder should be")
    inbox = tmp_path / "not-a-folder" / "inbox"
    path = tmp_path / "htx.toml"
    path.write_text(f'[paths]\ndata_dir = "data"\ninbox = "{inbox}"\n[caption]\nmodel = "none"\n')
    photo = tmp_path / "photo.jpg"
    shutil.copyfile(CORPUS_DIR / "flower.jpg", photo)
    assert main(["--config", str(path), "ingest", str(photo)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"htx ingest: Not a directory: {inbox}"]


def test_check_config_names_each_problem_it_can_see(tmp_path: Path, capsys) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    path = tmp_path / "htx.toml"
    path.write_text(
        f'[paths]\ndata_dir = "a-file"\ninbox = "{tmp_path / "a-file" / "inbox"}"\n'
        '[caption]\nmodel = "./models/blip"\n'
    )
    assert main(["--config", str(path), "check-config"]) == 1
    problems = [line for line in capsys.readouterr().out.splitlines() if line.startswith("# problem: ")]
    assert problems == [
        f"# problem: data folder (paths.data_dir) {tmp_path / 'a-file'}: not a folder",
        f"# problem: inbox (paths.inbox) {tmp_path / 'a-file' / 'inbox'}: does not exist, and the user root cannot make it; "
        f"to fix: install -d -o root {tmp_path / 'a-file' / 'inbox'}",
        f"# problem: caption model folder {tmp_path / 'models' / 'blip'} cannot be loaded: folder not found; to fix: set "
        "caption.model to a folder holding a saved BLIP model (config.json, model.safetensors and the processor files) or to a hub id",
    ]


def test_check_config_as_a_user_who_may_not_write_the_data_folder_says_so(tmp_path: Path) -> None:
    import os
    import pwd

    if os.geteuid() != 0:
        pytest.skip("needs root, to check as another user")
    import daemon.config_checks  # noqa: F401 - loaded before the user changes: the venv is root's
    import models.db  # noqa: F401

    tmp_path = Path(tempfile.mkdtemp(prefix="htx-check-"))  # pytest's own are root's alone
    tmp_path.chmod(0o755)
    (tmp_path / "data").mkdir()
    path = _config_file(tmp_path)
    path.chmod(0o644)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            nobody = pwd.getpwnam("nobody")
            os.setgroups([])
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            with os.fdopen(writer, "w") as out:
                sys.stdout = out
                code = main(["--config", str(path), "check-config"])
                print(f"exit {code}")
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as answer:
        said = answer.read()
    os.waitpid(child, 0)
    shutil.rmtree(tmp_path)
    assert "# checked as the user nobody: " in said
    assert f"# problem: data folder (paths.data_dir) {tmp_path / 'data'}: not writable by the user nobody; to fix: chown nobody: {tmp_path / 'data'}" in said
    assert said.rstrip().endswith("exit 1")


def test_the_config_option_also_follows_the_command(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./config.toml to fall back on
    monkeypatch.delenv(config_module.CONFIG_ENV, raising=False)
    path = _config_file(tmp_path)
    other = tmp_path / "other.toml"
    other.write_text('[watch]\nsettle_ms = 7\n[caption]\nmodel = "none"\n')

    assert main(["check-config", "--config", str(path)]) == 0
    assert "settle_ms = 100" in capsys.readouterr().out
    assert main(["db", "migrate", "--config", str(path)]) == 0
    assert (tmp_path / "data" / "htx.db").is_file()
    # After the command it wins over one before it; absent after, the one before stands.
    assert main(["--config", str(other), "check-config", "--config", str(path)]) == 0
    assert "settle_ms = 100" in capsys.readouterr().out
    assert main(["--config", str(other), "check-config"]) == 0
    assert "settle_ms = 7" in capsys.readouterr().out


def test_every_command_says_in_one_line_what_it_does(capsys) -> None:
    from daemon.cli import build_parser

    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        summaries = {choice.dest: choice.help for choice in commands._choices_actions}
        assert summaries[name] and "\n" not in summaries[name], name
        assert sub.description, name
    try:
        main(["stats", "--help"])
    except SystemExit as exit_:
        assert exit_.code == 0
    assert "Print counts, rates and processing times as a table." in capsys.readouterr().out


def test_config_errors_exit_2_naming_the_key(tmp_path: Path, capsys) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[pipeline]\nworkerz = 2\n")
    assert main(["--config", str(path), "daemon", "--once"]) == 2
    assert "pipeline.workerz: unknown key" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys) -> None:
    try:
        main(["no-such-command"])
    except SystemExit as exit_:
        assert exit_.code == 2
    else:
        raise AssertionError("argparse should have exited")


def test_reprocess_without_a_database_says_so_and_creates_none(tmp_path: Path, capsys) -> None:
    assert main(["--config", str(_config_file(tmp_path)), "reprocess", "--failed"]) == 1
    assert "no database yet" in capsys.readouterr().err
    assert not (tmp_path / "data" / "htx.db").exists()


def test_daemon_once_processes_the_inbox_and_exits_0(tmp_path: Path) -> None:
    path = _config_file(tmp_path, '[log]\nformat = "json"\n')
    inbox = tmp_path / "data" / "inbox"
    inbox.mkdir(parents=True)
    shutil.copyfile(CORPUS_DIR / "hopper.jpg", inbox / "a.jpg")
    shutil.copyfile(CORPUS_DIR / "hopper.gif", inbox / "b.jpg")
    result = subprocess.run(
        [sys.executable, "-m", "daemon.cli", "--config", str(path), "daemon", "--once"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    config = config_module.load(path)
    assert sorted((row["filename"], row["status"]) for row in read_images(config)) == [
        ("a.jpg", "done"),
        ("b.jpg", "failed"),
    ]
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    messages = [line["message"] for line in lines]
    assert any(message.startswith("image ") and "a.jpg: done in" in message for message in messages)
    assert any("b.jpg: failed in" in message and "unsupported format: GIF" in message for message in messages)
    assert {line["level"] for line in lines} <= {"info", "warning"}


def test_daemon_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    path = _config_file(tmp_path)
    process = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "--config", str(path), "daemon"],
        stderr=subprocess.PIPE,
        text=True,
    )
    config = config_module.load(path)
    try:
        wait_for(lambda: daemon_started(config), what="the daemon to start")
        shutil.copyfile(CORPUS_DIR / "flower.jpg", config.inbox_dir / "f.jpg")
        wait_for(lambda: [row["status"] for row in read_images(config)] == ["done"], what="the image")
    finally:
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=10)
    assert process.returncode == 0, err
    assert "daemon stopped" in err
