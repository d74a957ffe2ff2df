"""The gallery: one page of plain HTML, CSS and JavaScript over the public JSON API.

The files in api/static are served as they are: no build step, and nothing fetched from
another host (the server may have no internet). They are read once, when the app is made,
and sent with an ETag and `no-cache`, so a browser revalidates them (a 304, nothing sent)
and an upgrade of HTX reaches it on the next load.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.errors import NotFound

STATIC_DIR = Path(__file__).parent / "static"
PAGE = "index.html"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page talks to its own origin only; with no inline script or style allowed, text from the
# API (file names, EXIF) that slipped into the markup could still not run.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets(folder: Path = STATIC_DIR) -> dict[str, Asset]:
    """Every file of `folder` with a known type, by name."""
    assets = {}
    for path in sorted(folder.iterdir()):
        media_type = MEDIA_TYPES.get(path.suffix)
        if media_type is None or not path.is_file():
            continue
        body = path.read_bytes()
        assets[path.name] = Asset(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:20]}"')
    return assets


def _respond(request: Request, asset: Asset) -> Response:
    headers = {
        "ETag": asset.etag,
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "Referrer-Policy": "no-referrer",
    }
    if asset.etag in (tag.strip() for tag in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, media_type=asset.media_type, headers=headers)


def gallery_routes(assets: Mapping[str, Asset]) -> list[BaseRoute]:
    """`GET /` (the page) and `GET /static/{name}`; neither is part of the API's schema."""
    if PAGE not in assets:
        raise RuntimeError(f"the gallery page is missing from {STATIC_DIR}: is the package installed whole?")

    async def page(request: Request) -> Response:
        return _respond(request, assets[PAGE])

    async def static(request: Request) -> Response:
        asset = assets.get(request.path_params["name"])
        if asset is None:
            raise NotFound("No such file.")
        return _respond(request, asset)

    return [
        Route("/", page, methods=["GET"], include_in_schema=False),
        Route("/static/{name}", static, methods=["GET"], include_in_schema=False),
    ]
