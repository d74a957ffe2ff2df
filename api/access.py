"""Who may read: with api.read_token set, every request but /healthz carries the token.

As `Authorization: Bearer <token>` (programs, Prometheus), or as the cookie the gallery's
sign-in sets (browsers: an <img> cannot send a header, a cookie goes with every request to
the server). The upload token, which may do more, reads too. The cookie is `HttpOnly` (no
script reads it) and `SameSite=Strict` (no other site's page sends it). Tokens are compared in
constant time, every one of them, so the time taken says nothing of which came close.

Without a token, a browser asking for a page gets the sign-in form (401); anything else gets
the JSON error. Signing in is `POST /api/session` with the token as the `token` field (a form,
so the page needs no script: the gallery's Content-Security-Policy allows none inline).
"""

from __future__ import annotations

import hmac
import html
from http.cookies import SimpleCookie

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.context import context
from api.errors import Unauthorized, error_response
from models.config import ApiConfig

COOKIE = "htx_read_token"
COOKIE_MAX_AGE_S = 365 * 24 * 3600
# Open to all: health checks, the sign-in itself, and the gallery's code and style (the same
# for every server: no image or record is in them).
OPEN_PATHS = frozenset({"/healthz", "/api/session"})
OPEN_PREFIX = "/static/"
NEEDS_TOKEN = "This server needs its read token: send Authorization: Bearer <token>."


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header; None for any other header."""
    scheme, _, given = header.partition(" ")
    return given.strip() if scheme.lower() == "bearer" else None


def token_matches(given: str, tokens: tuple[str, ...]) -> bool:
    """Whether `given` is one of `tokens`, compared in constant time with every one."""
    found = False
    for token in tokens:
        found |= hmac.compare_digest(given.encode(), token.encode())
    return found


def _read_tokens(api: ApiConfig) -> tuple[str, ...]:
    """The tokens that may read; () when reading is open."""
    return tuple(token for token in (api.read_token, api.upload_token) if token) if api.read_token else ()


class ReadTokenCheck:
    """ASGI middleware: the read token on every request but OPEN_PATHS, when one is set."""

    def __init__(self, app: ASGIApp, api: ApiConfig) -> None:
        self.app = app
        self.tokens = _read_tokens(api)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not self.tokens
            or path in OPEN_PATHS
            or path.startswith(OPEN_PREFIX)
            or self._carries_token(scope)
        ):
            await self.app(scope, receive, send)
            return
        accept = next((value for name, value in scope["headers"] if name == b"accept"), b"")
        if scope["method"] == "GET" and b"text/html" in accept:
            response: Response = sign_in_page(scope.get("root_path", ""))
        else:
            response = error_response(401, NEEDS_TOKEN, {"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    def _carries_token(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = bearer_token(value.decode("latin-1"))
                if given is not None and token_matches(given, self.tokens):
                    return True
            elif name == b"cookie":
                morsel = SimpleCookie(value.decode("latin-1")).get(COOKIE)
                if morsel is not None and token_matches(morsel.value, self.tokens):
                    return True
        return False


async def sign_in(request: Request) -> Response:
    """Keep the read token in a cookie, for the gallery.
    ---
    summary: Sign in with the read token (the gallery's form)
    tags: [service]
    requestBody:
      content:
        application/x-www-form-urlencoded:
          schema: {type: object, properties: {token: {type: string}}}
    responses:
      303:
        description: signed in (or no read token is set); the cookie is set and the answer leads to the gallery
      401:
        description: not the read token
    """
    api = context(request).config.api
    tokens = _read_tokens(api)
    form = await request.form()
    given = str(form.get("token") or "")
    if tokens and not token_matches(given, tokens):
        if "text/html" in request.headers.get("accept", ""):  # the form, in a browser: ask again
            return sign_in_page(request.scope.get("root_path", ""), problem="That token was not accepted.")
        raise Unauthorized("That is not this server's read token.")
    response = RedirectResponse(f"{request.scope.get('root_path', '')}/", status_code=303)
    if tokens:
        response.set_cookie(
            COOKIE,
            given,
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https" or api.public_url.startswith("https:"),
        )
    return response


def sign_in_page(root_path: str, problem: str = "") -> HTMLResponse:
    """The sign-in form (401), under the app's root path, with `problem` above it if any."""
    shown = f'<p class="problem" role="alert">{html.escape(problem)}</p>' if problem else ""
    body = SIGN_IN_PAGE.replace("{root}", html.escape(root_path, quote=True)).replace("{problem}", shown)
    return HTMLResponse(body, status_code=401, headers=_PAGE_HEADERS)


_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    # Not no-referrer, as the gallery's: with it, the form's POST says "Origin: null", which
    # api.hosts refuses as another site's.
    "Referrer-Policy": "same-origin",
}

SIGN_IN_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>HTX: sign in</title>
<link rel="stylesheet" href="{root}/static/gallery.css">
</head>
<body>
<main class="sign-in">
  <h1>HTX <span class="sub">image inbox</span></h1>
  {problem}
  <form method="post" action="{root}/api/session">
    <label for="token">This server's read token</label>
    <input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
    <button type="submit">Sign in</button>
  </form>
  <p>The token is <code>api.read_token</code> in the server's configuration (or $HTX_READ_TOKEN).
  It is kept in a cookie for this site only.</p>
</main>
</body>
</html>
"""
