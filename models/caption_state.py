"""What a daemon's caption status means for people: one source for /api/stats, `htx stats`
and the gallery, so they never disagree (one saying "off" while another says "preparing").

The daemon writes its status with its heartbeat (daemon_state.caption_status): "loading",
"preparing: <what it does>", "ready (<settings>)" or "unavailable: <reason>".
"""

from __future__ import annotations

from dataclasses import dataclass

FIX = "htx model download (or set caption.model to a model folder), restart the daemon, then htx recaption --missing"


@dataclass(frozen=True)
class CaptionState:
    available: bool
    reason: str | None  # why no caption is made now; None when the model is ready
    fix: str | None  # what to do about it; None when nothing needs doing (the model is on its way)

    @property
    def words(self) -> str:
        """One line: "ready", or the reason, with the fix when there is one."""
        if self.available:
            return "ready"
        return f"{self.reason}; to fix: {self.fix}" if self.fix else str(self.reason)


def caption_state(status: str | None, *, configured: bool) -> CaptionState:
    """`status`: the running daemon's caption status (None: no daemon runs with a model);
    `configured`: whether caption.model names a model."""
    if not configured:
        return CaptionState(False, 'caption.model is "none"', "set caption.model to a hub id or a model folder")
    if status is None:
        return CaptionState(False, "no daemon is running with the model", FIX)
    if status.startswith("ready"):
        return CaptionState(True, None, None)
    if status == "loading":
        return CaptionState(False, "the caption model is loading", None)
    if status.startswith("preparing: "):
        return CaptionState(False, status.removeprefix("preparing: "), None)
    reason = status.removeprefix("unavailable: ")
    # "caption model <name> not available: <why>": the model is not installed, not the name
    _, missing, why = reason.partition(" not available: ")
    if missing:
        reason = f"model not installed ({why})"
    return CaptionState(False, reason, FIX)
