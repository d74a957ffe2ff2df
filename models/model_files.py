"""Where a model setting (caption.model, search.model) points: a folder, or a hub id found in
the local Hugging Face cache only, and which of its files this process may not read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelSource:
    """Where a model setting points."""

    name: str  # stored with what it made: the hub id, or the folder's name (never a server path)
    location: str  # what from_pretrained gets: the hub id, or the folder's absolute path
    is_folder: bool


def model_source(model: str, base_dir: Path) -> ModelSource:
    """Read a model setting: an existing folder (relative to the config file), else a hub id.

    Something that can only be a path (absolute, ./, ../, ~, more than one slash) is a folder
    even when it does not exist, so the error says "folder not found" rather than "not cached".
    """
    path = Path(model).expanduser()
    if not path.is_absolute():
        path = (base_dir / path).resolve()
    looks_like_path = model.startswith(("/", ".", "~")) or model.count("/") > 1
    if path.is_dir() or looks_like_path:
        return ModelSource(name=path.name, location=str(path), is_folder=True)
    return ModelSource(name=model, location=model, is_folder=False)


def local_file(source: ModelSource, filename: str) -> Path | None:
    if source.is_folder:
        path = Path(source.location) / filename
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(source.location, filename)  # the cache only: never the network
    return Path(found) if isinstance(found, str) else None


def unreadable_files(folder: Path) -> list[str]:
    """The names of the files (and folders) under `folder` this process may not read."""
    found = []
    for top, folders, names in os.walk(folder, onerror=lambda error: found.append(Path(error.filename).name)):
        for name in folders:
            if not os.access(os.path.join(top, name), os.R_OK | os.X_OK):
                found.append(name + "/")
        for name in names:
            path = os.path.join(top, name)
            if not os.access(path, os.R_OK):  # follows the hub cache's links to its blobs
                found.append(os.path.relpath(path, folder))
    return sorted(set(found))
