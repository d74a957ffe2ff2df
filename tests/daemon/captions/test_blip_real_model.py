"""Opt-in (`pytest -m real_model`): the real Salesforce weights, where the local cache has them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from daemon.captions.blip import BlipCaptioner
from daemon.captions.captioner import CaptionerUnavailable
from daemon.stages.pipeline import caption_image
from models.config import CaptionConfig

pytestmark = pytest.mark.real_model


@pytest.mark.parametrize("model", ["Salesforce/blip-image-captioning-base", "Salesforce/blip-image-captioning-large"])
def test_a_photo_of_a_cat_is_captioned_as_a_cat(tmp_path: Path, model: str) -> None:
    from PIL import Image

    captioner = BlipCaptioner(dataclasses.replace(CaptionConfig(), model=model), tmp_path)
    try:
        captioner.load()
    except CaptionerUnavailable as error:
        pytest.skip(f"{error.reason} (htx model download {model})")
    data = pytest.importorskip("skimage.data", reason="the cat photo comes from scikit-image (skimage.data.chelsea)")
    photo = Image.fromarray(data.chelsea())

    [caption] = captioner.caption([caption_image(photo, 1, captioner.input_size)])

    assert "cat" in caption.lower(), caption
