"""A real browser for the gallery tests: Debian's Chromium, driven headless by Playwright.

No browser is downloaded (`playwright install` is never run): Playwright launches the system's
Chromium, which `.ci/run` installs. The flags keep it off the network entirely: in a closed
network its background connections would be refused and slow every start.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.live import REPO

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")

CHROMIUM = os.environ.get("HTX_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",  # tests may run as root, in a container
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does), or set HTX_CHROMIUM")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


class Console:
    """What the page reported: script errors, and console errors (CSP violations among them)."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def problems(self, *, allow: tuple[str, ...] = ()) -> list[str]:
        return [error for error in self.errors if not any(allowed in error for allowed in allow)]


@pytest.fixture
def console() -> Console:
    return Console()


@pytest.fixture
def page(browser: Any, console: Console) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB", timezone_id="UTC")
    opened = context.new_page()

    def on_console(message: Any) -> None:
        if message.type == "error":
            # With the address: "Failed to load resource" names only the status.
            url = (message.location or {}).get("url") or ""
            console.errors.append(f"{message.text} ({url})" if url else message.text)

    opened.on("pageerror", lambda error: console.errors.append(f"page error: {error}"))
    opened.on("console", on_console)
    yield opened
    context.close()


def api_fallbacks(base_url: str, token: str = "") -> tuple[str, ...]:
    """What the page asks that this server's API refuses (400) and the page then does without,
    as parts of the request's address for Console.problems(allow=...): a list of statuses, the
    order of capture. Empty once the API takes them (the API's part of issue 25)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    probes = {"status=pending%2Cprocessing%2Cdone": "status=pending,processing,done", "order=taken": "order=taken"}
    return tuple(
        part
        for part, query in probes.items()
        if httpx.get(f"{base_url}/api/images?limit=1&{query}", headers=headers, timeout=10).status_code == 400
    )


def artifact(name: str) -> Path:
    """A path in test-artifacts/ (git-ignored), kept after the run for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
