"""Display names: what a person sees of a file name, never a path on the server."""

from __future__ import annotations

import unicodedata

MAX_NAME_CHARS = 255


def display_name(name: str, *, keep_folders: bool = False) -> str:
    """A safe name to show: no control characters, no `..`, no leading slash.

    With `keep_folders`, folders inside the inbox stay ("2024/trip/a.jpg"); otherwise only the
    last part is kept, as for a name a client sent.
    """
    parts = [part for part in name.replace("\\", "/").split("/") if part not in ("", ".", "..")]
    if not keep_folders:
        parts = parts[-1:]
    cleaned = "/".join(
        "".join(char for char in part if unicodedata.category(char)[0] != "C").strip() for part in parts
    )
    return cleaned[-MAX_NAME_CHARS:] or "unnamed"
