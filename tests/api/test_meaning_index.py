"""The API's in-memory index: ranking, ties and cursors, boosts and filters, top-ups by seq."""

from __future__ import annotations

import numpy as np

from api.meaning_index import MIN_GROWTH, MeaningIndex
from models.text_embedder import to_bytes


def unit(*values: float) -> np.ndarray:
    vector = np.array(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def after(ranked: tuple[int, float]) -> tuple[float, int]:
    """The cursor after a ranked (image id, score): (score, image id)."""
    return (ranked[1], ranked[0])


def filled(vectors: dict[int, np.ndarray]) -> MeaningIndex:
    index = MeaningIndex("m")
    index.add([(seq, image_id, to_bytes(vector)) for seq, (image_id, vector) in enumerate(vectors.items(), 1)])
    return index


def test_best_first_ties_newest_first_and_the_cursor_goes_on_after_the_last() -> None:
    index = filled({1: unit(1, 0), 2: unit(0, 1), 3: unit(1, 0), 4: unit(1, 1), 5: unit(-1, 0)})
    query = unit(1, 0)
    assert [image_id for image_id, _ in index.rank(query, limit=10, min_score=-1)] == [3, 1, 4, 2, 5]
    assert [image_id for image_id, _ in index.rank(query, limit=10, min_score=0.5)] == [3, 1, 4]
    first = index.rank(query, limit=1, min_score=-1)
    assert first == [(3, 1.0)]
    following = index.rank(query, limit=2, min_score=-1, below=after(first[-1]))
    assert [image_id for image_id, _ in following] == [1, 4]
    assert [image_id for image_id, _ in index.rank(query, limit=10, min_score=-1, below=after(following[-1]))] == [2, 5]


def test_many_ties_at_the_edge_of_a_page_come_in_a_stable_order() -> None:
    index = filled({image_id: unit(1, 0) for image_id in range(1, 201)})
    pages, below = [], None
    while True:
        page = index.rank(unit(1, 0), limit=7, min_score=0, below=below)
        if not page:
            break
        pages += [image_id for image_id, _ in page]
        below = after(page[-1])
    assert pages == list(range(200, 0, -1))


def test_boosted_ids_come_first_and_only_narrows() -> None:
    index = filled({1: unit(1, 0), 2: unit(0, 1), 3: unit(1, 1)})
    ranked = index.rank(unit(1, 0), limit=10, min_score=0.5, boosted={2}, boost=1.0)
    assert [image_id for image_id, _ in ranked] == [2, 1, 3]
    # A word match with no embedding (no caption yet) is ranked at the boost alone.
    ranked = index.rank(unit(1, 0), limit=10, min_score=0.5, boosted={2, 7}, boost=1.0)
    assert ranked[:2] == [(7, 1.0), (2, 1.0)] and [image_id for image_id, _ in ranked[2:]] == [1, 3]
    assert MeaningIndex("empty").rank(unit(1, 0), limit=5, min_score=0.5, boosted={4}, boost=1.0) == [(4, 1.0)]
    assert [image_id for image_id, _ in index.rank(unit(1, 0), limit=10, min_score=-1, only={3, 99})] == [3]
    assert index.rank(unit(1, 0), limit=10, min_score=-1, only=set()) == []


def test_a_top_up_replaces_a_vector_in_place_and_grows_past_the_first_block() -> None:
    index = filled({1: unit(1, 0)})
    assert index.add([(1, 1, to_bytes(unit(0, 1)))]) == 0  # the slack of a top-up: held already
    assert index.add([(2, 1, to_bytes(unit(0, 1)))]) == 1
    assert len(index) == 1 and index.rank(unit(0, 1), limit=1, min_score=0) == [(1, 1.0)]
    index.add([(seq, seq, to_bytes(unit(1, seq))) for seq in range(3, MIN_GROWTH + 10)])
    assert len(index) == MIN_GROWTH + 8 and index.last_seq == MIN_GROWTH + 9
    assert index.nbytes >= (MIN_GROWTH + 8) * 2 * 2


def test_an_empty_index_ranks_nothing() -> None:
    assert MeaningIndex("m").rank(unit(1, 0), limit=5, min_score=-1) == []
