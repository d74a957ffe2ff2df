"""The openvino caption runtime: compiled from the checkpoint, cached beside it, checked at every load.

On the tiny random-weight BLIP (tests/daemon/blip_fixtures.py) through BlipCaptioner, as the
daemon loads it. Compiling the tiny model takes a second or two: tests that only read reuse the
session model's cache; those that damage or replace something work on a copy in tmp_path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon.captions import openvino_blip
from daemon.captions.blip import BlipCaptioner, resolve_runtime
from daemon.captions.errors import CaptionCancelled
from models.config import CaptionConfig
from tests.daemon.blip_fixtures import IMAGE_SIZE, WORDS, SetOnLook, sample_images

REPO = Path(__file__).parents[3]
COMPILING = "compiling the caption model for openvino"
FALLBACK = "captioning with torch instead"


def captioner_for(
    model: Path, *, min_new_tokens: int = 0, cache_dir: Path | None = None, **settings: object
) -> BlipCaptioner:
    """A captioner of 6-token captions on the openvino runtime in float32, unless `settings` say otherwise."""
    values: dict[str, object] = {"runtime": "openvino", "dtype": "float32", "max_new_tokens": 6, **settings}
    config = dataclasses.replace(CaptionConfig(), model=str(model), **values)
    return BlipCaptioner(config, model.parent, min_new_tokens=min_new_tokens, cache_dir=cache_dir)


def loaded(model: Path, **settings: object) -> BlipCaptioner:
    captioner = captioner_for(model, **settings)
    captioner.load()
    return captioner


def compiling(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The "compiling ..." log lines caught so far: one per cache built."""
    return [record.getMessage() for record in caplog.records if record.getMessage().startswith(COMPILING)]


def caches(model: Path) -> list[Path]:
    """The compiled caches in a model folder's htx-compiled."""
    return sorted((model / openvino_blip.CACHE_FOLDER).glob("openvino-*"))


def file_times(folder: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in folder.iterdir()}


@pytest.fixture(autouse=True)
def caption_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="htx.caption")


@pytest.fixture(scope="module")
def torch_tokens(tiny_blip: Path) -> list[list[int]]:
    """What eager torch in float32 generates for sample_images(): what the f32 graph must give."""
    return loaded(tiny_blip, runtime="torch").generate(sample_images())


@pytest.fixture(scope="module")
def torch_captions(tiny_blip: Path) -> list[str]:
    return loaded(tiny_blip, runtime="torch").caption(sample_images())


@pytest.fixture(scope="module")
def compiled_blip(tiny_blip: Path) -> Path:
    """The session's tiny model, with its float32 cache (6 tokens, batches of 8) built."""
    assert loaded(tiny_blip).runtime == "openvino float32"
    return tiny_blip


@pytest.fixture
def fresh_copy(tiny_blip: Path, tmp_path: Path) -> Path:
    """The tiny model copied into tmp_path without any compiled cache."""
    return Path(shutil.copytree(tiny_blip, tmp_path / "blip", ignore=shutil.ignore_patterns(openvino_blip.CACHE_FOLDER)))


@pytest.fixture
def compiled_copy(compiled_blip: Path, tmp_path: Path) -> Path:
    """The tiny model copied into tmp_path with its compiled caches, for tests that damage them."""
    return Path(shutil.copytree(compiled_blip, tmp_path / "blip"))


def test_the_float32_graphs_give_exactly_the_tokens_of_eager_torch(
    compiled_blip: Path, torch_tokens: list[list[int]], torch_captions: list[str]
) -> None:
    captioner = captioner_for(compiled_blip)
    assert captioner.runtime is None and captioner.settings == "not loaded"

    captioner.load()

    assert (captioner.runtime, captioner.settings) == ("openvino float32", "cpu, openvino float32")
    assert captioner.input_size == IMAGE_SIZE
    assert captioner.generate(sample_images()) == torch_tokens
    captions = captioner.caption(sample_images())
    assert captions == torch_captions
    assert len(set(captions)) > 1, "different images should give different captions"
    assert all(set(caption.split()) <= set(WORDS) for caption in captions)


def test_the_first_load_compiles_and_later_loads_reuse_the_cache(
    fresh_copy: Path, caplog: pytest.LogCaptureFixture, torch_captions: list[str]
) -> None:
    first = loaded(fresh_copy)

    assert len(compiling(caplog)) == 1 and "(no compiled model yet)" in compiling(caplog)[0]
    [cache] = caches(fresh_copy)
    assert cache.name.endswith(openvino_blip.checkpoint_digest(fresh_copy)[:16])
    assert sorted(path.name for path in cache.iterdir()) == sorted([*openvino_blip.FILES, openvino_blip.MANIFEST])
    manifest = json.loads((cache / openvino_blip.MANIFEST).read_text())
    assert manifest["precision"] == "float32" and manifest["checkpoint_sha256"] == openvino_blip.checkpoint_digest(fresh_copy)
    assert (manifest["input_size"], manifest["max_new_tokens"]) == (IMAGE_SIZE, 6)
    assert not list((fresh_copy / openvino_blip.CACHE_FOLDER).glob("*.building-*")), "the build folder was left behind"
    times = file_times(cache)
    captions = first.caption(sample_images())
    caplog.clear()

    second = loaded(fresh_copy)

    assert compiling(caplog) == []
    assert caches(fresh_copy) == [cache] and file_times(cache) == times
    assert second.runtime == "openvino float32"
    assert second.caption(sample_images()) == captions == torch_captions


def _append_to_step_weights(cache: Path) -> None:
    with open(cache / "step.bin", "ab") as handle:
        handle.write(b"\0" * 16)


def _remove_encoder_graph(cache: Path) -> None:
    (cache / "encoder.xml").unlink()


def _manifest_of_another_openvino(cache: Path) -> None:
    manifest = json.loads((cache / openvino_blip.MANIFEST).read_text())
    (cache / openvino_blip.MANIFEST).write_text(json.dumps({**manifest, "openvino": "2023.0.0"}))


def _manifest_cut_short(cache: Path) -> None:
    text = (cache / openvino_blip.MANIFEST).read_text()
    (cache / openvino_blip.MANIFEST).write_text(text[: len(text) // 2])


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_append_to_step_weights, "step.bin changed since it was made"),
        (_remove_encoder_graph, "encoder.xml unreadable"),
        (_manifest_of_another_openvino, "made for another openvino"),
        (_manifest_cut_short, "unreadable manifest"),
    ],
    ids=["weights-changed", "graph-missing", "other-openvino", "manifest-cut-short"],
)
def test_a_damaged_cache_is_rebuilt_and_the_log_says_why(
    compiled_copy: Path,
    caplog: pytest.LogCaptureFixture,
    torch_captions: list[str],
    damage: Callable[[Path], None],
    reason: str,
) -> None:
    assert loaded(compiled_copy).runtime == "openvino float32"
    assert compiling(caplog) == [], "the copied cache should have been used as it is"
    [cache] = [path for path in caches(compiled_copy) if "-float32-s32-t6-" in path.name]
    damage(cache)

    captioner = loaded(compiled_copy)

    assert len(compiling(caplog)) == 1 and f"({reason}" in compiling(caplog)[0]
    assert captioner.caption(sample_images()) == torch_captions
    expected = {key: value for key, value in json.loads((cache / openvino_blip.MANIFEST).read_text()).items() if key != "files"}
    assert openvino_blip.cache_problem(cache, expected) is None
    caplog.clear()
    loaded(compiled_copy)
    assert compiling(caplog) == [], "the rebuilt cache should be used as it is"


def test_a_changed_checkpoint_gets_a_new_cache_and_the_old_ones_are_removed(
    compiled_copy: Path, caplog: pytest.LogCaptureFixture, torch_captions: list[str]
) -> None:
    from safetensors.torch import load_file, save_file

    old_caches = caches(compiled_copy)
    assert old_caches
    weights = load_file(compiled_copy / "model.safetensors")
    weights["vision_model.embeddings.patch_embedding.weight"] *= -1  # the same model, other weights
    save_file(weights, compiled_copy / "model.safetensors", metadata={"format": "pt"})

    captioner = loaded(compiled_copy)

    assert len(compiling(caplog)) == 1 and "(no compiled model yet)" in compiling(caplog)[0]
    [cache] = caches(compiled_copy)
    assert cache not in old_caches
    assert cache.name.endswith(openvino_blip.checkpoint_digest(compiled_copy)[:16])
    removed = [record.getMessage() for record in caplog.records if "compiled model of an earlier checkpoint" in record.getMessage()]
    assert len(removed) == len(old_caches)
    captions = captioner.caption(sample_images())
    assert captions == loaded(compiled_copy, runtime="torch").caption(sample_images())
    assert captions != torch_captions, "the new weights should give other captions"


@pytest.mark.parametrize("batch_size", [2, 4], ids=["in-chunks", "at-once"])
def test_an_image_gets_the_same_caption_alone_as_in_a_batch(
    tiny_blip: Path, torch_captions: list[str], batch_size: int
) -> None:
    captioner = loaded(tiny_blip, batch_size=batch_size)
    assert captioner._compiled.batch_size == batch_size  # 3 images: 2 then 1, or 3 at once

    batched = captioner.caption(sample_images())
    singles = [captioner.caption([image])[0] for image in sample_images()]

    assert batched == singles == torch_captions
    assert 1 in captioner._compiled._buffers, "a lone image should run as a batch of one, not padded"
    assert captioner.caption(sample_images() * 3) == torch_captions * 3


def test_a_cancel_mid_caption_raises_and_the_next_batch_is_unharmed(compiled_blip: Path) -> None:
    captioner = captioner_for(compiled_blip, min_new_tokens=6)  # never stops early by itself
    captioner.load()
    before = captioner.caption(sample_images())
    cancel = SetOnLook(on=4)  # set after the first token: the compiled step's buffers hold a half-made batch

    with pytest.raises(CaptionCancelled):
        captioner.caption(sample_images(), cancel=cancel)

    assert cancel.looks == cancel.on, "generation went on after the cancel"
    assert captioner.caption(sample_images()) == before


def _compile_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_plugin(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no CPU plugin")

    monkeypatch.setattr(openvino_blip.import_openvino().Core, "compile_model", no_plugin)


def _openvino_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)


@pytest.mark.parametrize(
    ("break_openvino", "error"),
    [(_compile_fails, "(RuntimeError: no CPU plugin)"), (_openvino_missing, "(ModuleNotFoundError: ")],
    ids=["cannot-compile", "not-installed"],
)
def test_when_openvino_cannot_run_it_says_so_once_and_captions_with_torch(
    compiled_blip: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    torch_captions: list[str],
    break_openvino: Callable[[pytest.MonkeyPatch], None],
    error: str,
) -> None:
    break_openvino(monkeypatch)

    captioner = loaded(compiled_blip)

    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith(f"caption runtime openvino cannot run {compiled_blip.name} on this machine {error}")
    assert warnings[0].endswith(FALLBACK)
    assert (captioner.runtime, captioner.settings) == ("torch float32", "cpu, torch float32")
    assert captioner.caption(sample_images()) == torch_captions


def test_compiling_never_phones_home_and_captioning_never_imports_torch(fresh_copy: Path, tmp_path: Path) -> None:
    # In a process of its own: telemetry starts with openvino's first import, which this pytest
    # process may have done long before. Without the guard, this writes ~/intel/openvino_ga_cid.
    home = tmp_path / "home"
    home.mkdir()
    script = textwrap.dedent(
        f"""
        import dataclasses
        import sys
        from pathlib import Path
        from daemon.captions.blip import BlipCaptioner
        from tests.daemon.blip_fixtures import sample_images
        from models.config import CaptionConfig

        config = dataclasses.replace(
            CaptionConfig(), model={str(fresh_copy)!r}, runtime="openvino", dtype="float32", max_new_tokens=6
        )
        captioner = BlipCaptioner(config, Path({str(tmp_path)!r}))
        captioner.load()
        print(captioner.runtime, len(captioner.caption(sample_images())), "torch" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env={**os.environ, "HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    # torch takes seconds and 200 MB to import: a warm start with openvino needs none of it.
    assert result.stdout.split() == ["openvino", "float32", "3", "False"]
    assert len(caches(fresh_copy)) == 1
    assert not (home / "intel").exists(), "openvino telemetry wrote its client id"


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder on a small tmpfs, for the test to fill and then remount read-only (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only file system needs root (root ignores file permissions)")
    folder = tmp_path / "read-only"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)], capture_output=True, text=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True, check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def test_a_read_only_model_folder_keeps_its_cache_in_the_data_folder(
    tiny_blip: Path, read_only_folder: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, torch_captions: list[str]
) -> None:
    model = Path(shutil.copytree(tiny_blip, read_only_folder / "blip", ignore=shutil.ignore_patterns(openvino_blip.CACHE_FOLDER)))
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_folder)], check=True)
    assert not os.access(model, os.W_OK)
    data = tmp_path / "data"

    captioner = captioner_for(model, cache_dir=data)
    captioner.load()

    assert captioner.runtime == "openvino float32"
    assert not (model / openvino_blip.CACHE_FOLDER).exists()
    [cache] = (data / openvino_blip.CACHE_FOLDER / "blip").glob("openvino-*")
    assert captioner._compiled.folder == cache
    assert any(str(data) in message and "goes to" in message for message in caplog.messages)
    assert len(compiling(caplog)) == 1
    assert captioner.caption(sample_images()) == torch_captions
    caplog.clear()
    again = captioner_for(model, cache_dir=data)
    again.load()
    assert compiling(caplog) == [], "the cache in the data folder should be used on the next load"


def test_auto_precision_is_bfloat16_for_the_encoder_and_float16_for_the_step_where_native(compiled_blip: Path) -> None:
    native = openvino_blip.native_precisions()
    assert "float32" in native

    captioner = loaded(compiled_blip, runtime="auto", dtype="auto")

    encoder = "bfloat16" if "bfloat16" in native else "float32"
    step = "float16" if "float16" in native else "float32"
    expected = f"{encoder}+{step}" if encoder != step else encoder
    assert captioner.runtime == f"openvino {expected}"
    assert (captioner._compiled.precision.encoder, captioner._compiled.precision.step) == (encoder, step)
    captions = captioner.caption(sample_images())
    assert len(captions) == 3 and all(captions)
    assert all(set(caption.split()) <= set(WORDS) for caption in captions)


@pytest.mark.parametrize(
    ("native", "label"),
    [
        ({"float32", "bfloat16", "float16"}, "bfloat16+float16"),
        ({"float32", "bfloat16"}, "bfloat16+float32"),
        ({"float32", "float16"}, "float32+float16"),
        ({"float32"}, "float32"),
    ],
)
def test_auto_precision_follows_what_the_cpu_computes(monkeypatch: pytest.MonkeyPatch, native: set[str], label: str) -> None:
    monkeypatch.setattr(openvino_blip, "native_precisions", lambda: native)
    assert str(openvino_blip.resolve_precision("auto")) == label
    assert str(openvino_blip.resolve_precision("float32")) == "float32"


def test_a_precision_the_cpu_lacks_runs_as_float32_and_says_so(
    compiled_blip: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, torch_captions: list[str]
) -> None:
    monkeypatch.setattr(openvino_blip, "native_precisions", lambda: {"float32"})

    captioner = loaded(compiled_blip, dtype="float16")

    assert captioner.runtime == "openvino float32"  # what ran, not what was asked for
    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert warnings == ["caption.dtype = float16 is not native on this CPU for openvino; running float32"]
    assert captioner.caption(sample_images()) == torch_captions


@pytest.mark.parametrize(
    ("settings", "device", "runtime"),
    [
        ({}, "cpu", "openvino"),
        ({}, "cuda:0", "torch"),
        ({"quantize": "int8"}, "cpu", "torch"),
        ({"num_beams": 3}, "cpu", "torch"),
        ({"runtime": "torch"}, "cpu", "torch"),
        ({"runtime": "openvino"}, "cpu", "openvino"),
    ],
)
def test_auto_picks_openvino_on_the_cpu_unless_only_torch_can(settings: dict[str, object], device: str, runtime: str) -> None:
    assert resolve_runtime(dataclasses.replace(CaptionConfig(), **settings), device) == runtime


def test_beam_search_under_auto_loads_torch(compiled_blip: Path) -> None:
    captioner = loaded(compiled_blip, runtime="auto", num_beams=2)
    assert captioner.runtime == "torch float32"
    assert all(captioner.caption(sample_images()))


def test_a_hub_id_keeps_its_cache_in_its_snapshot_folder(
    tiny_blip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, torch_captions: list[str]
) -> None:
    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--Salesforce--blip-image-captioning-base"
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(tiny_blip, snapshot, ignore=shutil.ignore_patterns(openvino_blip.CACHE_FOLDER))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    config = dataclasses.replace(
        CaptionConfig(), model="Salesforce/blip-image-captioning-base", runtime="openvino", dtype="float32", max_new_tokens=6
    )

    captioner = BlipCaptioner(config, tmp_path)
    captioner.load()

    assert captioner.runtime == "openvino float32"
    assert captioner._compiled.folder.parent == snapshot / openvino_blip.CACHE_FOLDER
    assert captioner.caption(sample_images()) == torch_captions


def _flip_a_byte(path: Path) -> None:
    """The same size, one byte in the middle changed, in place (the inode stays)."""
    with open(path, "r+b") as handle:
        handle.seek(path.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))


def test_a_warm_start_hashes_nothing_and_a_changed_file_is_caught_by_its_size_time_and_inode(
    compiled_copy: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, torch_captions: list[str]
) -> None:
    from daemon.captions import openvino_cache

    loaded(compiled_copy)  # a copy: new inodes, so its files are hashed once and their signatures kept
    assert compiling(caplog) == []
    hashed: list[str] = []
    real_digest = openvino_cache.file_digest
    monkeypatch.setattr(openvino_cache, "file_digest", lambda path: hashed.append(path.name) or real_digest(path))

    loaded(compiled_copy)

    assert hashed == [], "a warm start should trust files whose size, mtime and inode are unchanged"
    [cache] = [path for path in caches(compiled_copy) if "-float32-s32-t6-" in path.name]
    _flip_a_byte(cache / "step.bin")

    captioner = loaded(compiled_copy)

    assert "step.bin" in hashed
    assert len(compiling(caplog)) == 1 and "(step.bin changed since it was made)" in compiling(caplog)[0]
    assert captioner.caption(sample_images()) == torch_captions


def test_htx_model_verify_hashes_everything_and_removes_a_damaged_compiled_model(
    compiled_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str], torch_captions: list[str]
) -> None:
    from daemon import cli

    config_file = tmp_path / "htx.toml"
    config_file.write_text(
        f'[paths]\ndata_dir = "data"\n[caption]\nmodel = "{compiled_copy}"\nruntime = "openvino"\ndtype = "float32"\nmax_new_tokens = 6\n'
    )
    loaded(compiled_copy)
    assert cli.main(["--config", str(config_file), "model", "verify"]) == cli.EXIT_OK
    assert "intact" in capsys.readouterr().out
    [cache] = [path for path in caches(compiled_copy) if "-float32-s32-t6-" in path.name]
    # Damage a start's cheap check cannot see: same size, same inode, the old mtime put back.
    times = (cache / "encoder.bin").stat()
    _flip_a_byte(cache / "encoder.bin")
    os.utime(cache / "encoder.bin", ns=(times.st_atime_ns, times.st_mtime_ns))
    caplog.clear()
    loaded(compiled_copy)
    assert compiling(caplog) == []

    assert cli.main(["--config", str(config_file), "model", "verify"]) == cli.EXIT_FAILURE

    out = capsys.readouterr().out
    assert "(encoder.bin changed since it was made): removed" in out
    assert not cache.exists()
    assert loaded(compiled_copy).caption(sample_images()) == torch_captions
    assert (cache / openvino_blip.MANIFEST).is_file(), "the next load should have compiled it again"


def test_too_little_free_memory_to_compile_says_so_once_and_captions_with_torch(
    fresh_copy: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, torch_captions: list[str]
) -> None:
    from daemon.captions import openvino_build

    monkeypatch.setattr(openvino_build, "available_memory", lambda: 1000)  # bytes

    captioner = loaded(fresh_copy)

    warnings = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "(BuildFailed: compiling it needs about " in warnings[0] and "GB of free memory and this machine has 0.0 GB available)" in warnings[0]
    assert warnings[0].endswith(FALLBACK)
    assert captioner.runtime == "torch float32" and caches(fresh_copy) == []
    assert captioner.caption(sample_images()) == torch_captions
