"""The gallery's files: served with their types, self-contained, and shipped in the package.

What the page does in a browser is tested in tests/gallery; these need no browser.
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from html.parser import HTMLParser

import pytest

from api.gallery import MEDIA_TYPES, STATIC_DIR
from models.config import Config
from tests.api.conftest import serve
from tests.api.live import REPO

FILES = sorted(path.name for path in STATIC_DIR.iterdir() if path.is_file())
# The one absolute URL allowed: an XML namespace name, which nothing fetches.
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.inline_scripts = 0
        self.inline_handlers: list[str] = []
        self.style_attributes = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.references += [value for name, value in attrs if name in ("src", "href", "srcset", "action") and value]
        self.inline_handlers += [name for name, _value in attrs if name.startswith("on")]
        self.style_attributes += "style" in found
        if tag == "script" and "src" not in found:
            self.inline_scripts += 1
        if tag == "style":
            self.inline_scripts += 1


def _page_references(html: str) -> _References:
    parser = _References()
    parser.feed(html)
    return parser


def test_the_page_is_served_at_the_root(config: Config) -> None:
    with serve(config) as client:
        response = client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache" and response.headers["etag"]
    assert response.headers["x-content-type-options"] == "nosniff"
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    page = response.text
    assert '<meta name="viewport"' in page and '<html lang="en">' in page
    assert '<script type="module" src="static/gallery.js">' in page


@pytest.mark.parametrize("name", FILES)
def test_each_file_is_served_with_its_type(config: Config, name: str) -> None:
    with serve(config) as client:
        response = client.get(f"/static/{name}")
        again = client.get(f"/static/{name}", headers={"if-none-match": response.headers["etag"]})
        head = client.head(f"/static/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == MEDIA_TYPES[f".{name.rsplit('.', 1)[1]}"]
    assert response.content == (STATIC_DIR / name).read_bytes()
    assert again.status_code == 304 and again.content == b""
    assert head.status_code == 200 and head.headers["content-type"] == response.headers["content-type"]


def test_everything_the_page_refers_to_is_served(config: Config) -> None:
    page = (STATIC_DIR / "index.html").read_text()
    references = _page_references(page).references
    assert "static/gallery.js" in references and "static/gallery.css" in references
    with serve(config) as client:
        for reference in references:
            if reference.startswith("api/"):  # the API: answered by its own routes (503 here, no database)
                continue
            assert client.get(f"/{reference}").status_code == 200, reference


def test_no_file_refers_to_another_host() -> None:
    """No CDN, no web font, no analytics: the page must work on a server with no internet."""
    for name in FILES:
        text = (STATIC_DIR / name).read_text().replace(SVG_NAMESPACE, "")
        assert not re.search(r"https?:|wss?:|ftp:", text, re.IGNORECASE), name
        # Protocol-relative URLs, in markup, CSS or script.
        assert not re.search(r"""(["'(=]\s*)//[a-z0-9]""", text, re.IGNORECASE), name
        assert "@import" not in text, name


def test_the_page_runs_no_inline_code() -> None:
    """The Content-Security-Policy allows no inline script or style; nothing relies on it."""
    parsed = _page_references((STATIC_DIR / "index.html").read_text())
    assert parsed.inline_scripts == 0 and parsed.inline_handlers == [] and parsed.style_attributes == 0


def test_the_script_never_renders_text_as_markup() -> None:
    """File names and EXIF are text from anyone who can upload: they reach the page as text."""
    script = "\n".join(path.read_text() for path in sorted(STATIC_DIR.glob("*.js")))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in script, sink


def test_unknown_files_are_json_404s(config: Config) -> None:
    with serve(config) as client:
        for path in ("/static/missing.js", "/static/..%2Fapp.py", "/index.html", "/static/"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/json" and "error" in response.json()


def test_the_files_ship_in_the_package() -> None:
    """A wheel install (not only `pip install -e`) must carry every file the page needs."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["api"]
    for name in FILES:
        assert any(fnmatch.fnmatch(f"static/{name}", pattern) for pattern in patterns), name
    assert set(FILES) >= {"index.html", "gallery.js", "gallery.css"}
