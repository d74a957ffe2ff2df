"""Opt-in (`pytest -m real_model`): the real Salesforce weights, where the local cache has them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from PIL import Image

from daemon.captions.blip import BlipCaptioner
from daemon.captions.errors import CaptionerUnavailable
from daemon.stages.pipeline import caption_image
from models.config import CaptionConfig

pytestmark = pytest.mark.real_model

MODELS = ["Salesforce/blip-image-captioning-base", "Salesforce/blip-image-captioning-large"]
CORPUS = Path(__file__).parents[2] / "corpus"
PHOTOS = ["Landscape_1.jpg", "flower.jpg", "hopper.jpg", "mpo_frozenpond.jpg", "pil_sample_rgb.jpg", "Landscape_6.jpg"]


def loaded(model: str, base_dir: Path, **settings: object) -> BlipCaptioner:
    captioner = BlipCaptioner(dataclasses.replace(CaptionConfig(), model=model, **settings), base_dir)
    try:
        captioner.load()
    except CaptionerUnavailable as error:
        pytest.skip(f"{error.reason} (htx model download {model})")
    return captioner


@pytest.mark.parametrize("model", MODELS)
def test_a_photo_of_a_cat_is_captioned_as_a_cat(tmp_path: Path, model: str) -> None:
    captioner = loaded(model, tmp_path)
    data = pytest.importorskip("skimage.data", reason="the cat photo comes from scikit-image (skimage.data.chelsea)")
    photo = Image.fromarray(data.chelsea())

    [caption] = captioner.caption([caption_image(photo, 1, captioner.input_size)])

    assert "cat" in caption.lower(), caption


@pytest.mark.parametrize("model", MODELS)
def test_the_default_runtime_captions_real_photos_as_float32_torch_does(tmp_path: Path, model: str) -> None:
    default = loaded(model, tmp_path)
    reference = loaded(model, tmp_path, runtime="torch", dtype="float32")
    photos = []
    for name in PHOTOS:
        with Image.open(CORPUS / name) as image:
            photos.append(caption_image(image.convert("RGB"), 1, default.input_size))

    captions, expected = default.caption(photos), reference.caption(photos)

    same = total = 0
    for mine, theirs in zip(captions, expected, strict=True):
        total += max(len(mine.split()), len(theirs.split()))
        same += sum(a == b for a, b in zip(mine.split(), theirs.split(), strict=False))
    # Trained weights have peaked logits: precision rarely flips a word (random weights do).
    assert same / total >= 0.8, f"{default.runtime}: {captions} against torch float32: {expected}"
