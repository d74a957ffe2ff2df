"""Why a file could not be processed.

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


class TooLarge(PipelineError):
    kind = "too_large"

    def __init__(self, detail: str) -> None:
        super().__init__(f"too large: {detail}")


class MissingFile(PipelineError):
    kind = "missing"

    def __init__(self, message: str = "the file disappeared before it could be processed") -> None:
        super().__init__(message)


class SourceChanged(MissingFile):
    """The file was deleted or rewritten in place while it was processed: what was read is gone."""

    def __init__(self) -> None:
        super().__init__(
            "the file was deleted or rewritten while it was being processed; a rewritten file is processed again"
        )
