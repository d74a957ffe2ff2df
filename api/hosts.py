"""Which requests the API answers: by the Host it was sent to, and the site that sent it.

A web page can make the browser of someone on the server's machine (or network) send requests
to the API: cross-site, by posting to http://127.0.0.1:8000 directly, or by DNS rebinding, where
the attacker's own name is made to point at the server and the page then reads the answers as
same-origin. So, before any route runs:

- a Host header must name this server: localhost, 127.0.0.1 or [::1] (any port), the host of
  api.public_url, api.host when it is one address, or one of api.allowed_hosts (["*"]: any
  well-formed name). Else 400, which names the key to set. Absolute links in answers
  (api.context.base_url) are made from this checked Host.
- a request that can change something (any method but GET and HEAD) that carries an Origin
  header must come from this server's own origin. Else 403. Browsers always send Origin with
  such requests; a request without one comes from a program, not a page.

A pure ASGI middleware (Starlette's BaseHTTPMiddleware costs a task per request): one pass over
the headers, and a set lookup for a Host already seen.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.errors import error_response
from models.config import ApiConfig

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]"})
ANY_ADDRESS = frozenset({"", "0.0.0.0", "::", "[::]"})
ANY_HOST = "*"
# A host name (letters, digits, dots, hyphens; underscores as container names have them) or a
# bracketed IPv6 address, then an optional port: anything else is refused whatever is allowed.
_HOST = re.compile(r"(?P<name>[a-z0-9._-]+|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?")
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_SEEN_HOSTS_MAX = 1024
_SHOWN_NAME_CHARS = 100

CROSS_SITE_MESSAGE = "Requests from other web sites are not accepted (the Origin header is not this server's)."
MALFORMED_HOST_MESSAGE = "The Host header is not a host name."


def normal_name(name: str) -> str:
    """A host name as Host headers are compared: lower case, no port, no final dot, IPv6 in
    brackets ("[::1]"). A port written in api.allowed_hosts is dropped: any port will do."""
    name = name.strip().lower()
    if name.startswith("["):  # [address] or [address]:port
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:  # name:port
        name = name.partition(":")[0]
    name = name.rstrip(".")
    if ":" not in name:
        return name
    try:
        return f"[{ipaddress.IPv6Address(name).compressed}]"
    except ValueError:
        return f"[{name}]"


def allowed_names(api: ApiConfig) -> frozenset[str] | None:
    """The host names this server answers to; None for any (api.allowed_hosts = ["*"])."""
    if ANY_HOST in api.allowed_hosts:
        return None
    names = set(LOOPBACK_NAMES)
    public_host = urlsplit(api.public_url).hostname if api.public_url else None
    if public_host:
        names.add(normal_name(public_host))
    if normal_name(api.host) not in ANY_ADDRESS:
        names.add(normal_name(api.host))
    names.update(normal_name(name) for name in api.allowed_hosts)
    return frozenset(names)


def _origin(url: str) -> bytes | None:
    """scheme://host[:port] of a URL, as a browser writes it in an Origin header."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return None
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}".lower().encode()


class HostAndOriginCheck:
    """ASGI middleware: 400 for a Host that is not this server's, 403 for a cross-site change."""

    def __init__(self, app: ASGIApp, api: ApiConfig) -> None:
        self.app = app
        self.names = allowed_names(api)
        self.public_origin = _origin(api.public_url) if api.public_url else None
        # Host header values already accepted: most requests are answered by one lookup.
        self.accepted: set[bytes] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = origin = None
        hosts = 0
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
                hosts += 1
            elif name == b"origin":
                origin = value
        problem = None
        if hosts > 1:
            problem = error_response(400, "The request has more than one Host header.")
        elif host is not None and host not in self.accepted:
            problem = self._check_host(host)
        if problem is None and origin is not None and scope["method"] not in _SAFE_METHODS:
            if not self._same_origin(origin, host):
                problem = error_response(403, CROSS_SITE_MESSAGE)
        if problem is not None:
            await problem(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check_host(self, host: bytes) -> Response | None:
        """None when `host` names this server (and it is remembered), else the 400 answer."""
        text = host.decode("latin-1").lower()
        match = _HOST.fullmatch(text)
        if match is None:
            return error_response(400, MALFORMED_HOST_MESSAGE)
        name = normal_name(match["name"])
        if self.names is not None and name not in self.names:
            shown = name[:_SHOWN_NAME_CHARS]
            return error_response(
                400,
                f"This server does not answer to the name {shown!r}: to allow it, add it to "
                "api.allowed_hosts (or set api.public_url) in the server's configuration.",
            )
        if len(self.accepted) < _SEEN_HOSTS_MAX:  # bounded: every port of a name is a new value
            self.accepted.add(host)
        return None

    def _same_origin(self, origin: bytes, host: bytes | None) -> bool:
        """Whether the page that sent this was served by this server: its origin is the one the
        request was sent to (scheme aside, which a TLS proxy in front changes), or public_url's."""
        origin = origin.lower()
        if origin == self.public_origin:
            return True
        _scheme, separator, authority = origin.partition(b"://")
        return bool(separator) and host is not None and authority == host.lower()
