"""BlipCaptioner: the real transformers loading code, on a tiny random-weight BLIP saved to disk.

What every runtime must do runs on both (torch, and openvino's compiled graphs); what is about
loading, the torch runtime's own precisions and CUDA runs on torch, which loads in a fraction of
a second. tests/daemon/captions/test_openvino_blip.py covers what is openvino's own.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from pathlib import Path

import pytest

from daemon.captions.blip import DEFAULT_INPUT_SIZE, BlipCaptioner
from daemon.captions.model_source import model_source
from daemon.captions.errors import CaptionCancelled, CaptionerUnavailable
from models.config import CaptionConfig
from tests.daemon.blip_fixtures import IMAGE_SIZE, SPECIAL, WORDS, SetOnLook, sample_images

RUNTIMES = ["torch", "openvino"]


def captioner_for(model: str, base_dir: Path, **settings: object) -> BlipCaptioner:
    """A captioner of 6-token captions; the torch runtime unless `runtime` says otherwise."""
    config = dataclasses.replace(CaptionConfig(), model=model, max_new_tokens=6, **{"runtime": "torch", **settings})
    return BlipCaptioner(config, base_dir)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("dtype", ["float32", "auto"])
def test_every_image_gets_a_caption_and_a_batch_matches_single_calls(tiny_blip: Path, dtype: str, runtime: str) -> None:
    captioner = captioner_for(str(tiny_blip), tiny_blip.parent, dtype=dtype, runtime=runtime)
    captioner.load()
    assert captioner.runtime is not None and captioner.runtime.startswith(runtime)
    images = sample_images()

    batched = captioner.caption(images)
    singles = [captioner.caption([image])[0] for image in images]

    assert batched == singles
    for caption in batched:
        assert isinstance(caption, str) and caption
        assert set(caption.split()) <= set(WORDS)
    assert len(set(batched)) > 1, "different images should give different captions"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_cancel_ends_generation_at_the_next_token(tiny_blip: Path, runtime: str) -> None:
    config = dataclasses.replace(CaptionConfig(), model=str(tiny_blip), runtime=runtime, dtype="float32", max_new_tokens=40)
    captioner = BlipCaptioner(config, tiny_blip.parent, min_new_tokens=40)  # never stops by itself
    captioner.load()
    assert captioner.runtime == f"{runtime} float32"
    cancel = SetOnLook(on=3)

    with pytest.raises(CaptionCancelled):
        captioner.caption(sample_images(), cancel=cancel)

    assert cancel.looks < 10, "generation went on after the cancel"
    with pytest.raises(CaptionCancelled):  # already set: the model is not even called
        captioner.caption(sample_images(), cancel=SetOnLook(on=1))
    assert len(captioner.caption(sample_images(), cancel=threading.Event())) == len(sample_images())


def test_what_it_reports_before_and_after_loading(tiny_blip: Path) -> None:
    captioner = captioner_for(str(tiny_blip), tiny_blip.parent, dtype="float32")
    # The input size is read from the saved processor's files, before anything loads.
    assert (captioner.model_name, captioner.device, captioner.input_size) == (tiny_blip.name, None, IMAGE_SIZE)

    captioner.load()

    assert (captioner.device, captioner.input_size, captioner.settings) == ("cpu", IMAGE_SIZE, "cpu, torch float32")
    assert captioner.runtime == "torch float32"


def test_the_input_size_defaults_to_blips_when_the_files_say_nothing(tmp_path: Path) -> None:
    assert captioner_for(str(tmp_path / "missing"), tmp_path).input_size == DEFAULT_INPUT_SIZE
    assert captioner_for("nobody/not-cached", tmp_path).input_size == DEFAULT_INPUT_SIZE


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_images_of_another_size_are_resized_by_the_processor(tiny_blip: Path, runtime: str) -> None:
    captioner = captioner_for(str(tiny_blip), tiny_blip.parent, runtime=runtime)
    captioner.load()
    small = sample_images()[0]
    large = small.resize((DEFAULT_INPUT_SIZE, DEFAULT_INPUT_SIZE))
    assert captioner.caption([large])[0]


def test_a_relative_folder_is_found_beside_the_config_file(tiny_blip: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_blip, tmp_path / "models" / "blip")
    captioner = captioner_for("models/blip", tmp_path)
    assert captioner.source.is_folder
    captioner.load()
    assert captioner.model_name == "blip"
    assert captioner.caption(sample_images()[:1])[0]


def test_a_hub_id_loads_from_the_local_cache(tiny_blip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    # The layout huggingface_hub gives a downloaded repo: refs/main names a snapshot folder.
    repo = tmp_path / "hub" / "models--Salesforce--blip-image-captioning-base"
    revision = "0" * 40
    shutil.copytree(tiny_blip, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))

    captioner = captioner_for("Salesforce/blip-image-captioning-base", tmp_path)
    assert not captioner.source.is_folder
    assert captioner.input_size == IMAGE_SIZE  # found in the cache too
    captioner.load()

    assert captioner.model_name == "Salesforce/blip-image-captioning-base"
    assert captioner.caption(sample_images()[:1])[0]


def test_a_hub_id_not_in_the_cache_fails_fast_and_says_how_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    captioner = captioner_for("nobody/no-such-blip", tmp_path)

    started = time.monotonic()
    with pytest.raises(CaptionerUnavailable) as raised:
        captioner.load()

    assert time.monotonic() - started < 30  # transformers alone would retry the hub for minutes
    message = str(raised.value)
    assert "nobody/no-such-blip" in message and "htx model download nobody/no-such-blip" in message
    assert "caption.model" in message
    assert raised.value.reason == "caption model nobody/no-such-blip not available: not in the local Hugging Face cache"


def test_a_missing_folder_is_named_in_the_log_but_not_in_the_reason(tmp_path: Path) -> None:
    captioner = captioner_for("./models/missing-blip", tmp_path)
    with pytest.raises(CaptionerUnavailable) as raised:
        captioner.load()
    assert str(tmp_path / "models" / "missing-blip") in str(raised.value)
    assert raised.value.reason == "caption model missing-blip not available: folder not found"


def test_a_folder_that_is_not_a_model_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "notes.txt").write_text("hello")
    with pytest.raises(CaptionerUnavailable) as raised:
        captioner_for(str(tmp_path / "not-a-model"), tmp_path).load()
    assert raised.value.reason == "caption model not-a-model not available: not a saved BLIP model"
    assert str(tmp_path) not in raised.value.reason


def test_int8_quantizes_the_linear_layers_and_still_captions(tiny_blip: Path) -> None:
    import torch

    # runtime auto: int8 is the torch runtime's own, so auto picks torch for it.
    captioner = captioner_for(str(tiny_blip), tiny_blip.parent, quantize="int8", runtime="auto")
    captioner.load()

    assert captioner.settings == "cpu, torch int8"
    model = captioner._model
    assert not any(type(module) is torch.nn.Linear for module in model.modules())
    assert all(captioner.caption(sample_images()))


def test_cuda_without_a_gpu_is_unavailable(tiny_blip: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(CaptionerUnavailable, match="no CUDA device"):
        captioner_for(str(tiny_blip), tiny_blip.parent, device="cuda").load()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_special_tokens_never_reach_a_caption(tiny_blip: Path, runtime: str) -> None:
    captioner = captioner_for(str(tiny_blip), tiny_blip.parent, runtime=runtime)
    captioner.load()
    tokens = captioner.generate(sample_images())
    captions = captioner.caption(sample_images())
    # The token ids do hold the start token ([DEC]): decoding must drop it.
    assert all(ids[0] == SPECIAL.index("[DEC]") for ids in tokens)
    for caption in captions:
        assert caption and not any(token in caption for token in SPECIAL)


@pytest.mark.parametrize(
    ("value", "is_folder", "name"),
    [
        ("Salesforce/blip-image-captioning-base", False, "Salesforce/blip-image-captioning-base"),
        ("Salesforce/blip-image-captioning-large", False, "Salesforce/blip-image-captioning-large"),
        ("./models/blip", True, "blip"),
        ("/srv/models/blip-large", True, "blip-large"),
        ("models/blip/base", True, "base"),
        ("~/blip", True, "blip"),
    ],
)
def test_model_source_tells_hub_ids_from_folders(tmp_path: Path, value: str, is_folder: bool, name: str) -> None:
    source = model_source(value, tmp_path)
    assert (source.is_folder, source.name) == (is_folder, name)
    if is_folder:
        assert Path(source.location).is_absolute()


def test_an_existing_folder_wins_over_a_hub_id_of_the_same_spelling(tmp_path: Path) -> None:
    (tmp_path / "Salesforce" / "blip-image-captioning-base").mkdir(parents=True)
    source = model_source("Salesforce/blip-image-captioning-base", tmp_path)
    assert source.is_folder and source.location == str(tmp_path / "Salesforce" / "blip-image-captioning-base")
