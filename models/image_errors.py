"""Why an image is refused: the errors of a file's bytes that the daemon and the API both raise.

`sniff_format` (models.formats) raises them; the daemon stores them on a failed record, the
API turns `UnsupportedFormat` into a refused upload. The daemon's own faults (a file too large,
gone, or rewritten while processed; a full disk) are in daemon.errors.

Each error is a kind of `PipelineError`; its message is what gets stored and shown, so it
says what is wrong with the file in words a person can act on, and never holds a server path.
"""

from __future__ import annotations


class PipelineError(Exception):
    """A file that cannot become a `done` record. `kind` is stored as `error_kind`."""

    kind = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedFormat(PipelineError):
    kind = "unsupported"

    def __init__(self, format_name: str) -> None:
        super().__init__(f"unsupported format: {format_name} (only JPEG and PNG are accepted)")
        self.format_name = format_name


class CorruptImage(PipelineError):
    kind = "corrupt"

    def __init__(self, detail: str) -> None:
        super().__init__(f"corrupt image: {detail}")
