"""`htx stats`: the processing statistics as a table a person can read in a terminal."""

from __future__ import annotations

from datetime import datetime

from models.caption_state import caption_state
from models.embedding_reads import EmbeddingCounts
from models.stats_reads import Stats
from models.status_reads import DaemonStatus


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:5.1f} %" if whole else "    - "


def stats_table(
    stats: Stats, daemon: DaemonStatus | None, *, now: datetime, lease_s: float | None = None, captions_configured: bool = True
) -> list[str]:
    """Lines of the table; `now` is naive UTC, like the stored times; a worker heard from last
    over `lease_s` ago (pipeline.lease_s) is "gone"."""
    finished = stats.finished
    lines = [f"{'images':<14}{stats.total:>10,}"]
    for status in ("done", "failed", "pending", "processing"):
        count = stats.by_status[status]
        share = _share(count, finished) if status in ("done", "failed") else ""
        lines.append(f"  {status:<12}{count:>10,}  {share}".rstrip())
    lines += [
        f"{'queue depth':<14}{stats.queue_depth:>10,}",
        f"{'last hour':<14}{stats.processed_last_hour:>10,}  processed",
        "",
        f"{'time per image (done)':<24}{'average':>12}{'p50':>12}{'p95':>12}",
        f"{'  total':<24}{_ms(stats.average_ms):>12}{_ms(stats.p50_ms):>12}{_ms(stats.p95_ms):>12}",
    ]
    for stage, average in stats.stage_average_ms.items():
        if average:  # a stage nothing ran (no caption model): no line, rather than "0.0 ms"
            lines.append(f"  {stage:<22}{_ms(average):>12}")
    lines.append("")
    model = stats.caption_model or "none"
    device = f" on {stats.caption_device}" if stats.caption_device else ""
    runtime = f" ({stats.caption_runtime})" if stats.caption_runtime else ""
    lines.append(f"{'caption model':<14}{model}{device}{runtime}")
    captions = caption_state(stats.caption_status, configured=captions_configured)
    waiting = f" ({stats.uncaptioned:,} done image(s) without a caption)" if stats.uncaptioned else ""
    lines.append(f"{'captions':<14}{captions.words}{waiting}")
    if daemon is None:
        lines.append(f"{'daemon':<14}never started")
    else:
        age = daemon.heartbeat_age_s(now)
        state = {"stale": "not running"}.get(daemon.state(now), daemon.state(now))
        lines.append(f"{'daemon':<14}{state} (pid {daemon.pid}, last heartbeat {age:,.0f} s ago)")
        if stats.problem:
            lines.append(f"{'problem':<14}{stats.problem}")
    if len(stats.workers) > 1:
        lines += ["", f"{'workers':<24}{'state':>10}{'holding':>10}{'last hour':>12}  roles"]
        for worker in stats.workers:
            lines.append(
                f"  {worker.name:<22}{worker.status.state(now, lease_s):>10}{worker.holding:>10,}"
                f"{worker.processed_last_hour:>12,}  {worker.roles or ''}"
            )
    return lines


def search_line(model: str | None, counts: EmbeddingCounts | None) -> str:
    """How far the embedding of captions for search by meaning has got."""
    if model is None or counts is None:
        return f"{'search':<14}by words only (search.model is \"none\")"
    waiting = f", {counts.waiting:,} waiting" if counts.waiting else ""
    return f"{'search':<14}by meaning with {model}: {counts.embedded:,} caption(s) embedded{waiting}"
