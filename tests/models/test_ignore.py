"""Ignore rules: which inbox names never become records."""

from __future__ import annotations

from pathlib import Path

from models.ignore import IgnoreRules


def test_ignore_rules_match_every_part_of_the_path() -> None:
    rules = IgnoreRules(("*.part", ".*", "@eaDir"))
    assert rules.ignored(Path("a/b/c.part"))
    assert rules.ignored(Path("@eaDir/x.jpg"))
    assert rules.ignored(Path("x/.cache/y.jpg"))
    assert rules.ignored(Path("X.PART"))
    assert not rules.ignored(Path("album/photo.jpg"))
