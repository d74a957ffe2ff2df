"""Where `caption.model` points, and whether the daemon can read it there: before torch or
OpenVINO is loaded, so that a model that is missing or unreadable is said at once, with its fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from daemon.captions.errors import CaptionerUnavailable
from models.files import current_user
from models.model_files import ModelSource, local_file, model_source, unreadable_files

__all__ = ["ModelSource", "check_present", "local_file", "model_source", "processor_input_size", "unavailable", "unreadable_files"]


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
