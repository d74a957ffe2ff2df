"""The OpenAPI schema (Starlette's generator over the routes' docstrings) and a docs page, and
the routes that serve them: /api/openapi.json and /api/docs.

The page is plain HTML made on the server from the schema: no script and no CDN, since the
server may have no internet and neither may the person reading it.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute
from starlette.schemas import SchemaGenerator

from api.context import context
from api.serialize import JsonResponse

TITLE = "HTX image inbox API"


def openapi_schema(routes: Sequence[BaseRoute], version: str) -> dict[str, Any]:
    generator = SchemaGenerator(
        {
            "openapi": "3.0.3",
            "info": {
                "title": TITLE,
                "version": version,
                "description": "Read API over the HTX daemon's records, and uploads into its inbox. "
                'Errors are JSON {"error": message}.',
            },
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        }
    )
    return generator.get_schema(list(routes))


def _parameters(operation: dict[str, Any]) -> str:
    rows = []
    for parameter in operation.get("parameters", []):
        schema = parameter.get("schema", {})
        kind = schema.get("type", "")
        if "enum" in schema:
            kind += ": " + " | ".join(str(value) for value in schema["enum"])
        rows.append(
            f"<li><code>{html.escape(parameter['name'])}</code> ({html.escape(parameter['in'])}, "
            f"{html.escape(kind)}) {html.escape(parameter.get('description', ''))}</li>"
        )
    if "requestBody" in operation:
        for media_type in operation["requestBody"].get("content", {}):
            rows.append(f"<li>body: <code>{html.escape(media_type)}</code></li>")
    return f"<ul>{''.join(rows)}</ul>" if rows else ""


def docs_page(schema: dict[str, Any]) -> str:
    sections = []
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            responses = "".join(
                f"<tr><td>{html.escape(str(status))}</td><td>{html.escape(str(detail.get('description', '')))}</td></tr>"
                for status, detail in operation.get("responses", {}).items()
            )
            sections.append(
                f'<section id="{html.escape(method + path)}">'
                f"<h2><span class=m>{html.escape(method.upper())}</span> <code>{html.escape(path)}</code></h2>"
                f"<p>{html.escape(operation.get('summary', ''))}</p>"
                f"{_parameters(operation)}"
                f"<table>{responses}</table></section>"
            )
    info = schema.get("info", {})
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(info.get('title', TITLE))}</title>"
        "<style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}"
        "h2{font-size:1.05rem;margin:1.6rem 0 .3rem}.m{display:inline-block;min-width:4rem}"
        "table{border-collapse:collapse}td{border-top:1px solid #ddd;padding:.2rem .6rem;vertical-align:top}"
        "code{background:#f3f3f3;padding:0 .2rem}</style></head><body>"
        f"<h1>{html.escape(info.get('title', TITLE))} <small>{html.escape(str(info.get('version', '')))}</small></h1>"
        f"<p>{html.escape(info.get('description', ''))} "
        'Machine-readable: <a href="/api/openapi.json">/api/openapi.json</a>.</p>'
        f"{''.join(sections)}</body></html>"
    )


async def openapi(request: Request) -> Response:
    """This API's OpenAPI description.
    ---
    summary: OpenAPI schema
    tags: [service]
    responses:
      200:
        description: OpenAPI 3 document (JSON)
    """
    return JsonResponse(context(request).openapi)


async def docs(request: Request) -> Response:
    """A page listing every endpoint, made from the OpenAPI schema (no script, no CDN).
    ---
    summary: API documentation page
    tags: [service]
    responses:
      200:
        description: text/html
    """
    return HTMLResponse(docs_page(context(request).openapi))
