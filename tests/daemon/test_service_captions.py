"""The daemon with a caption model: real daemon, real inbox watcher, real SQLite, real BLIP code."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from daemon import cli
from daemon.service import Daemon
from models.config import Config
from models.db import make_engine
from models.tables import DaemonState
from tests.helpers import CORPUS_DIR, PREPARING, GatedCaptioner, copy_in, read_images, wait_for

PHOTOS = ["flower.jpg", "hopper.png", "Landscape_6.jpg", "pil_sample_cmyk.jpg", "basn6a08.png"]


def read_state(config: Config) -> dict[str, Any]:
    engine = make_engine(config.database_url, readonly=True)
    try:
        with engine.connect() as connection:
            return dict(connection.execute(select(DaemonState.__table__)).one()._mapping)
    finally:
        engine.dispose()


def drop_photos(config: Config, names: Sequence[str] = PHOTOS) -> None:
    for name in names:
        copy_in(CORPUS_DIR / name, config.inbox_dir / name)


def all_done(config: Config, count: int) -> list[dict[str, Any]] | None:
    """The rows once `count` images are done with no caption still to come."""
    rows = read_images(config)
    return rows if len(rows) == count and all(row["status"] == "done" and row["stage"] is None for row in rows) else None


@pytest.fixture
def gated() -> Any:
    captioner = GatedCaptioner()
    yield captioner
    captioner.gate.set()  # let a loader thread still waiting run to its end


def test_every_image_gets_a_caption_from_the_model(
    tiny_blip: Path, make_config: Callable[..., Config], start_daemon: Callable[..., Daemon]
) -> None:
    config = make_config(caption={"model": str(tiny_blip), "max_new_tokens": 5, "batch_size": 4, "batch_wait_ms": 50})
    daemon = start_daemon(config)
    drop_photos(config)

    rows = wait_for(lambda: all_done(config, len(PHOTOS)), timeout=60, what="every photo to be captioned")

    assert daemon.wait_idle(timeout=5)
    for row in rows:
        assert isinstance(row["caption"], str) and len(row["caption"].split()) == 5, row["filename"]
        assert (row["caption_model"], row["caption_device"], row["caption_error"]) == (tiny_blip.name, "cpu", None)
        assert 0 < row["caption_ms"] <= row["processing_ms"]
        assert row["thumb_medium_path"] and (config.data_dir / row["stored_path"]).is_file()
    assert list(config.inbox_dir.iterdir()) == []
    state = read_state(config)
    assert state["caption_status"].startswith("ready (cpu, ")
    assert (state["caption_model"], state["caption_device"]) == (tiny_blip.name, "cpu")
    # Which runtime and precision is the captioner's choice; every caption names the one it ran.
    assert state["caption_runtime"] and len(state["caption_runtime"]) <= 32
    assert {row["caption_runtime"] for row in rows} == {state["caption_runtime"]}


def test_images_dropped_while_the_model_is_prepared_are_done_and_captioned_once_it_is_ready(
    gated: GatedCaptioner, make_config: Callable[..., Config], start_daemon: Callable[..., Daemon]
) -> None:
    config = make_config()
    daemon = start_daemon(config, captioner=gated)
    drop_photos(config, PHOTOS[:2])

    def done_waiting_for_caption() -> list[dict[str, Any]] | None:
        rows = read_images(config)
        ready = [row for row in rows if (row["status"], row["stage"]) == ("done", "caption") and row["thumb_small_path"]]
        return rows if len(ready) == 2 else None

    rows = wait_for(done_waiting_for_caption, what="images done, their caption to come, while the model is prepared")
    for row in rows:
        assert row["width"] and row["format"] and row["caption"] is None and row["caption_error"] is None
        assert row["claimed_by"] is None, "nothing is held for the model"
        assert (config.data_dir / row["thumb_small_path"]).is_file()
        assert (config.data_dir / row["stored_path"]).is_file()
    assert list(config.inbox_dir.iterdir()) == []  # in the store already: nothing waits in the inbox
    assert read_state(config)["caption_status"] == f"preparing: {PREPARING}"
    assert not daemon.wait_idle(timeout=0.2)  # not finished while the caption is outstanding

    gated.gate.set()

    rows = wait_for(lambda: all_done(config, 2), what="the captions once the model is ready")
    assert sorted(row["caption"] for row in rows) == ["caption 0", "caption 1"]
    made_by = {(row["caption_model"], row["caption_device"], row["caption_runtime"]) for row in rows}
    assert made_by == {("gated", "cpu", "gated float32")}
    assert read_state(config)["caption_runtime"] == "gated float32"
    assert gated.seen == [(16, 16), (16, 16)]  # the decoded image, reduced to the model's input
    assert daemon.wait_idle(timeout=5)
    assert list(config.inbox_dir.iterdir()) == []


def test_a_stop_while_the_model_loads_leaves_images_done_and_a_start_without_a_model_ends_their_wait(
    gated: GatedCaptioner, make_config: Callable[..., Config]
) -> None:
    config = make_config()
    daemon = Daemon(config, captioner=gated)
    daemon.start()
    drop_photos(config, PHOTOS[:3])
    wait_for(
        lambda: sum(row["stage"] == "caption" for row in read_images(config)) == 3,
        what="three images waiting for their caption",
    )

    started = time.monotonic()
    daemon.stop()  # the model is still loading: not waited for

    assert time.monotonic() - started < 5
    rows = read_images(config)
    assert [(row["status"], row["stage"], row["claimed_by"]) for row in rows] == [("done", "caption", None)] * 3
    assert all((config.data_dir / row["stored_path"]).is_file() for row in rows)  # no file lost

    again = Daemon(config)  # caption.model "none" this time
    again.start()
    try:
        rows = wait_for(lambda: all_done(config, 3), what="the next start to finish them")
    finally:
        again.stop()
    assert all(row["caption"] is None and row["caption_error"] is None for row in rows)
    assert list(config.inbox_dir.iterdir()) == []


def test_a_missing_model_delays_nothing_and_recaption_fills_in_later(
    tiny_blip: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    start_daemon: Callable[..., Daemon],
) -> None:
    from huggingface_hub import constants

    from models import config as config_module

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    config_file = tmp_path / "htx.toml"
    settings = """
[paths]
data_dir = "data"
[watch]
settle_ms = 200
rescan_s = 0
[pipeline]
workers = 2
[caption]
model = "{model}"
max_new_tokens = 4
"""
    config_file.write_text(settings.format(model="nobody/no-such-blip"))
    config = config_module.load(config_file)

    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="htx.caption"):
        start_daemon(config)
        assert time.monotonic() - started < 5
        drop_photos(config, PHOTOS[:3])
        rows = wait_for(lambda: all_done(config, 3), timeout=60, what="done without captions")

    reason = "caption model nobody/no-such-blip not available: not in the local Hugging Face cache"
    assert all(
        (row["caption"], row["caption_model"], row["caption_runtime"], row["caption_error"]) == (None, None, None, reason)
        for row in rows
    )
    assert read_state(config)["caption_status"] == f"unavailable: {reason}"
    [line] = [record.getMessage() for record in caplog.records if record.name == "htx.caption"]
    assert "nobody/no-such-blip" in line and "htx model download nobody/no-such-blip" in line

    config_file.write_text(settings.format(model=tiny_blip))
    assert cli.main(["--config", str(config_file), "recaption", "--missing"]) == cli.EXIT_OK

    rows = read_images(config)
    assert all(row["caption"] and row["caption_error"] is None for row in rows)
    assert {(row["caption_model"], row["caption_device"], row["status"]) for row in rows} == {(tiny_blip.name, "cpu", "done")}
    assert len({row["caption_runtime"] for row in rows}) == 1 and rows[0]["caption_runtime"]


def test_start_does_not_wait_for_torch_or_the_model(tmp_path: Path) -> None:
    # In a fresh interpreter, where importing torch and transformers alone takes seconds.
    script = """
import sys, time
from pathlib import Path
from models import config as config_module
from daemon.service import Daemon
config = config_module.parse(
    {"paths": {"data_dir": "data"}, "watch": {"rescan_s": 0}, "caption": {"model": "./not-a-model"}},
    base_dir=Path(sys.argv[1]),
)
daemon = Daemon(config)
print("torch" in sys.modules, flush=True)
daemon.start()
print(daemon.caption_status, flush=True)
while daemon.caption_status == "loading":
    time.sleep(0.02)
print(daemon.caption_status, flush=True)
daemon.stop()
"""
    (tmp_path / "not-a-model").mkdir()  # found, so torch and transformers are imported to read it
    completed = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=120, check=True
    )
    torch_before_start, at_start, after = completed.stdout.splitlines()
    assert (torch_before_start, at_start) == ("False", "loading")
    assert after == "unavailable: caption model not-a-model not available: not a saved BLIP model"


def test_with_a_model_never_compiled_images_are_done_at_once_and_captioned_once_it_is_ready(
    tiny_blip: Path, tmp_path: Path, make_config: Callable[..., Config], start_daemon: Callable[..., Daemon]
) -> None:
    import shutil

    from daemon.captions.openvino_cache import CACHE_FOLDER

    model = Path(shutil.copytree(tiny_blip, tmp_path / "never-compiled", ignore=shutil.ignore_patterns(CACHE_FOLDER)))
    config = make_config(caption={"model": str(model), "runtime": "openvino", "dtype": "float32", "max_new_tokens": 4})
    config.inbox_dir.mkdir(parents=True, exist_ok=True)
    drop_photos(config, PHOTOS[:3])  # there at the start: processed while the model compiles (seconds)
    daemon = start_daemon(config)

    def done_without_waiting() -> list[dict[str, Any]] | None:
        rows = read_images(config)
        waiting = [row for row in rows if (row["status"], row["stage"], row["caption"]) == ("done", "caption", None)]
        return rows if len(waiting) == 3 else None

    wait_for(done_without_waiting, timeout=60, what="the photos done, their captions to come, while the model compiles")
    assert (daemon.caption_status or "").startswith("preparing: preparing the caption model for this CPU (first start, about ")

    rows = wait_for(lambda: all_done(config, 3), timeout=120, what="the captions, with no command, once the model is ready")
    assert all(row["caption"] and len(row["caption"].split()) == 4 and row["caption_model"] == model.name for row in rows)
    assert daemon.caption_status.startswith("ready")
