"""The API's in-memory index of search by meaning: every embedding of one model, float16, in one
array, ranked by an exact dot product with the query (the vectors are unit length: the dot
product is the cosine similarity).

Exact search over 100,000 vectors of 384 dimensions is one matrix-vector product of 77 MB,
about 8 ms on two cores through torch's float16 kernels (numpy has none: 180 ms); an
approximate index (hnswlib, usearch) would answer in well under a millisecond but hold a graph
beside the vectors and add a compiled dependency, for a saving no one sees next to the 15 ms of
embedding the query (bench/search.py). The index is filled from the database and topped up by
`seq`, which grows with every row written, so an image embedded in any process of the fleet is
searched here after the next top-up.
"""

from __future__ import annotations

import threading
from collections.abc import Collection

import numpy as np
from sqlalchemy import Connection

from models import embedding_reads
from models.text_embedder import VECTOR_DTYPE

# Rows read per statement while filling the index.
READ_ROWS = 10_000
# A top-up on PostgreSQL reads again the rows of this many seqs below the newest it has: there
# a transaction that took its seqs first can commit after one that took later ones, and would
# be passed over. A daemon writes a batch (search.batch_size, 64) in one transaction; this
# covers a dozen processes writing at once. SQLite's writes are one at a time: none is needed.
SEQ_SLACK = 1024
# Room added when the array is full, as a share of what it holds: a smaller share moves the
# vectors more often, a larger one holds memory no vector uses.
GROWTH = 0.25
MIN_GROWTH = 1024


class MeaningIndex:
    def __init__(self, model: str) -> None:
        self.model = model
        self.last_seq = 0
        self._lock = threading.Lock()
        self._vectors: np.ndarray | None = None  # (capacity, dimensions) float16
        self._ids = np.zeros(0, dtype=np.int64)
        self._count = 0
        self._position: dict[int, int] = {}  # image id -> row
        self._seqs = np.zeros(0, dtype=np.int64)  # the seq each row's vector came from
        self._first_capacity = MIN_GROWTH  # the first fill makes room for what it will read

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        """The memory the index holds (vectors, ids, the id map's entries, roughly)."""
        vectors = 0 if self._vectors is None else self._vectors.nbytes
        return vectors + self._ids.nbytes + self._seqs.nbytes + 100 * len(self._position)

    def refresh(self, connection: Connection) -> int:
        """Read the rows written since the last read; how many were new or changed."""
        changed = 0
        slack = SEQ_SLACK if connection.dialect.name == "postgresql" else 0
        after = max(0, self.last_seq - slack)
        if self._vectors is None:
            self._first_capacity = embedding_reads.embedded_count(connection, self.model) + MIN_GROWTH
        while True:
            rows = embedding_reads.written_since(connection, self.model, after, limit=READ_ROWS)
            changed += self.add(rows)
            if len(rows) < READ_ROWS:
                return changed
            after = rows[-1][0]

    def add(self, rows: list[tuple[int, int, bytes]]) -> int:
        """Take (seq, image id, vector) rows in: a new image's vector is appended, a known one's
        replaced (a row's seq is never written again: a new vector comes with a new seq). Rows
        already held (a top-up's slack) are passed over."""
        changed = 0
        with self._lock:
            for seq, image_id, data in rows:
                row = self._position.get(image_id)
                if row is not None and self._seqs[row] >= seq:
                    continue  # held already, or older than what is held
                vector = np.frombuffer(data, dtype=VECTOR_DTYPE)
                if row is None:
                    row = self._append_row(len(vector))
                    self._position[image_id] = row
                    self._ids[row] = image_id
                self._vectors[row] = vector
                self._seqs[row] = seq
                self.last_seq = max(self.last_seq, seq)
                changed += 1
        return changed

    def _append_row(self, dimensions: int) -> int:
        if self._vectors is None:
            self._vectors = np.zeros((self._first_capacity, dimensions), dtype=VECTOR_DTYPE)
            self._ids = np.zeros(self._first_capacity, dtype=np.int64)
            self._seqs = np.zeros(self._first_capacity, dtype=np.int64)
        elif self._count == len(self._vectors):
            capacity = self._count + max(MIN_GROWTH, int(self._count * GROWTH))
            vectors = np.zeros((capacity, dimensions), dtype=VECTOR_DTYPE)
            vectors[: self._count] = self._vectors[: self._count]
            ids = np.zeros(capacity, dtype=np.int64)
            ids[: self._count] = self._ids[: self._count]
            seqs = np.zeros(capacity, dtype=np.int64)
            seqs[: self._count] = self._seqs[: self._count]
            self._vectors, self._ids, self._seqs = vectors, ids, seqs
        self._count += 1
        return self._count - 1

    def rank(
        self,
        query: np.ndarray,
        *,
        limit: int,
        min_score: float,
        below: tuple[float, int] | None = None,
        boosted: Collection[int] = (),
        boost: float = 0.0,
        only: Collection[int] | None = None,
    ) -> list[tuple[int, float]]:
        """The best `limit` (image id, score), best first, ties newest id first: those scoring
        at least `min_score` and, with `below` (score, id), after it in that order. The ids in
        `boosted` score `boost` more, and those not in the index (no caption, or not embedded
        yet) are ranked too, at `boost`; with `only`, just those ids are ranked."""
        import torch

        with self._lock:
            count = self._count
            if count and self._vectors is not None:
                vectors = torch.from_numpy(self._vectors[:count])
                scores = (vectors @ torch.from_numpy(np.asarray(query, dtype=VECTOR_DTYPE))).float().numpy()
            else:
                scores = np.zeros(0, dtype=np.float32)
            ids = self._ids[:count].copy()
            unindexed = [image_id for image_id in boosted if image_id not in self._position]
        if unindexed:
            ids = np.concatenate([ids, np.array(unindexed, dtype=np.int64)])
            scores = np.concatenate([scores, np.zeros(len(unindexed), dtype=np.float32)])
        if boosted:
            scores[np.isin(ids, np.fromiter(boosted, dtype=np.int64))] += np.float32(boost)
        keep = scores >= np.float32(min_score)
        if below is not None:
            score, image_id = np.float32(below[0]), below[1]
            keep &= (scores < score) | ((scores == score) & (ids < image_id))
        if only is not None:
            keep &= np.isin(ids, np.fromiter(only, dtype=np.int64))
        candidates = np.flatnonzero(keep)
        if len(candidates) > limit:
            candidates = candidates[np.argpartition(-scores[candidates], limit - 1)[:limit]]
            # argpartition leaves ties at the boundary to chance: take every row that ties the
            # lowest kept score, so the order below (and the cursor) is the same every time.
            lowest = scores[candidates].min()
            candidates = np.union1d(candidates, np.flatnonzero(keep & (scores == lowest)))
        order = np.lexsort((-ids[candidates], -scores[candidates]))[:limit]
        return [(int(ids[row]), float(scores[row])) for row in candidates[order]]
