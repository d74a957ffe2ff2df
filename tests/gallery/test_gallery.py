"""The gallery page in a real browser, over a real `htx run`: upload, watch, filter, search, open.

Waits are on conditions in the page (Playwright's expect and wait_for_function), never sleeps.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as PILImage
from playwright.sync_api import expect
from sqlalchemy import insert

from models import config as config_module
from models import migrate
from models.db import make_engine
from models.tables import Image
from tests.api.live import Htx, write_config
from tests.gallery.conftest import Console, api_fallbacks, artifact
from tests.helpers import corpus

ACCEPTED = ("flower.jpg", "POC_phpinfo-metadata.jpg", "basn6a08.png")
CORRUPT = "broken.png"
CAPTIONS_OFF = 'Captions off: caption.model is "none". To fix: set caption.model to a hub id or a model folder.'
FINISH_S = 30_000  # ms: the daemon's work on four small files, with room for a slow machine


def _corpus_path(name: str, expected: str) -> Path:
    item = next(item for item in corpus() if item.name == name)
    assert item.expected == expected, name
    return item.path


def _decoded_sizes(images: Any) -> list[list[int]]:
    """[naturalWidth, naturalHeight] of each <img>, once the browser has decoded it."""
    return images.evaluate_all(
        "images => Promise.all(images.map(async image => { await image.decode();"
        " return [image.naturalWidth, image.naturalHeight]; }))"
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Htx]:
    htx = Htx(write_config(tmp_path_factory.mktemp("gallery")), "run")
    htx.wait_healthy()
    yield htx
    assert htx.stop(signal.SIGINT) == 0, htx.log()
    assert "Traceback" not in htx.log()


def test_upload_watch_filter_and_open(server: Htx, page: Any, console: Console) -> None:
    page.goto(f"{server.base_url}/")
    expect(page.locator("#summary")).to_contain_text("No images yet")
    expect(page.locator('[data-stat="caption"]')).to_have_text("off")
    page.evaluate("() => { window.htxLoaded = true; }")  # gone if anything reloads the page

    files = [_corpus_path(name, "accept") for name in ACCEPTED] + [_corpus_path(CORRUPT, "reject-corrupt")]
    page.set_input_files("#file-input", [str(path) for path in files])

    # Each file has its row and progress bar; the rows follow the images to their end.
    rows = page.locator("#uploads li")
    expect(rows).to_have_count(4)
    for path in files:
        row = rows.filter(has_text=path.name)
        expect(row.locator("progress")).to_have_attribute("value", "100", timeout=FINISH_S)
        expect(row.locator(".state")).to_contain_text("failed" if path.name == CORRUPT else "done.", timeout=FINISH_S)

    # New tiles appeared and reached their status live, without a reload; the failed one is
    # not among them (it has its own view), but counted in the banner.
    grid = page.locator("#grid")
    done = grid.locator('.tile[data-status="done"]')
    expect(done).to_have_count(3, timeout=FINISH_S)
    expect(page.locator("#failed-text")).to_have_text("1 failed")
    expect(grid.locator('.tile[data-status="failed"]')).to_have_count(0)
    assert page.evaluate("() => window.htxLoaded") is True
    assert sorted(grid.locator(".tile .name").all_text_contents()) == sorted(ACCEPTED)
    ids = [int(value) for value in grid.locator(".tile").evaluate_all("tiles => tiles.map(tile => tile.dataset.id)")]
    assert ids == sorted(ids, reverse=True)  # newest first (two uploads at a time: any order of arrival)

    # Thumbnails: real images, decoded, within the small size; alt text is the file name
    # (no caption: captioning is off here, which the banner says, once: not each tile).
    sizes = _decoded_sizes(done.locator("img"))
    assert len(sizes) == 3 and all(0 < width <= 150 and 0 < height <= 150 for width, height in sizes), sizes
    for name in ACCEPTED:
        tile = done.filter(has_text=name)
        expect(tile.locator("img")).to_have_attribute("alt", name)
        expect(tile.locator("img")).to_have_attribute("src", re.compile(r"^api/images/\d+/thumbnails/small$"))
        expect(tile.locator(".caption")).to_have_count(0)
    expect(page.locator("#caption-banner")).to_have_text(re.compile(re.escape(CAPTIONS_OFF)))

    # The stats panel caught up too.
    for stat, value in (("total", "4"), ("done", "3"), ("failed", "1"), ("queue", "0"), ("success", "75.0 %")):
        expect(page.locator(f'[data-stat="{stat}"]')).to_have_text(value, timeout=FINISH_S)
    expect(page.locator('[data-stat="p95"]')).to_have_text(re.compile(r"^[\d.]+ m?s$"))
    page.screenshot(path=artifact("gallery.png"), full_page=True, animations="disabled")

    # Filter by status: only the corrupt file; the filter is kept in the address.
    page.locator(".status-filter label:has(input[value='failed'])").click()
    expect(grid.locator(".tile")).to_have_count(1)
    expect(grid.locator(".tile .name")).to_have_text(CORRUPT)
    assert "status=failed" in page.url
    failed = grid.locator('.tile[data-status="failed"]')
    expect(failed.locator("img")).to_have_count(0)  # no thumbnail to show: a placeholder
    expect(failed.locator(".placeholder")).to_contain_text("No thumbnail")
    expect(failed.locator(".caption")).to_contain_text("corrupt image")

    # Keyboard: Enter opens the detail, Escape closes it and gives the focus back.
    grid.locator(".tile button").first.focus()
    page.keyboard.press("Enter")
    dialog = page.locator("#detail")
    expect(dialog).to_be_visible()
    expect(page.locator("#detail-title")).to_have_text(CORRUPT)
    expect(page.locator("#detail-record")).to_contain_text("corrupt image")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    assert page.evaluate("() => document.activeElement.closest('.tile')?.dataset.status") == "failed"

    # Back to all but the failed one, then arrows move through the grid.
    page.locator(".status-filter label:has(input[value=''])").click()
    expect(grid.locator(".tile")).to_have_count(3)
    names = grid.locator(".tile .name").all_text_contents()
    focused = "() => document.activeElement.closest('.tile').querySelector('.name').textContent"
    grid.locator(".tile button").first.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    assert page.evaluate(focused) == names[2]
    page.keyboard.press("ArrowLeft")
    assert page.evaluate(focused) == names[1]
    page.keyboard.press("End")
    assert page.evaluate(focused) == names[2]

    # The detail of the JPEG whose EXIF holds PHP: shown as text.
    grid.locator(".tile", has_text=ACCEPTED[1]).locator("button").click()
    expect(page.locator("#detail-title")).to_have_text(ACCEPTED[1])
    expect(dialog.locator("figure img")).to_have_attribute("src", re.compile(r"thumbnails/medium$"))
    (width, height), = _decoded_sizes(dialog.locator("figure img"))
    assert max(width, height) <= 300 and width > 150
    record = page.locator("#detail-record")
    for text in ("done", "Width640 px", "Height356 px", "FormatJPEG", "ModeRGB"):
        expect(record).to_contain_text(text)
    timings = record.locator("table.timings")
    for stage in ("hash", "metadata", "thumbnails", "total"):
        expect(timings.locator(f'tr[data-stage="{stage}"] .ms')).to_have_text(re.compile(r"^[\d.]+ m?s$"))
    # Its camera wrote the same PHP into every EXIF tag: had it been parsed as markup, the
    # text would be gone (an HTML parser makes `<?...>` a comment).
    exif = page.locator("#detail-exif")
    expect(exif.locator("dt").first).to_have_text("ExifVersion")
    expect(exif.locator("dd code").first).to_have_text("<?php phpinfo(); ?>")
    expect(dialog.locator(".links a", has_text="Record (JSON)")).to_have_attribute("href", re.compile(r"^api/images/\d+$"))
    page.screenshot(path=artifact("gallery-detail.png"), animations="disabled")

    # The arrow keys step through the images within the dialog.
    position = names.index(ACCEPTED[1])
    key, neighbour = ("ArrowRight", position + 1) if position + 1 < len(names) else ("ArrowLeft", position - 1)
    page.keyboard.press(key)
    expect(page.locator("#detail-title")).to_have_text(names[neighbour])
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    # Search: names (and captions), as the words are typed.
    page.locator("#q").fill("phpinfo")
    expect(grid.locator(".tile")).to_have_count(1)
    expect(grid.locator(".tile .name")).to_have_text(ACCEPTED[1])
    page.locator("#q").fill("nothing-like-this")
    expect(page.locator("#summary")).to_contain_text("No images match")

    assert console.problems(allow=api_fallbacks(server.base_url)) == []


def _thumbnail(folder: Path, name: str, size: tuple[int, int]) -> str:
    path = folder / "thumbnails" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", size, (200, 80, 40)).save(path, "JPEG")
    return f"thumbnails/{name}"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Htx]:
    """`htx api` over rows written here: captions, caption errors, GPS, hostile names, and a
    second page, in states the no-caption daemon of the other test cannot make."""
    config_file = write_config(tmp_path_factory.mktemp("library"))
    config = config_module.load(config_file)
    config.data_dir.mkdir(parents=True)
    engine = make_engine(config.database_url)
    migrate.upgrade(engine)
    small = _thumbnail(config.data_dir, "a-small.jpg", (150, 100))
    medium = _thumbnail(config.data_dir, "a-medium.jpg", (300, 200))
    # One insert of many rows takes its columns from the first: every row names them all.
    # sort_taken: made from the row by its default (when taken, else when received).
    blank = {column.name: None for column in Image.__table__.c if column.name not in ("id", "sort_taken")}
    base = blank | {"received_at": datetime(2026, 1, 1), "size_bytes": 1000, "status": "done", "attempts": 0}
    done = base | {"thumb_small_path": small, "thumb_medium_path": medium, "format": "JPEG", "width": 3000, "height": 2000}
    rows = [base | {"filename": f"filler-{number:03}.jpg", "status": "pending"} for number in range(70)]
    rows += [
        done | {"filename": "kite.jpg", "caption": "a red kite over the sea", "gps_latitude": 48.8584,
                "gps_longitude": -2.2945, "camera_make": "Canon", "camera_model": "EOS 5D",
                "exif": {"Make": "Canon", "GPSInfo": {"GPSLatitudeRef": "N"}}},
        done | {"filename": "uncaptioned.jpg", "caption_error": "the caption model could not be loaded"},
        done | {"filename": '<img src=x onerror="document.title=1">.jpg', "caption": "<b>bold</b> claims"},
        base | {"filename": "halfway.jpg", "status": "processing", "thumb_small_path": small, "thumb_medium_path": medium},
        done | {"filename": "caption-to-come.jpg", "stage": "caption"},
    ]
    with engine.begin() as connection:
        connection.execute(insert(Image.__table__), [row | {"sha256": f"{n:064x}"} for n, row in enumerate(rows)])
    engine.dispose()
    htx = Htx(config_file, "api")
    htx.wait_healthy(daemon=False)
    yield htx
    assert htx.stop() == 0, htx.log()


def test_captions_locations_and_hostile_text(library: Htx, page: Any, console: Console) -> None:
    page.goto(f"{library.base_url}/")
    grid = page.locator("#grid")
    kite = grid.locator(".tile", has_text="kite.jpg")
    expect(kite.locator("img")).to_have_attribute("alt", "a red kite over the sea")
    expect(kite.locator(".caption")).to_have_text("a red kite over the sea")
    # Captions are off on this server: the banner says so, and the fix, once; the tiles say
    # nothing of it (nor an image's own caption_error, nor a caption to come).
    expect(page.locator("#caption-banner")).to_have_text(re.compile(re.escape(CAPTIONS_OFF)))
    expect(grid.locator(".tile", has_text="uncaptioned.jpg").locator(".caption")).to_have_count(0)
    expect(grid.locator(".tile", has_text="halfway.jpg").locator(".caption")).to_have_text("Processing…")
    expect(grid.locator(".tile", has_text="caption-to-come.jpg").locator(".caption")).to_have_count(0)

    # Markup in a name or a caption is shown as the text it is, and never runs.
    hostile = grid.locator(".tile", has_text="onerror")
    expect(hostile.locator(".name")).to_have_text('<img src=x onerror="document.title=1">.jpg')
    expect(hostile.locator("img")).to_have_attribute("alt", "<b>bold</b> claims")
    expect(hostile.locator("b")).to_have_count(0)
    assert page.title() == "HTX gallery"

    # GPS as coordinates, in the detail.
    kite.locator("button").click()
    gps = page.locator("#detail-record a[href^='geo:']")
    expect(gps).to_have_text("48.858400° N, 2.294500° W")
    expect(page.locator("#detail")).to_contain_text("Canon EOS 5D")
    page.keyboard.press("Escape")

    # Pages over the keyset cursor: 75 images, 60 to a page; scrolling to the end brings the rest.
    expect(page.locator("#summary")).to_contain_text(re.compile(r"^(60\+|75) images"))
    page.locator("#sentinel").scroll_into_view_if_needed()
    expect(grid.locator(".tile")).to_have_count(75)
    expect(page.locator("#more")).to_be_hidden()
    assert grid.locator(".tile .name").last.text_content() == "filler-000.jpg"

    # Search in captions, with a status.
    page.locator("#q").fill("kite sea")
    expect(grid.locator(".tile")).to_have_count(1)
    page.locator(".status-filter label", has_text="pending").click()
    expect(page.locator("#summary")).to_contain_text("No images match")
    page.locator(".status-filter label", has_text="done").click()
    expect(grid.locator(".tile")).to_have_count(1)

    # On a phone: two columns, nothing wider than the screen, the detail fills it.
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("#q").fill("")
    expect(grid.locator(".tile")).to_have_count(4)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    lefts = {round(box["x"]) for box in (tile.bounding_box() for tile in grid.locator(".tile").all())}
    assert len(lefts) == 2, lefts
    page.screenshot(path=artifact("gallery-phone.png"), animations="disabled")
    grid.locator(".tile", has_text="kite.jpg").locator("button").click()
    box = page.locator("#detail").bounding_box()
    assert box is not None and box["width"] == 390
    assert console.problems(allow=api_fallbacks(library.base_url)) == []


def test_the_page_asks_for_the_upload_token(tmp_path: Path, page: Any, console: Console) -> None:
    htx = Htx(write_config(tmp_path, upload_token="open sesame, please"), "run")
    try:
        htx.wait_healthy()
        page.goto(f"{htx.base_url}/")
        page.set_input_files("#file-input", [str(_corpus_path("hopper.jpg", "accept"))])
        token_dialog = page.locator("#token-dialog")
        expect(token_dialog).to_be_visible()
        page.locator("#token").fill("wrong")
        token_dialog.locator("button", has_text="Continue").click()
        expect(page.locator("#token-reason")).to_contain_text("not accepted")  # asked again
        page.locator("#token").fill("open sesame, please")
        token_dialog.locator("button", has_text="Continue").click()
        expect(token_dialog).to_be_hidden()
        expect(page.locator('#grid .tile[data-status="done"]')).to_have_count(1, timeout=FINISH_S)
        assert page.evaluate("() => sessionStorage.getItem('htx.uploadToken')") == "open sesame, please"
        # Refused uploads are logged by the browser as failed requests; nothing else may be.
        assert console.problems(allow=("401", *api_fallbacks(htx.base_url))) == []
    finally:
        assert htx.stop() == 0, htx.log()


def test_the_page_asks_for_the_read_token_once_and_thumbnails_load(tmp_path: Path, page: Any, console: Console) -> None:
    config_file = write_config(tmp_path, read_token="let me read, please")
    htx = Htx(config_file, "run")
    try:
        htx.wait_healthy()
        inbox = tmp_path / "data" / "inbox"
        (inbox / "hopper.jpg").write_bytes(_corpus_path("hopper.jpg", "accept").read_bytes())

        page.goto(f"{htx.base_url}/")
        expect(page.locator("form #token")).to_be_visible()
        assert page.locator("#grid").count() == 0  # nothing of the gallery before the token
        page.locator("#token").fill("wrong")
        page.locator("form button").click()
        expect(page.locator(".problem")).to_contain_text("not accepted")
        page.locator("#token").fill("let me read, please")
        page.locator("form button").click()

        tile = page.locator('#grid .tile[data-status="done"]')
        expect(tile).to_have_count(1, timeout=FINISH_S)
        assert _decoded_sizes(tile.locator("img"))[0][0] > 0  # the thumbnail came with the cookie
        cookie = next(cookie for cookie in page.context.cookies() if cookie["name"] == "htx_read_token")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.reload()
        expect(page.locator('#grid .tile[data-status="done"]')).to_have_count(1)  # not asked again
        # The sign-in page's 401s are logged by the browser as failed requests; nothing else may be.
        assert console.problems(allow=("401", *api_fallbacks(htx.base_url, "let me read, please"))) == []
    finally:
        assert htx.stop() == 0, htx.log()


def test_the_detail_has_an_address_downloads_deletes_and_retries(tmp_path: Path, page: Any, console: Console) -> None:
    htx = Htx(write_config(tmp_path), "run")
    try:
        htx.wait_healthy()
        inbox = tmp_path / "data" / "inbox"
        for name, expected in (("hopper.jpg", "accept"), ("flower.jpg", "accept"), (CORRUPT, "reject-corrupt")):
            (inbox / name).write_bytes(_corpus_path(name, expected).read_bytes())
        page.goto(f"{htx.base_url}/")
        grid = page.locator("#grid")
        expect(grid.locator('.tile[data-status="done"]')).to_have_count(2, timeout=FINISH_S)
        expect(page.locator("#failed-text")).to_have_text("1 failed", timeout=FINISH_S)
        dialog = page.locator("#detail")

        # Its own address: Back closes it; the address opens it directly.
        grid.locator(".tile", has_text="hopper.jpg").locator("button").click()
        expect(dialog).to_be_visible()
        expect(page).to_have_url(re.compile(r"/\?image=\d+$"))
        address = page.url
        page.go_back()
        expect(dialog).to_be_hidden()
        assert "image=" not in page.url
        page.goto(address)
        expect(dialog).to_be_visible()
        expect(page.locator("#detail-title")).to_have_text("hopper.jpg")

        with page.expect_download() as download_info:
            dialog.locator("a", has_text="Download original").click()
        download = download_info.value
        assert download.suggested_filename == "hopper.jpg"
        assert Path(download.path()).read_bytes() == _corpus_path("hopper.jpg", "accept").read_bytes()

        page.once("dialog", lambda question: question.accept())  # "Delete hopper.jpg?"
        dialog.locator("button", has_text="Delete").click()
        expect(dialog).to_be_hidden()
        expect(grid.locator(".tile")).to_have_count(1)
        expect(page.locator('[data-stat="total"]')).to_have_text("2")
        expect(page.locator("#summary")).to_contain_text("1 image")
        assert "image=" not in page.url

        # A done image may be processed again: it comes back done.
        grid.locator(".tile", has_text="flower.jpg").locator("button").click()
        dialog.locator("button", has_text="Process again").click()
        expect(page.locator("#detail-action-state")).to_contain_text("Queued")
        expect(page.locator("#detail-record .badge")).to_have_text("done", timeout=FINISH_S)
        page.keyboard.press("Escape")
        expect(dialog).to_be_hidden()

        # A failed image, in the failed view: its error once, as words (not its code), no EXIF
        # section, and no Retry: the same damaged bytes would fail the same way.
        page.locator("#failed-toggle").click()
        grid.locator('.tile[data-status="failed"] button').click()
        expect(page.locator("#detail-record")).to_contain_text("not a readable PNG")
        assert page.locator("#detail-body").inner_text().count("not a readable PNG") == 1
        expect(page.locator("#detail-record")).not_to_contain_text("(corrupt)")
        expect(page.locator("#detail-exif")).to_have_count(0)
        expect(dialog.locator(".why-not")).to_contain_text("would fail the same way")
        expect(dialog.locator("button", has_text="Retry")).to_have_count(0)
        expect(dialog.locator("button", has_text="Delete")).to_be_visible()
        assert console.problems(allow=api_fallbacks(htx.base_url)) == []
    finally:
        assert htx.stop() == 0, htx.log()
