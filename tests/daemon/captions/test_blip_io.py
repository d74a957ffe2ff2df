"""blip_io reads pixels and words as transformers' BlipProcessor does, without importing it."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daemon.captions.blip_io import MissingFiles, Pixels, Words
from tests.daemon.blip_fixtures import IMAGE_SIZE, SPECIAL, WORDS, sample_images


def test_pixels_are_the_processors(tiny_blip: Path) -> None:
    from transformers import BlipProcessor

    processor = BlipProcessor.from_pretrained(tiny_blip)
    # At the model's input size, as the pipeline hands them over, and one that is not.
    images = [*sample_images(), Image.linear_gradient("L").convert("RGB").resize((IMAGE_SIZE * 3, IMAGE_SIZE * 2))]

    mine = Pixels.from_folder(tiny_blip)(images)
    theirs = processor(images=images, return_tensors="np")["pixel_values"]

    assert mine.dtype == np.float32 and mine.shape == theirs.shape == (4, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert np.abs(mine - theirs).max() < 1e-5


def test_words_are_the_processors_and_special_tokens_are_found(tiny_blip: Path) -> None:
    from transformers import BlipProcessor

    tokenizer = BlipProcessor.from_pretrained(tiny_blip).tokenizer
    vocabulary = len(SPECIAL) + len(WORDS)
    rng = random.Random(7)
    captions = [[tokenizer.bos_token_id, *(rng.randrange(vocabulary) for _ in range(8)), tokenizer.sep_token_id] for _ in range(50)]
    words = Words(tiny_blip)

    assert words(captions) == [text.strip() for text in tokenizer.batch_decode(captions, skip_special_tokens=True)]
    assert words.special_ids() == {"bos": tokenizer.bos_token_id, "sep": tokenizer.sep_token_id, "pad": tokenizer.pad_token_id}


def test_a_checkpoint_without_the_files_is_left_to_transformers(tmp_path: Path) -> None:
    with pytest.raises(MissingFiles):
        Pixels.from_folder(tmp_path)
    with pytest.raises(MissingFiles):
        Words(tmp_path)
