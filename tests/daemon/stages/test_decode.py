from __future__ import annotations

from pathlib import Path

import pytest
from daemon.stages.decode import configure_pillow, decode
from daemon.errors import CorruptImage, TooLarge
from tests.helpers import CORPUS_DIR


def test_pixel_limit_rejects_before_decoding(tmp_path: Path) -> None:
    configure_pillow(10_000)
    try:
        with pytest.raises(TooLarge, match="pipeline.max_pixels") as raised:
            decode(CORPUS_DIR / "hopper.jpg", max_pixels=10_000, box=300)
        assert "16,384" in raised.value.message  # 128 x 128
        # A 4-gigapixel bomb in 4,856 bytes is refused at the header.
        with pytest.raises(TooLarge):
            decode(CORPUS_DIR / "lottapixel.jpg", max_pixels=10_000, box=300)
    finally:
        configure_pillow(89_478_485)


def test_large_jpeg_is_decoded_at_reduced_scale() -> None:
    with decode(CORPUS_DIR / "Landscape_1.jpg", max_pixels=10**8, box=300) as decoded:
        pass
    assert (decoded.width, decoded.height) == (1800, 1200)
    # 1/4 scale still covers a 300 px box; a full decode would be 1800 x 1200.
    assert decoded.image.size == (450, 300)
    assert min(decoded.image.size) >= 300


def test_mpo_is_a_jpeg() -> None:
    with decode(CORPUS_DIR / "mpo_frozenpond.jpg", max_pixels=10**8, box=300) as decoded:
        assert decoded.format == "JPEG"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("truncated_jpeg.jpg", "truncated"),
        ("truncated_image.png", "truncated"),
        ("broken.png", "not a readable PNG"),
        ("png_decompression_dos.png", "too large"),  # a text-chunk bomb: corrupt, with Pillow's words
        ("empty.jpg", "empty"),
    ],
)
def test_corrupt_files_say_what_is_wrong_without_server_paths(name: str, words: str) -> None:
    with pytest.raises(CorruptImage) as raised:
        decode(CORPUS_DIR / name, max_pixels=10**8, box=300)
    message = raised.value.message
    assert message.startswith("corrupt image: ")
    assert words in message
    assert str(CORPUS_DIR) not in message and "/" not in message
