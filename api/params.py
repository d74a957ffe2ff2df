"""What a request asks for, read from its path, query and headers: only that, or a clear error."""

from __future__ import annotations

import re

from starlette.requests import Request

from api.errors import NotFound

_DIGITS = re.compile(r"[0-9]{1,19}")
MAX_ID = 2**63 - 1  # SQLite's largest integer


def whole_number(text: str, maximum: int = MAX_ID) -> int | None:
    """`text` as a number from 0 to `maximum`, or None. Only ASCII digits: str.isdigit and int()
    also take "²" and "٣", and int() takes spaces, signs and underscores."""
    if not _DIGITS.fullmatch(text):
        return None
    number = int(text)
    return number if number <= maximum else None


def image_id_of(request: Request) -> int:
    """The {image_id} of the path; NotFound when it cannot be one."""
    # Not the routes' {image_id:int}: its int() fails on 5,000 digits, which would be a 500.
    image_id = whole_number(request.path_params["image_id"])
    if image_id is None:
        raise NotFound("No image with this id.")
    return image_id


def etags(header: str) -> set[str]:
    """The entity tags of an If-None-Match header, weak ones as strong (W/ dropped)."""
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}
