"""Configuration: the shipped config.toml and the built-in defaults agree; caption relations."""

from __future__ import annotations

from pathlib import Path

import pytest

from models import config as config_module
from models.config import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_config_toml_holds_every_default() -> None:
    shipped = config_module.load(ROOT / "config.toml")
    assert config_module.as_dict(shipped) == config_module.as_dict(config_module.parse({}, base_dir=ROOT))


def test_captions_come_from_blip_base_by_default() -> None:
    assert config_module.parse({}, base_dir=ROOT).caption.model == "Salesforce/blip-image-captioning-base"


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_int8_needs_float32_weights(dtype: str) -> None:
    with pytest.raises(ConfigError, match="caption.quantize"):
        config_module.parse({"caption": {"quantize": "int8", "dtype": dtype}}, base_dir=ROOT)
