"""A tiny BLIP with random weights, saved like a real checkpoint, for tests of the caption path.

It is loaded by path through the production loader (daemon/captions/blip.py), so the tests exercise the
real `from_pretrained` code; it takes a fraction of a second to build and to run.
"""

from __future__ import annotations

import threading
from pathlib import Path

from PIL import Image

IMAGE_SIZE = 32
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]"]
WORDS = (
    "a an the of on in with and two dog cat bird man woman child car boat tree house road field "
    "beach sky water table sofa bed red blue green white black small large sitting standing "
    "running lying near under picture photo flowers mountain city"
).split()


def build_tiny_blip(folder: Path) -> Path:
    """Save a BLIP processor and model (a few thousand parameters) into `folder`."""
    import torch
    from transformers import BertTokenizer, BlipConfig, BlipForConditionalGeneration, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    vocab = {word: index for index, word in enumerate(SPECIAL + WORDS)}
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", additional_special_tokens=["[ENC]"])
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    config = BlipConfig(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "image_size": IMAGE_SIZE,
            "patch_size": 8,
            "projection_dim": 32,
        },
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 64,
            "projection_dim": 32,
            "bos_token_id": vocab["[DEC]"],
            "pad_token_id": vocab["[PAD]"],
            "sep_token_id": vocab["[SEP]"],
            "eos_token_id": vocab["[SEP]"],
        },
        projection_dim=32,
        image_text_hidden_size=32,
    )
    torch.manual_seed(0)
    model = BlipForConditionalGeneration(config)
    with torch.no_grad():
        # Wider random weights, so different images give clearly different captions (the
        # default initialisation makes every image look alike), and never a special token, so
        # every caption is words all the way to max_new_tokens.
        for module in model.modules():
            if isinstance(module, torch.nn.Linear | torch.nn.Conv2d | torch.nn.Embedding):
                module.weight.normal_(0.0, 0.3)
        model.vision_model.embeddings.class_embedding.normal_(0.0, 0.3)
        model.vision_model.embeddings.position_embedding.normal_(0.0, 0.3)
        model.text_decoder.cls.predictions.bias[: len(SPECIAL)] = -1e4
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def sample_images() -> list[Image.Image]:
    """Three different RGB images, already at the tiny model's input size."""
    return [
        Image.linear_gradient("L").convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE)),
        Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (200, 30, 30)),
        Image.effect_mandelbrot((IMAGE_SIZE, IMAGE_SIZE), (-2, -1.5, 1, 1.5), 50).convert("RGB"),
    ]


class SetOnLook(threading.Event):
    """An event that reads as set from its `on`-th look: a stop arriving mid-generation."""

    def __init__(self, on: int) -> None:
        super().__init__()
        self.on, self.looks = on, 0

    def is_set(self) -> bool:
        self.looks += 1
        return self.looks >= self.on
