"""Display names, the database's form of a name, and names that fit the filesystem."""

from __future__ import annotations

import os

import pytest

from models.names import MAX_NAME_BYTES, display_name, fit_name, real_name, stored_name

LATIN1 = os.fsdecode(b"2024/caf\xe9.jpg")  # how Python holds a name that is not UTF-8


def test_bytes_that_are_not_utf8_are_shown_as_escapes() -> None:
    assert display_name(LATIN1, keep_folders=True) == "2024/caf\\xe9.jpg"
    assert display_name(LATIN1) == "caf\\xe9.jpg"
    display_name(LATIN1).encode("utf-8")  # storable and printable


def test_a_backslash_in_an_inbox_name_is_part_of_the_name() -> None:
    assert display_name("scans/a\\b.jpg", keep_folders=True) == "scans/a\\b.jpg"
    # A client's name may be a Windows path: only its last part is the name.
    assert display_name("C:\\Users\\me\\b.jpg") == "b.jpg"


def test_control_characters_and_dot_folders_are_dropped() -> None:
    assert display_name("../a\x07b/./c\n.jpg", keep_folders=True) == "ab/c.jpg"


@pytest.mark.parametrize("name", ["a.jpg", "2024/été/a.jpg", LATIN1, os.fsdecode(b"\xff/\xfe%2F.png"), "/x"[1:]])
def test_stored_names_are_text_and_give_back_the_exact_name(name: str) -> None:
    stored = stored_name(name)
    stored.encode("utf-8")
    assert real_name(stored) == name
    assert os.fsencode(real_name(stored)) == os.fsencode(name)


def test_utf8_names_are_stored_as_they_are() -> None:
    assert stored_name("2024/été/a.jpg") == "2024/été/a.jpg"


@pytest.mark.parametrize("stem", ["n" * 300, "é" * 200, os.fsdecode(b"\xe9" * 300)])
def test_fit_name_keeps_the_extension_within_the_limit(stem: str) -> None:
    fitted = fit_name(stem + ".jpeg", 100)
    assert len(os.fsencode(fitted)) <= 100 and fitted.endswith(".jpeg")
    assert fit_name("short.jpg") == "short.jpg"
    assert len(os.fsencode(fit_name(stem + ".jpg"))) <= MAX_NAME_BYTES


def test_fit_name_never_cuts_a_character_in_two() -> None:
    fitted = fit_name("é" * 10 + ".jpg", 9)  # 5 bytes for the stem: room for 2.5 of them
    assert fitted == "éé.jpg"
