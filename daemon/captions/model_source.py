"""Where `caption.model` points, and whether the daemon can read it there: before torch or
OpenVINO is loaded, so that a model that is missing or unreadable is said at once, with its fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from daemon.captions.errors import CaptionerUnavailable
from models.files import current_user


@dataclass(frozen=True)
class ModelSource:
    """Where `caption.model` points."""

    name: str  # stored as caption_model: the hub id, or the folder's name (never a server path)
    location: str  # what from_pretrained gets: the hub id, or the folder's absolute path
    is_folder: bool


def model_source(model: str, base_dir: Path) -> ModelSource:
    """Read `caption.model`: an existing folder (relative to the config file), else a hub id.

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


def processor_input_size(source: ModelSource) -> int | None:
    """The square edge the saved processor resizes to, read from its JSON without loading it.

    Known before the model loads, so images reduced meanwhile are reduced once, to the right
    size (the processor would resize others again).
    """
    for filename in ("preprocessor_config.json", "processor_config.json"):
        path = local_file(source, filename)
        if path is None:
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        size = data.get("image_processor", data).get("size") if isinstance(data, dict) else None
        if isinstance(size, dict):
            size = size.get("height")
        if isinstance(size, int) and size > 0:
            return size
    return None


def local_file(source: ModelSource, filename: str) -> Path | None:
    if source.is_folder:
        path = Path(source.location) / filename
        return path if path.is_file() else None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(source.location, filename)  # the cache only: never the network
    return Path(found) if isinstance(found, str) else None


def unavailable(source: ModelSource, problem: str, detail: str = "") -> CaptionerUnavailable:
    """The error for a model that cannot be loaded: a log line with the fix, a short reason."""
    if source.is_folder:
        fix = (
            "set caption.model to a folder holding a saved BLIP model (config.json, "
            "model.safetensors and the processor files) or to a hub id"
        )
        where = f"folder {source.location}"
    else:
        fix = (
            f"run `htx model download {source.name}` on a machine with network access (the daemon "
            "never downloads at start), or set caption.model to a folder holding a saved BLIP model"
        )
        where = source.name
    return CaptionerUnavailable(
        f"caption model {where} cannot be loaded: {problem}{': ' + detail if detail else ''}; to fix: {fix}",
        reason=f"caption model {source.name} not available: {problem}",
    )


def check_present(source: ModelSource) -> None:
    """CaptionerUnavailable, with the fix, when the checkpoint is not where it is said to be,
    or this process may not read it (a folder copied as root keeps root's 0600 files)."""
    if source.is_folder and not Path(source.location).is_dir():
        raise unavailable(source, "folder not found")
    if not source.is_folder and local_file(source, "config.json") is None:
        raise unavailable(source, "not in the local Hugging Face cache")
    folder = Path(source.location) if source.is_folder else Path(local_file(source, "config.json") or "").parent
    unreadable = unreadable_files(folder)
    if unreadable:
        user = current_user()
        raise CaptionerUnavailable(
            f"caption model {source.name}: permission denied to the user {user} for {', '.join(unreadable[:3])}"
            f"{' and more' if len(unreadable) > 3 else ''} in {folder}; to fix: chown -R {user}: {folder}",
            reason=f"caption model {source.name} not readable: permission denied",
        )


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
