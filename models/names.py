"""File names: what a person sees of one (never a path on the server), what the database keeps
of one, and names that fit the filesystem's limit."""

from __future__ import annotations

import os
import unicodedata
import urllib.parse

MAX_NAME_CHARS = 255
# Linux's limit on one name (NAME_MAX), in bytes.
MAX_NAME_BYTES = 255


def _shown(part: str) -> str:
    """One name as shown: bytes that are not UTF-8 (a Latin-1 Samba client's "caf\\xe9.jpg",
    which Python holds as surrogate escapes) written as \\xNN, control characters dropped."""
    if any("\udc80" <= char <= "\udcff" for char in part):
        part = os.fsencode(part).decode("utf-8", errors="backslashreplace")
    return "".join(char for char in part if unicodedata.category(char)[0] != "C").strip()


def display_name(name: str, *, keep_folders: bool = False) -> str:
    """A safe name to show: no control characters, no `..`, no leading slash, no raw bytes.

    With `keep_folders` the name is a path inside the inbox: its folders stay ("2024/trip/a.jpg")
    and a backslash is part of a name, as Linux has it. Otherwise it is a name a client sent,
    which may be a Windows path ("C:\\photos\\a.jpg"): only its last part is kept.
    """
    if keep_folders:
        parts = name.split("/")
    else:
        parts = name.replace("\\", "/").split("/")[-1:]
    cleaned = "/".join(_shown(part) for part in parts if part not in ("", ".", ".."))
    return cleaned[-MAX_NAME_CHARS:] or "unnamed"


# A relative path never starts with "/": the mark of a stored name that needed escaping.
_ESCAPED = "/"


def stored_name(relative: str) -> str:
    """A path relative to the inbox as the database keeps it: as it is when it is valid UTF-8,
    else its bytes percent-encoded behind a leading "/" (the database holds only UTF-8 text,
    and the daemon needs the exact bytes to find the file again after a restart)."""
    try:
        relative.encode("utf-8")
    except UnicodeEncodeError:
        return _ESCAPED + urllib.parse.quote_from_bytes(os.fsencode(relative), safe="/")
    return relative


def real_name(stored: str) -> str:
    """The inverse of `stored_name`: the path as the filesystem has it."""
    if stored.startswith(_ESCAPED):
        return os.fsdecode(urllib.parse.unquote_to_bytes(stored[len(_ESCAPED) :]))
    return stored


def fit_name(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """`name` shortened so that it takes at most `limit` bytes on disk, extension kept."""
    if len(os.fsencode(name)) <= limit:
        return name
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem or len(os.fsencode(suffix)) > 16:
        stem, suffix = name, ""
    room = limit - (len(os.fsencode(suffix)) + 1 if suffix else 0)
    raw = os.fsencode(stem)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        stem = os.fsdecode(raw[:room])  # not text anyway: any cut will do
    else:
        stem = raw[:room].decode("utf-8", errors="ignore")  # never half a character
    return f"{stem}.{suffix}" if suffix else stem
