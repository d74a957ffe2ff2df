"""`htx recaption`: captions done images again from their stored originals, beside a live daemon."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from daemon import cli
from daemon.service import Daemon
from models.config import Config
from models.db import make_engine
from models.tables import Image
from tests.helpers import CORPUS_DIR, copy_in, finished, read_images, wait_for

PHOTOS = ["flower.jpg", "hopper.png", "Landscape_3.jpg"]

pytestmark = pytest.mark.both_backends


@pytest.fixture(autouse=True)
def _database_from_the_environment(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's config file names no database: on PostgreSQL, $HTX_DATABASE_URL does."""
    if database_url:
        monkeypatch.setenv("HTX_DATABASE_URL", database_url)


def write_config(folder: Path, model: str, max_new_tokens: int) -> Path:
    path = folder / "htx.toml"
    path.write_text(
        f"""
[paths]
data_dir = "data"
[caption]
model = "{model}"
dtype = "float32"
max_new_tokens = {max_new_tokens}
batch_size = 2
"""
    )
    return path


def by_name(config: Config) -> dict[str, dict[str, Any]]:
    return {row["filename"]: row for row in read_images(config)}


@pytest.fixture
def captioned(
    tiny_blip: Path, tmp_path: Path, make_config: Callable[..., Config], start_daemon: Callable[..., Daemon]
) -> Config:
    """Three photos captioned (5 words each) and one failed file, the daemon still running."""
    config = make_config(caption={"model": str(tiny_blip), "dtype": "float32", "max_new_tokens": 5})
    start_daemon(config)
    for name in [*PHOTOS, "broken.png"]:
        copy_in(CORPUS_DIR / name, config.inbox_dir / name)
    wait_for(lambda: len(finished(read_images(config))) == 4, timeout=60, what="the daemon to finish")
    return config


def recaption(tmp_path: Path, model: str, *args: str, max_new_tokens: int = 2) -> int:
    return cli.main(["--config", str(write_config(tmp_path, model, max_new_tokens)), "recaption", *args])


def set_caption(config: Config, image_id: int, caption: str | None, error: str | None) -> None:
    engine = make_engine(config.database_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                update(Image.__table__).where(Image.id == image_id).values(caption=caption, caption_error=error)
            )
    finally:
        engine.dispose()


def words(config: Config) -> dict[str, int | None]:
    return {name: len(row["caption"].split()) if row["caption"] else None for name, row in by_name(config).items()}


def test_missing_captions_only_those_without_a_caption(
    captioned: Config, tiny_blip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flower = by_name(captioned)["flower.jpg"]
    set_caption(captioned, flower["id"], None, "caption model x not available: not in the local Hugging Face cache")

    assert recaption(tmp_path, str(tiny_blip), "--missing") == cli.EXIT_OK

    assert words(captioned) == {"flower.jpg": 2, "hopper.png": 5, "Landscape_3.jpg": 5, "broken.png": None}
    row = by_name(captioned)["flower.jpg"]
    assert (row["caption_error"], row["caption_model"], row["caption_device"]) == (None, tiny_blip.name, "cpu")
    assert row["caption_runtime"] and len(row["caption_runtime"]) <= 32
    assert row["caption_ms"] > 0
    assert "recaptioned 1 image(s)" in capsys.readouterr().out


def test_ids_or_everything_done(captioned: Config, tiny_blip: Path, tmp_path: Path) -> None:
    hopper = by_name(captioned)["hopper.png"]["id"]
    assert recaption(tmp_path, str(tiny_blip), str(hopper)) == cli.EXIT_OK
    assert words(captioned) == {"flower.jpg": 5, "hopper.png": 2, "Landscape_3.jpg": 5, "broken.png": None}

    assert recaption(tmp_path, str(tiny_blip)) == cli.EXIT_OK
    assert words(captioned) == {"flower.jpg": 2, "hopper.png": 2, "Landscape_3.jpg": 2, "broken.png": None}
    assert by_name(captioned)["broken.png"]["status"] == "failed"


def test_the_same_settings_give_the_daemons_captions_back(captioned: Config, tiny_blip: Path, tmp_path: Path) -> None:
    # Same original, same decode and reduction, same model: the same words.
    before = {name: row["caption"] for name, row in by_name(captioned).items()}
    assert recaption(tmp_path, str(tiny_blip), max_new_tokens=5) == cli.EXIT_OK
    assert {name: row["caption"] for name, row in by_name(captioned).items()} == before


def test_an_id_that_is_not_a_done_image_is_reported(
    captioned: Config, tiny_blip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = by_name(captioned)["broken.png"]["id"]
    assert recaption(tmp_path, str(tiny_blip), str(broken), "999") == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert f"image {broken} is not a done image" in err and "image 999 is not a done image" in err


def test_an_unavailable_model_fails_at_once(captioned: Config, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = by_name(captioned)
    assert recaption(tmp_path, str(tmp_path / "no-such-model")) == cli.EXIT_FAILURE
    assert "no-such-model cannot be loaded: folder not found" in capsys.readouterr().err
    assert by_name(captioned) == before


def test_no_model_configured_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert recaption(tmp_path, "none") == cli.EXIT_USAGE
    assert 'caption.model is "none"' in capsys.readouterr().err


def test_no_database_yet(tiny_blip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert recaption(tmp_path, str(tiny_blip)) == cli.EXIT_FAILURE
    assert "no database" in capsys.readouterr().err
