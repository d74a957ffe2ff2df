"""Who may read: with api.read_token set, every request but /healthz carries the token.

As `Authorization: Bearer <token>` (programs, Prometheus), or as the cookie the gallery's
sign-in sets (browsers: an <img> cannot send a header, a cookie goes with every request to
the server). The upload token, which may do more, reads too. The cookie is `HttpOnly` (no
script reads it) and `SameSite=Strict` (no other site's page sends it). Tokens are compared in
constant time, every one of them, so the time taken says nothing of which came close.

Without a token, a browser asking for a page gets the sign-in form (401); anything else gets
the JSON error. Signing in is `POST /api/session` with the token as the `token` field (a form,
so the page needs no script: the gallery's Content-Security-Policy allows none inline), and
the address the visitor came for as `next`, where the answer (303) leads back: `/?image=72`
opens that image once signed in. Signing out is the same POST with `sign_out`: the cookie goes.

Every wrong token counts against the client that sent it (api.guesses): a few cost nothing,
then its tokens are answered 429 for a growing time. A request without any token is no guess.
"""

from __future__ import annotations

import hmac
import html
import math
import re
from collections.abc import Sequence
from http.cookies import SimpleCookie
from urllib.parse import quote

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
WRONG_TOKEN = "That token was not accepted: try again."
# An address on this server, to go back to: a path (not "//host", which is another site's),
# without backslashes (some browsers read them as "/"), spaces or control characters.
_LOCAL_PATH = re.compile(r"/(?![/\\])[^\\\s\x00-\x1f\x7f]*")
MAX_NEXT_CHARS = 2000


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
            response: Response = sign_in_page(scope.get("root_path", ""), back_to=requested_path(scope))
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


def requested_path(scope: Scope) -> str:
    """The address a request asked for, path and query, as the browser wrote it."""
    root_path = scope.get("root_path", "")
    path = scope.get("path", "") or "/"
    if root_path and not path.startswith(root_path):
        path = root_path + path
    query = scope.get("query_string", b"").decode("latin-1")
    return quote(path, safe="/!$&'()*+,;=:@-._~%") + (f"?{query}" if query else "")


def next_path(root_path: str, given: str) -> str:
    """Where signing in leads: `given` when it is an address of this app; else its page."""
    home = f"{root_path}/"
    if len(given) > MAX_NEXT_CHARS or not _LOCAL_PATH.fullmatch(given) or not given.startswith(home):
        return home
    return given


def _secure(request: Request, api: ApiConfig) -> bool:
    """Whether the cookie may go over HTTPS only: the server is reached by it."""
    return request.url.scheme == "https" or api.public_url.startswith("https:")


async def sign_in(request: Request) -> Response:
    """Keep the read token in a cookie, for the gallery; or, with `sign_out`, forget it.
    ---
    summary: Sign in with the read token (the gallery's form), or sign out
    tags: [service]
    requestBody:
      content:
        application/x-www-form-urlencoded:
          schema:
            type: object
            properties:
              token: {type: string}
              next: {type: string, description: "the address to go back to, on this server (e.g. /?image=72); the gallery's page by default"}
              sign_out: {type: string, description: "any value: sign out (the cookie is cleared); no token is needed"}
    responses:
      303:
        description: >-
          signed in (or no read token is set): the cookie is set and the answer leads back to
          `next`; or signed out, from a browser's form: it leads to the gallery, which asks again
      204:
        description: signed out (a program's request, or the gallery's script)
      401:
        description: not the read token
      429:
        description: too many wrong tokens from this address lately; Retry-After says when to try again
    """
    ctx = context(request)
    api = ctx.config.api
    tokens = _read_tokens(api)
    root_path = request.scope.get("root_path", "")
    form = await request.form()
    in_browser = "text/html" in request.headers.get("accept", "")  # the form, in a browser: ask again
    back_to = next_path(root_path, str(form.get("next") or ""))
    if form.get("sign_out") is not None:
        response: Response = RedirectResponse(back_to, status_code=303) if in_browser else Response(status_code=204)
        response.delete_cookie(COOKIE, path="/", secure=_secure(request, api), httponly=True, samesite="strict")
        return response
    given = str(form.get("token") or "")
    try:
        accepted = not tokens or check_guess(ctx.guesses, client_address(request.scope), [given], tokens)
    except TooManyRequests as error:
        if not in_browser:
            raise
        page = sign_in_page(root_path, problem=error.message, back_to=back_to)
        page.status_code = error.status_code
        page.headers.update(error.headers)
        return page
    if not accepted:
        if in_browser:
            return sign_in_page(root_path, problem=WRONG_TOKEN, back_to=back_to)
        raise Unauthorized("That is not this server's read token.")
    response = RedirectResponse(back_to, status_code=303)
    if tokens:
        response.set_cookie(
            COOKIE,
            given,
            max_age=COOKIE_MAX_AGE_S,
            path="/",
            httponly=True,
            samesite="strict",
            secure=_secure(request, api),
        )
    return response


def sign_in_page(root_path: str, problem: str = "", back_to: str = "") -> HTMLResponse:
    """The sign-in form (401), under the app's root path, with `problem` above it if any, and
    the address to go back to once signed in (`back_to`; the gallery's page if none)."""
    shown = f'<p class="problem" id="sign-in-problem" role="alert">{html.escape(problem)}</p>' if problem else ""
    invalid = ' aria-invalid="true" aria-describedby="sign-in-problem"' if problem else ""
    parts = {
        "root": html.escape(root_path, quote=True),
        "next": html.escape(back_to or f"{root_path}/", quote=True),
        "invalid": invalid,
        "problem": shown,
    }
    # In one pass: a part that holds "{next}" (an address may) stays as it is.
    body = _PLACEHOLDER.sub(lambda match: parts[match[1]], SIGN_IN_PAGE)
    return HTMLResponse(body, status_code=401, headers=_PAGE_HEADERS)


_PLACEHOLDER = re.compile(r"\{(root|next|invalid|problem)\}")


_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # Its one script (static/signin.js) puts the address back after a refused token: the page is
    # then answered at /api/session, which a reload would post to again.
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
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
<script type="module" src="{root}/static/signin.js"></script>
</head>
<body>
<main class="sign-in">
  <h1>HTX <span class="sub">image inbox</span></h1>
  {problem}
  <form method="post" action="{root}/api/session">
    <input type="hidden" name="next" value="{next}">
    <label for="token">This server's read token</label>
    <input id="token" name="token" type="password" autocomplete="current-password" required autofocus{invalid}>
    <button type="submit">Sign in</button>
  </form>
  <p>The token is <code>api.read_token</code> in the server's configuration (or $HTX_READ_TOKEN).
  It is kept in a cookie for this site only.</p>
</main>
</body>
</html>
"""
