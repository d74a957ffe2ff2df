"""`GET /api/images?q=`: words in file names and captions, over the search index of migration
0003 (FTS5 on SQLite, a tsvector on PostgreSQL): the same searches find the same images on both."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update
from starlette.testclient import TestClient

from models import image_reads, migrate, search_reads
from models.db import make_engine
from models.search_reads import MAX_SEARCH_TERMS, search_expression, search_words
from models.tables import Image
from tests.api.conftest import config_for, serve
from tests.conftest import new_database_url

pytestmark = pytest.mark.both_backends

# filename, caption, status
ROWS = [
    ("hopper.jpg", "a man wearing a hat", "done"),
    ("2024/trip/IMG_0042.jpg", "a dog running on the beach", "done"),
    ("2024/trip/IMG_0043.jpg", "black and white photo of a dog", "done"),
    ("Café de Flore.png", "crème brûlée on a plate", "done"),
    ("<?php phpinfo(); ?>.jpg", None, "done"),
    ("broken.png", None, "failed"),
    ("done.jpg", None, "pending"),  # a word that is also a status
    ('say "cheese" AND smile.jpg', "NEAR(the camera)", "done"),
]


@pytest.fixture(scope="module")
def searchable(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest, backend: str
) -> Iterator[TestClient]:
    config = config_for(tmp_path_factory.mktemp("search"), database={"url": new_database_url(request)})
    engine = make_engine(config.database_url)
    migrate.upgrade(engine)
    with engine.begin() as connection:
        for number, (filename, caption, status) in enumerate(ROWS):
            connection.execute(
                insert(Image.__table__).values(
                    sha256=f"{number:064x}", filename=filename, caption=caption, status=status,
                    received_at=datetime(2026, 1, 1), size_bytes=1,
                )
            )
    engine.dispose()
    with serve(config) as client:
        yield client


def _names(client: TestClient, q: str, **params: str) -> list[str]:
    response = client.get("/api/images", params={"q": q} | params)
    assert response.status_code == 200, (q, response.text)
    return [item["filename"] for item in response.json()["items"]]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("dog", ["2024/trip/IMG_0043.jpg", "2024/trip/IMG_0042.jpg"]),  # captions, newest first
        ("hopper", ["hopper.jpg"]),  # a file name
        ("HOPPER.JPG", ["hopper.jpg"]),  # case, and the extension as a word
        ("img_0042", ["2024/trip/IMG_0042.jpg"]),  # punctuation splits words the same way
        ("0043", ["2024/trip/IMG_0043.jpg"]),
        ("trip", ["2024/trip/IMG_0043.jpg", "2024/trip/IMG_0042.jpg"]),  # a folder
        ("ho", ["hopper.jpg"]),  # prefixes, while typing
        ("be", ["2024/trip/IMG_0042.jpg"]),
        ("dog beach", ["2024/trip/IMG_0042.jpg"]),  # every word must be found
        ("hopper hat", ["hopper.jpg"]),  # in the name or the caption
        ("dog cat", []),
        ("cafe creme", ["Café de Flore.png"]),  # accents folded
        ("php", ["<?php phpinfo(); ?>.jpg"]),
        ("<?php", ["<?php phpinfo(); ?>.jpg"]),
        ("done", ["done.jpg"]),  # the status is not searched as a word
        ("and", ['say "cheese" AND smile.jpg', "2024/trip/IMG_0043.jpg"]),  # operators are words
        ('"cheese"', ['say "cheese" AND smile.jpg']),
        ("near(the", ['say "cheese" AND smile.jpg']),
    ],
)
def test_words_are_found_in_names_and_captions(searchable, q: str, expected: list[str]) -> None:
    client = searchable
    assert _names(client, q) == expected


@pytest.mark.parametrize(
    "q",
    ['"', '""', "'", "*", "-", "^", ":", "{", "}", "(", ")", "a*b", "NOT", "OR", "AND", "NEAR", "NEAR(", "a OR",
     "-dog", "dog -", "caption:dog", "{caption}: dog", "status : done", "dog^", "+", "\\", "a\x00b", "\x00",
     "dög\u0301", "🐕", "日本語", "x" * 200, " ".join(["dog"] * 50), "%", "_", "rowid", "images_search"],
)
def test_no_query_is_an_error(searchable, q: str) -> None:
    client = searchable
    response = client.get("/api/images", params={"q": q})
    assert response.status_code == 200, (q, response.text)
    assert isinstance(response.json()["items"], list)


def test_random_punctuation_never_fails(searchable) -> None:
    client = searchable
    rng = random.Random(6)
    alphabet = '"\'*-^:{}()+.,;!?<>/\\|&=~`@#$%[] \tANDORNOTnear' + "dogé"
    for _ in range(200):
        q = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 30)))
        assert client.get("/api/images", params={"q": q}).status_code == 200, q


def test_only_punctuation_finds_nothing_and_blank_is_no_search(searchable) -> None:
    client = searchable
    assert _names(client, '" * -') == []
    everything = client.get("/api/images").json()["items"]
    assert len(everything) == len(ROWS)
    assert client.get("/api/images", params={"q": "  "}).json()["items"] == everything
    assert client.get("/api/images", params={"q": ""}).json()["items"] == everything


def test_search_with_status(searchable) -> None:
    client = searchable
    assert _names(client, "png", status="failed") == ["broken.png"]
    assert _names(client, "png", status="done") == ["Café de Flore.png"]
    assert _names(client, "done", status="done") == []
    assert _names(client, "done", status="pending") == ["done.jpg"]


def test_too_long_is_400(searchable) -> None:
    client = searchable
    response = client.get("/api/images", params={"q": "x" * 201})
    assert response.status_code == 400
    assert response.json() == {"error": "q must be at most 200 characters."}


def test_expression_quotes_every_word() -> None:
    assert search_expression(search_words('say "hi" -x')) == '{filename caption} : ("say"* """hi"""* "-x"*)'
    assert search_words(" -- ** ") == []
    assert search_words("a\0b") == ["a", "b"]
    assert len(search_words(" ".join(f"w{n}" for n in range(40)))) == MAX_SEARCH_TERMS


@pytest.mark.parametrize(("walk_rows", "walk_more"), [(2000, 8000), (1, 1), (9, 20), (4, 200)])
def test_search_pages_with_the_cursor_and_status(
    tmp_path: Path, database_url: str, walk_rows: int, walk_more: int, monkeypatch
) -> None:
    """Keyset pages over a search, alone and with a status, against the answer worked out here.

    PostgreSQL walks the newest rows, maybe some more, then asks the index for older
    matches: with short walks, pages come from all three, and from each alone."""
    monkeypatch.setattr(search_reads, "SEARCH_WALK_ROWS", walk_rows)
    monkeypatch.setattr(search_reads, "SEARCH_WALK_MORE", walk_more)
    config = config_for(tmp_path, database={"url": database_url})
    engine = make_engine(config.database_url)
    migrate.upgrade(engine)
    rng = random.Random(3)
    rows = []
    for number in range(120):
        words = rng.sample(["red", "blue", "kite", "boat", "sky", "river"], 2)
        status = rng.choice(["done", "done", "failed", "pending"])
        rows.append({
            "sha256": f"{number:064x}", "filename": f"photo-{number}.jpg", "caption": " ".join(words),
            "status": status, "received_at": datetime(2026, 1, 1), "size_bytes": 1,
        })
    with engine.begin() as connection:
        connection.execute(insert(Image.__table__), rows)
    engine.dispose()
    with serve(config) as client:
        for q, status in (("kite", None), ("kite", "done"), ("red bo", "failed"), ("photo", "pending"), ("sky", "processing"),
                          ("zebra", None), ("river sky", "done")):
            expected = [
                number + 1
                for number, row in enumerate(rows)
                if all(any(word.startswith(term) for word in [*row["caption"].split(), "photo", str(number), "jpg"])
                       for term in q.split())
                and (status is None or row["status"] == status)
            ][::-1]
            seen, cursor = [], None
            while True:
                params = {"q": q, "limit": "7"} | ({"status": status} if status else {}) | ({"cursor": cursor} if cursor else {})
                page = client.get("/api/images", params=params).json()
                assert len(page["items"]) <= 7
                seen += [item["id"] for item in page["items"]]
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert seen == expected, (q, status)


def test_writes_between_the_statements_of_a_search_change_nothing_on_its_page(
    tmp_path: Path, database_url: str, monkeypatch
) -> None:
    """PostgreSQL runs a search as several statements, each in its own snapshot (the reader
    autocommits): images registered, or leaving the status, between them neither show twice
    nor make the page skip a match (SQLite runs one statement: trivially so)."""
    monkeypatch.setattr(search_reads, "SEARCH_WALK_ROWS", 6)
    monkeypatch.setattr(search_reads, "SEARCH_WALK_MORE", 12)
    config = config_for(tmp_path, database={"url": database_url})
    writer = make_engine(config.database_url)
    migrate.upgrade(writer)

    def add(first: int, count: int) -> None:
        with writer.begin() as connection:
            connection.execute(insert(Image.__table__), [
                {"sha256": f"{number:064x}", "filename": f"photo-{number}.jpg", "caption": "kite" if number % 4 == 0 else "sky",
                 "status": "done", "received_at": datetime(2026, 1, 1), "size_bytes": 1}
                for number in range(first, first + count)
            ])

    add(0, 80)
    reader = make_engine(config.database_url, readonly=True)
    try:
        with reader.connect() as connection:
            expected = image_reads.list_images(connection, limit=5, search="kite", status="done")
            statements = []
            fetch = search_reads.fetch_all

            def interfering(connection, statement, parameters):
                statements.append(statement)
                if len(statements) == 2:  # between the walk and what follows it
                    add(1000, 12)
                    with writer.begin() as writing:
                        newest = select(Image.id).where(Image.status == "done").order_by(Image.id.desc()).limit(3)
                        writing.execute(update(Image.__table__).where(Image.id.in_(newest.scalar_subquery())).values(status="pending"))
                return fetch(connection, statement, parameters)

            monkeypatch.setattr(search_reads, "fetch_all", interfering)
            found = image_reads.list_images(connection, limit=5, search="kite", status="done")
    finally:
        reader.dispose()
        writer.dispose()
    ids = [item["id"] for item in found.items]
    assert ids == sorted(set(ids), reverse=True)
    if database_url:  # PostgreSQL: the later statements' rows lie below the walked ones
        assert len(statements) >= 2
    # Below the rows the first statement walked, nothing changed: the same matches.
    assert ids[-3:] == [item["id"] for item in expected.items][-3:]
