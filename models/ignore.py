"""Which names in the inbox never become records (`watch.ignore`).

The daemon's watcher skips them; the API names an upload so that the watcher will not skip it.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path


class IgnoreRules:
    """Names that never become records: hidden files, temporary names, NAS litter."""

    def __init__(self, patterns: tuple[str, ...]) -> None:
        self._patterns = tuple(pattern.lower() for pattern in patterns)

    def ignored_name(self, name: str) -> bool:
        lowered = name.lower()
        return any(fnmatch.fnmatchcase(lowered, pattern) for pattern in self._patterns)

    def ignored(self, relative: Path) -> bool:
        """True if any part of the path (a folder or the file) matches a pattern."""
        return any(self.ignored_name(part) for part in relative.parts)
