"""What a captioner raises, and the caption_error words they share: apart from every
captioner, so that the runtimes, the worker and the commands import them without importing
each other."""

from __future__ import annotations


# The caption_error of an image whose caption came out empty (only special tokens).
NO_WORDS = "the caption model produced no words"


class CaptionerUnavailable(Exception):
    """The model cannot be used (not downloaded, wrong path...).

    `str(error)` is the log line: it names the model and how to fix it (it may name a server
    folder). `reason` is the short form stored as an image's `caption_error`: no server paths.
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class CaptionCancelled(Exception):
    """`cancel` was set while captioning (the daemon is stopping): the batch has no captions."""
