"""Who may read: with api.read_token set, every request but /healthz carries the token.

As `Authorization: Bearer <token>` (programs, Prometheus), or as the cookie the gallery's
sign-in sets (browsers: an <img> cannot send a header, a cookie goes with every request to
the server). The upload token, which may do more, reads too. The cookie is `HttpOnly` (no
script reads it) and `SameSite=Strict` (no other site's page sends it). Tokens are compared in
constant time, every one of them, so the time taken says nothing of which came close.

Without a token, a browser asking for a page gets the sign-in form (401); anything else gets
the JSON error. Signing in is `POST /api/session` with the token as the `token` field (a form,
so the page needs no script: the gallery's Content-Security-Policy allows none inline).

Every wrong token counts against the client that sent it (api.guesses): a few cost nothing,
then its tokens are answered 429 for a growing time. A request without any token is no guess.
"""

from __future__ import annotations

import hmac
import html
import math
from collections.abc import Sequence
from http.cookies import SimpleCookie

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.context import context
from api.errors import TooManyRequests, Unauthorized, error_response
from api.guesses import FailedGuesses, client_address
from models.config import ApiConfig

COOKIE = "htx_read_token"
COOKIE_MAX_AGE_S = 365 * 24 * 3600
# Open to all: health checks, the sign-in itself, and the gallery's code and style (the same
# for every server: no image or record is in them).
OPEN_PATHS = frozenset({"/healthz", "/api/session"})
OPEN_PREFIX = "/static/"
NEEDS_TOKEN = "This server needs its read token: send Authorization: Bearer <token>."
TOO_MANY = "Too many wrong tokens from this address: try again in {seconds} s."


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


def held_back(guesses: FailedGuesses, client: str) -> TooManyRequests | None:
    """The 429 for a client that must wait before its next token is checked; None if it need not."""
    wait = guesses.retry_after(client)
    return TooManyRequests(TOO_MANY.format(seconds=max(1, math.ceil(wait))), wait) if wait > 0 else None


def check_guess(guesses: FailedGuesses, client: str, given: Sequence[str], tokens: tuple[str, ...]) -> bool:
    """Whether one of the tokens `given` is one of `tokens`; when none is, that counts once
    against `client` (a stale cookie beside a right header is no guess). Raises
    TooManyRequests, without looking at `given`, while the client is held back."""
    refusal = held_back(guesses, client)
    if refusal is not None:
        raise refusal
    found = False
    for token in given:  # every one, as token_matches compares every token: in constant time
        found |= token_matches(token, tokens)
    if not found:
        guesses.failed(client)
    return found


def _read_tokens(api: ApiConfig) -> tuple[str, ...]:
    """The tokens that may read; () when reading is open."""
    return tuple(token for token in (api.read_token, api.upload_token) if token) if api.read_token else ()


class ReadTokenCheck:
    """ASGI middleware: the read token on every request but OPEN_PATHS, when one is set."""

    def __init__(self, app: ASGIApp, api: ApiConfig, guesses: FailedGuesses) -> None:
        self.app = app
        self.tokens = _read_tokens(api)
        self.guesses = guesses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not self.tokens
            or path in OPEN_PATHS
            or path.startswith(OPEN_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        given = self._given_tokens(scope)
        try:
            accepted = bool(given) and check_guess(self.guesses, client_address(scope), given, self.tokens)
        except TooManyRequests as error:
            await error_response(error.status_code, error.message, error.headers)(scope, receive, send)
            return
        if accepted:
            await self.app(scope, receive, send)
            return
        accept = next((value for name, value in scope["headers"] if name == b"accept"), b"")
        if scope["method"] == "GET" and b"text/html" in accept:
            response: Response = sign_in_page(scope.get("root_path", ""))
        else:
            response = error_response(401, NEEDS_TOKEN, {"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)

    @staticmethod
    def _given_tokens(scope: Scope) -> list[str]:
        """The tokens the request carries: a Bearer header's, the sign-in cookie's."""
        given = []
        for name, value in scope["headers"]:
            if name == b"authorization":
                token = bearer_token(value.decode("latin-1"))
                if token is not None:
                    given.append(token)
            elif name == b"cookie":
                morsel = SimpleCookie(value.decode("latin-1")).get(COOKIE)
                if morsel is not None:
                    given.append(morsel.value)
        return given


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
      429:
        description: too many wrong tokens from this address lately; Retry-After says when to try again
    """
    ctx = context(request)
    api = ctx.config.api
    tokens = _read_tokens(api)
    form = await request.form()
    given = str(form.get("token") or "")
    in_browser = "text/html" in request.headers.get("accept", "")  # the form, in a browser: ask again
    try:
        accepted = not tokens or check_guess(ctx.guesses, client_address(request.scope), [given], tokens)
    except TooManyRequests as error:
        if not in_browser:
            raise
        page = sign_in_page(request.scope.get("root_path", ""), problem=error.message)
        page.status_code = error.status_code
        page.headers.update(error.headers)
        return page
    if not accepted:
        if in_browser:
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
