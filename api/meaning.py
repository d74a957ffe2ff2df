"""Search by meaning in the API: the query embedded by the search model (loaded once, at the
first search, on a worker thread), the in-memory index topped up at most every REFRESH_S, and
a page of done images ranked by score, with the filters and cursor of the list.

`match=auto` adds AUTO_WORDS_BOOST to the score of the images word search finds too (up to
AUTO_WORD_MATCHES of them): those come first, by meaning among themselves, so an exact word (a
file name above all, which no caption's meaning holds) is never lost, and the rest follow by
meaning. bench/search.py measures it against both.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from anyio import to_thread

from api.context import Reader
from api.errors import ServiceUnavailable
from api.meaning_index import MeaningIndex
from models import embedding_reads, image_reads
from models.config import SearchConfig
from models.embedding_reads import EmbeddingCounts
from models.text_embedder import SearchModelUnavailable, TextEmbedder

log = logging.getLogger("htx.api")

# The index is read again for new embeddings at most this often, when a search comes.
REFRESH_S = 1.0
# How old the counts of /api/stats and /metrics may be.
COUNTS_MAX_AGE_S = 5.0
# Query embeddings kept: the gallery searches as a word is typed, and a page after the first
# asks again for the same words.
QUERY_CACHE = 256
AUTO_WORDS_BOOST = 1.0
AUTO_WORD_MATCHES = 200
# A page ranks this many times its length first, and more while the records of those ranked
# (deleted since they were embedded, or not done) leave it short.
CANDIDATES_PER_ITEM = 2


@dataclass(frozen=True)
class RankedPage:
    items: list[tuple[dict[str, Any], float]]  # (list item, score), best first
    next_below: tuple[float, int] | None  # the cursor: the next page ranks after this (score, id)


def _use_threads(threads: int) -> None:
    import torch

    # torch's intra-op threads are the process's: in the API, only search uses torch.
    torch.set_num_threads(threads)


class MeaningSearch:
    def __init__(self, search: SearchConfig, base_dir: Path) -> None:
        self.embedder = TextEmbedder(search.model, base_dir)
        self.index = MeaningIndex(self.embedder.key)
        self.min_score = search.min_score
        self.threads = search.threads
        self.loaded_in_s: float | None = None  # the first fill of the index
        self._refreshed_at: float | None = None
        self._refresh_lock = anyio.Lock()
        self._topping_up: asyncio.Task | None = None
        self._counts: tuple[float, EmbeddingCounts] | None = None  # (monotonic, counts)
        self._counting: asyncio.Task | None = None
        self._model_lock = anyio.Lock()
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()

    @property
    def model(self) -> str:
        return self.embedder.key

    async def refresh(self, reader: Reader, *, force: bool = False) -> None:
        """Top the index up (the first time: fill it), unless done within REFRESH_S."""
        async with self._refresh_lock:
            now = time.monotonic()
            if not force and self._refreshed_at is not None and now - self._refreshed_at < REFRESH_S:
                return
            first = self._refreshed_at is None
            started = time.perf_counter()
            await reader.run_apart(self.index.refresh)
            self._refreshed_at = time.monotonic()
            if first:
                self.loaded_in_s = time.perf_counter() - started
                log.info("search index: %d embeddings of %s read in %.2f s", len(self.index), self.model, self.loaded_in_s)

    async def settle(self) -> None:
        """Wait for the reads started in the background: before the app's engine goes, whose
        connections they hold on worker threads."""
        await asyncio.gather(*(task for task in (self._topping_up, self._counting) if task is not None), return_exceptions=True)

    def top_up_soon(self, reader: Reader) -> None:
        """Top the index up in the background when it is due, so no search waits for the read
        (PostgreSQL's, with its slack, takes 15 ms); the next search sees what it read."""
        due = self._refreshed_at is None or time.monotonic() - self._refreshed_at >= REFRESH_S
        if due and (self._topping_up is None or self._topping_up.done()):
            self._topping_up = asyncio.get_running_loop().create_task(self._top_up(reader))

    async def _top_up(self, reader: Reader) -> None:
        try:
            await self.refresh(reader)
        except Exception as error:  # noqa: BLE001 - the next search tries again
            log.warning("search index not topped up: %s", type(error).__name__)

    async def counts(self, reader: Reader) -> EmbeddingCounts:
        """embedding_reads.counts, at most COUNTS_MAX_AGE_S old: two index scans (tens of ms
        at 100,000 images) that /api/stats would pay on every change; an older answer is given
        while a new one is read in the background."""
        if self._counts is None:
            self._counts = (time.monotonic(), await reader.run_apart(embedding_reads.counts, self.model))
        elif time.monotonic() - self._counts[0] >= COUNTS_MAX_AGE_S and (self._counting is None or self._counting.done()):
            self._counting = asyncio.get_running_loop().create_task(self._count(reader))
        return self._counts[1]

    async def _count(self, reader: Reader) -> None:
        try:
            self._counts = (time.monotonic(), await reader.run_apart(embedding_reads.counts, self.model))
        except Exception as error:  # noqa: BLE001 - the next request tries again
            log.warning("search counts not read: %s", type(error).__name__)

    async def embed_query(self, text: str) -> np.ndarray:
        key = " ".join(text.lower().split())
        found = self._queries.get(key)
        if found is not None:
            self._queries.move_to_end(key)
            return found
        if not self.embedder.loaded:
            async with self._model_lock:  # one load, however many searches wait for it
                await self._load()
        try:
            vector = (await to_thread.run_sync(self.embedder.embed, [key]))[0]
        except SearchModelUnavailable as error:
            raise ServiceUnavailable(f"Search by meaning is not available now: {error.reason}.") from None
        self._queries[key] = vector
        if len(self._queries) > QUERY_CACHE:
            self._queries.popitem(last=False)
        return vector

    async def _load(self) -> None:
        if self.embedder.loaded:
            return
        started = time.perf_counter()
        if self.threads:
            await to_thread.run_sync(_use_threads, self.threads)
        try:
            await to_thread.run_sync(self.embedder.load)
        except SearchModelUnavailable as error:
            log.error("%s", error)
            raise ServiceUnavailable(f"Search by meaning is not available now: {error.reason}.") from None
        log.info("search model %s loaded in %.1f s", self.model, time.perf_counter() - started)

    async def page(
        self,
        reader: Reader,
        text: str,
        *,
        limit: int,
        below: tuple[float, int] | None,
        statuses: Sequence[str] | None,
        sha256: str | None,
        words: bool = False,
    ) -> RankedPage:
        """A page of the done images closest in meaning to `text` (with `words`, as match=auto)."""
        kept_statuses = [name for name in (statuses or ("done",)) if name == "done"]
        if not kept_statuses:
            return RankedPage([], None)  # only done images have a caption's embedding
        query = await self.embed_query(text)
        if len(self.index) == 0 and self._refreshed_at is None:
            await self.refresh(reader)  # the first fill: nothing to rank before it
        else:
            self.top_up_soon(reader)
        boosted: set[int] = set()
        if words:
            found = await reader.run(image_reads.list_images, limit=AUTO_WORD_MATCHES, status="done", search=text)
            boosted = {row["id"] for row in found.items}
        only = None
        if sha256 is not None:
            row = await reader.run(image_reads.image_by_sha256, sha256)
            only = {row["id"]} if row is not None else set()
        wanted = (limit + 1) * CANDIDATES_PER_ITEM
        while True:
            # A matrix product over every vector (milliseconds): on a worker thread, so other
            # requests go on meanwhile.
            ranked = await to_thread.run_sync(
                partial(
                    self.index.rank,
                    query,
                    limit=wanted,
                    min_score=self.min_score,
                    below=below,
                    boosted=boosted,
                    boost=AUTO_WORDS_BOOST,
                    only=only,
                )
            )
            rows = await reader.run(embedding_reads.summaries, [image_id for image_id, _ in ranked], kept_statuses, sha256)
            by_id = {row["id"]: row for row in rows}
            kept = [(by_id[image_id], score) for image_id, score in ranked if image_id in by_id]
            if len(kept) > limit or len(ranked) < wanted:
                break
            wanted *= 4
        if len(kept) > limit:
            last_row, last_score = kept[limit - 1]
            return RankedPage(kept[:limit], (last_score, last_row["id"]))
        return RankedPage(kept, None)
