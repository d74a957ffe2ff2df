"""`htx model download`: the one command that fetches a model (never reached here: offline)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from daemon import cli


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty local hub cache with huggingface_hub in offline mode: no test touches the network."""
    from huggingface_hub import constants

    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_a_model_the_hub_cannot_give_fails_with_one_clear_line(
    offline_hub: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    assert cli.main(["model", "download", "nobody/no-such-blip"]) == cli.EXIT_FAILURE
    assert time.monotonic() - started < 30
    [line] = capsys.readouterr().err.splitlines()  # the CLI's logging goes to stderr
    assert line.startswith("ERROR htx: could not download nobody/no-such-blip: ")
    assert "caption.model to a folder" in line and ".." not in line


def test_a_model_already_in_the_cache_is_reported_there(
    offline_hub: Path, tiny_blip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = offline_hub / "models--Salesforce--blip-image-captioning-base"
    shutil.copytree(tiny_blip, repo / "snapshots" / ("1" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("1" * 40)

    assert cli.main(["model", "download", "Salesforce/blip-image-captioning-base"]) == cli.EXIT_OK
    assert "Salesforce/blip-image-captioning-base is in the local cache" in capsys.readouterr().out


def test_the_default_name_is_caption_model(
    tmp_path: Path, offline_hub: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = tmp_path / "htx.toml"
    config_file.write_text('[caption]\nmodel = "someone/their-blip"\n')
    assert cli.main(["--config", str(config_file), "model", "download"]) == cli.EXIT_FAILURE
    assert "could not download someone/their-blip" in capsys.readouterr().err


@pytest.mark.parametrize(("model", "message"), [("none", 'caption.model is "none"'), ("./models/blip", "is a folder")])
def test_nothing_to_download_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: str, message: str
) -> None:
    config_file = tmp_path / "htx.toml"
    config_file.write_text(f'[caption]\nmodel = "{model}"\n')
    assert cli.main(["--config", str(config_file), "model", "download"]) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_download_search_fetches_search_model(tmp_path: Path, offline_hub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file = tmp_path / "htx.toml"
    config_file.write_text('[search]\nmodel = "someone/their-minilm"\n')
    assert cli.main(["--config", str(config_file), "model", "download", "--search"]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "could not download someone/their-minilm" in err and "search.model to a folder" in err
    config_file.write_text('[search]\nmodel = "none"\n')
    assert cli.main(["--config", str(config_file), "model", "download", "--search"]) == cli.EXIT_USAGE
    assert 'search.model is "none"' in capsys.readouterr().err
