"""The caption batches a daemon has run: how many images each held and how long it took.

The daemon counts them (daemon/captions/caption_worker.py) and writes the counts with its
heartbeat (daemon_state.caption_batches, JSON); the API's /metrics reads them back as
Prometheus histograms, one series per worker. Counts in fixed buckets, each batch in the first
bucket it fits (not cumulative), so the JSON stays small whatever the number of batches.
"""

from __future__ import annotations

import json
import threading
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any

SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


@dataclass
class CaptionBatches:
    """Counts since the daemon started; `record` from the caption thread, `to_json` from the
    heartbeat's."""

    batches: int = 0
    images: int = 0
    seconds: float = 0.0
    # One count per bucket, the last for what is above the largest bound.
    sizes: list[int] = field(default_factory=lambda: [0] * (len(SIZE_BUCKETS) + 1))
    durations: list[int] = field(default_factory=lambda: [0] * (len(SECONDS_BUCKETS) + 1))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, size: int, seconds: float) -> None:
        with self._lock:
            self.batches += 1
            self.images += size
            self.seconds += seconds
            self.sizes[bisect_left(SIZE_BUCKETS, size)] += 1
            self.durations[bisect_left(SECONDS_BUCKETS, seconds)] += 1

    def to_json(self) -> str:
        with self._lock:
            values = {"batches": self.batches, "images": self.images, "seconds": round(self.seconds, 6),
                      "sizes": list(self.sizes), "durations": list(self.durations)}
        return json.dumps(values, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | None) -> CaptionBatches | None:
        """What a heartbeat wrote; None for none, or for what this version cannot read."""
        if not text:
            return None
        try:
            values: dict[str, Any] = json.loads(text)
            counts = cls(int(values["batches"]), int(values["images"]), float(values["seconds"]),
                         [int(n) for n in values["sizes"]], [int(n) for n in values["durations"]])
        except (ValueError, KeyError, TypeError):
            return None
        if len(counts.sizes) != len(SIZE_BUCKETS) + 1 or len(counts.durations) != len(SECONDS_BUCKETS) + 1:
            return None  # written with other buckets (another version of HTX)
        return counts
