"""A real `htx api` against clients that are not friendly: odd numbers in parameters, huge and
slow request heads, more connections than it serves, uploads it refuses before reading them,
other sites and other host names, a damaged database, a full disk.

Most tests share one server (no daemon: uploads wait in the inbox and are answered "queued")
whose limits are small, so that each attack is over in a second or two.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import resource
import select
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api import server as api_server
from api import uploads
from api.connections import MAX_HEAD_BYTES
from models import config as config_module
from tests.api.live import Htx, write_config
from tests.helpers import CORPUS_DIR, fill, mounted_tmpfs, wait_for

MAX_CONNECTIONS = 50
HEADER_TIMEOUT_S = 1.0
MAX_UPLOAD = 100_000


def _answers(htx: Htx) -> bool:
    assert htx.process.poll() is None, f"htx {htx.command} exited:\n{htx.log()}"
    try:
        return httpx.get(f"{htx.base_url}/api/ping", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_api(folder: Path, **api: Any) -> Htx:
    """`htx api` alone, ready once it answers (its /healthz says 503 without a database)."""
    htx = Htx(write_config(folder, **api), "api")
    wait_for(lambda: _answers(htx), timeout=60, interval=0.05, what="htx api to answer")
    return htx


def stop_cleanly(htx: Htx) -> None:
    assert htx.stop() == 0, htx.log()
    assert "Traceback" not in htx.log(), htx.log()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Htx]:
    htx = start_api(
        tmp_path_factory.mktemp("hostile"),
        max_connections=MAX_CONNECTIONS,
        header_timeout_s=HEADER_TIMEOUT_S,
        max_upload_bytes=MAX_UPLOAD,
        register_timeout_s=0.2,
        allowed_hosts=["photos.lan"],
    )
    yield htx
    stop_cleanly(htx)


def _port(htx: Htx) -> int:
    return int(htx.base_url.rpartition(":")[2])


def _connect(htx: Htx) -> socket.socket:
    return socket.create_connection(("127.0.0.1", _port(htx)), timeout=10)


def _until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection; fails after `timeout` s."""
    received = b""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"the server kept the connection open for {timeout} s (got {received[:200]!r})"
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def _status_and_json(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), raw[:200]
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), json.loads(body)


def _is_closed(sock: socket.socket) -> bool:
    """Whether the server has closed this idle connection (without waiting)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except ConnectionResetError:
        return True


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def _multipart(name: str, content: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: image/jpeg\r\n\r\n"
    ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.is_dir() else []


# -- parameters -------------------------------------------------------------------------------


def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "params",
    [
        {"cursor": _cursor(f"before:{2**63}")},
        {"cursor": _cursor("before:99999999999999999999999999")},
        {"cursor": _cursor("before:٣")},
        {"cursor": _cursor("before:²")},
        {"cursor": _cursor("before:-1")},
        {"cursor": _cursor("before: 1")},
        {"cursor": "%%%"},
        {"limit": "²"},
        {"limit": "٣"},
        {"limit": "9" * 5000},
        {"limit": "1_0"},
        {"limit": " 5"},
        {"limit": "0"},
        {"limit": "501"},
    ],
)
def test_odd_numbers_in_parameters_are_400(api: Htx, params: dict[str, str]) -> None:
    response = httpx.get(f"{api.base_url}/api/images", params=params, timeout=10)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}


@pytest.mark.parametrize("image_id", ["9" * 5000, str(2**63), "٣", "²", "-1", "1e3"])
def test_odd_image_ids_are_404(api: Htx, image_id: str) -> None:
    for path in (f"/api/images/{image_id}", f"/api/images/{image_id}/thumbnails/small"):
        response = httpx.get(f"{api.base_url}{path}", timeout=10)
        assert response.status_code == 404, (path[:40], response.text)
        assert set(response.json()) == {"error"}


# -- request heads ----------------------------------------------------------------------------


def test_a_huge_header_is_431_and_costs_no_memory(api: Htx) -> None:
    pid = api.process.pid
    before = _rss_bytes(pid)
    started = time.monotonic()
    with _connect(api) as sock:
        sock.sendall(b"GET /api/ping HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n")
        status, body = _status_and_json(_until_closed(sock, timeout=5))
    assert status == 431 and "headers" in body["error"]
    assert time.monotonic() - started < 2
    # One header of 64 MB, sent as fast as the loopback takes it: read and thrown away.
    with _connect(api) as sock:
        sock.sendall(b"GET /api/ping HTTP/1.1\r\nHost: localhost\r\nX-Big: ")
        chunk = b"b" * (1 << 20)
        for _ in range(64):
            sock.sendall(chunk)
        assert _status_and_json(_until_closed(sock, timeout=10))[0] == 431
    assert _rss_bytes(pid) - before < 32 * 1024 * 1024
    assert httpx.get(f"{api.base_url}/api/ping", timeout=5).json() == {"ok": True}


def test_a_head_just_under_the_limit_is_served(api: Htx) -> None:
    response = httpx.get(f"{api.base_url}/api/ping", headers={"x-big": "a" * (MAX_HEAD_BYTES - 1024)}, timeout=5)
    assert response.json() == {"ok": True}


def test_an_unfinished_head_is_closed_after_the_header_timeout(api: Htx) -> None:
    with _connect(api) as half, _connect(api) as silent:
        started = time.monotonic()
        half.sendall(b"GET /api/ping HTTP/1.1\r\nHost: local")
        status, body = _status_and_json(_until_closed(half, timeout=HEADER_TIMEOUT_S + 3))
        waited = time.monotonic() - started
        assert status == 408 and "1 s" in body["error"]
        assert _until_closed(silent, timeout=2) == b""  # nothing sent, nothing said
    assert HEADER_TIMEOUT_S - 0.1 <= waited <= HEADER_TIMEOUT_S + 1


def test_a_trickled_head_is_closed_at_its_deadline(api: Htx) -> None:
    """A byte every 50 ms keeps a connection busy but never completes a head (slowloris)."""
    request = b"GET /api/ping HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"s" * 1000
    with _connect(api) as sock:
        started = time.monotonic()
        sock.settimeout(0.05)
        for byte in request:
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(65536):
                    break  # the 408: the server has given up on this head
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        else:
            pytest.fail("the server waited for the whole trickled head")
        waited = time.monotonic() - started
    assert HEADER_TIMEOUT_S - 0.1 <= waited <= HEADER_TIMEOUT_S + 1


def test_an_idle_kept_alive_connection_is_closed(api: Htx) -> None:
    """Between requests, the keep-alive timeout (at most the header timeout) applies."""
    with _connect(api) as sock:
        sock.sendall(b"GET /api/ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        raw = _until_closed(sock, timeout=HEADER_TIMEOUT_S + 3)
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b'{"ok":true}')


def test_more_connections_than_the_cap_do_not_lock_anyone_out(tmp_path: Path) -> None:
    """Idle connections over api.max_connections make room for new ones (the header timeout is
    long here: only the cap closes anything); when all are busy, a new one is refused."""
    htx = start_api(tmp_path, max_connections=MAX_CONNECTIONS, header_timeout_s=60.0)
    sockets: list[socket.socket] = []

    def open_descriptors() -> int:
        return len(os.listdir(f"/proc/{htx.process.pid}/fd"))

    def still_open() -> list[socket.socket]:
        return [sock for sock in sockets if not _is_closed(sock)]

    try:
        baseline = open_descriptors()
        sockets += [_connect(htx) for _ in range(4 * MAX_CONNECTIONS)]
        for sock in sockets[::2]:
            sock.sendall(b"GET /api/ping HTTP/1.1\r\nHost: localh")  # and nothing more
        # Each connection over the cap took the place of the one that had waited longest.
        wait_for(lambda: len(still_open()) <= MAX_CONNECTIONS, timeout=5, what="connections over the cap to close")
        assert set(still_open()) <= set(sockets[-MAX_CONNECTIONS:])
        started = time.monotonic()
        assert httpx.get(f"{htx.base_url}/api/ping", timeout=5).json() == {"ok": True}
        assert time.monotonic() - started < 1
        wait_for(lambda: open_descriptors() <= baseline + MAX_CONNECTIONS, timeout=5, what="descriptors to be freed")

        # Every connection busy with a request (uploads whose bodies are slow to come): no room.
        for sock in sockets:
            sock.close()
        sockets.clear()
        for _ in range(MAX_CONNECTIONS):
            sock = _connect(htx)
            sock.sendall(b"POST /api/images HTTP/1.1\r\nHost: localhost\r\nContent-Type: multipart/form-data; "
                         b"boundary=x\r\nContent-Length: 100000\r\n\r\n--x\r\n")
            sockets.append(sock)
        with _connect(htx) as refused:
            assert _until_closed(refused, timeout=5) == b""
        sockets.pop().close()  # one upload gives up: its place is free again
        wait_for(lambda: _answers(htx), timeout=5, what="a free place")
    finally:
        for sock in sockets:
            sock.close()
        stop_cleanly(htx)


# -- uploads refused before their body is read --------------------------------------------------


def test_every_ordinary_client_reads_the_413(api: Htx) -> None:
    """urllib sends the body without waiting for an answer: the server reads (and drops) the
    rest of it after answering, so the client reads the 413 instead of a reset."""
    body, content_type = _multipart("big.jpg", b"\xff\xd8\xff" + bytes(4 * 1024 * 1024))
    for attempt in range(20):
        request = urllib.request.Request(f"{api.base_url}/api/images", data=body, headers={"Content-Type": content_type})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 413, attempt
        assert "limit" in json.loads(refused.value.read())["error"]
    uploads_dir = config_module.load(api.config_file).uploads_dir
    assert _leftovers(uploads_dir) == []


def test_a_keep_alive_client_gets_the_413_and_a_fresh_connection(api: Htx) -> None:
    body, content_type = _multipart("big.jpg", b"\xff\xd8\xff" + bytes(2 * 1024 * 1024))
    with httpx.Client(base_url=api.base_url, timeout=10) as client:
        for _ in range(5):
            response = client.post("/api/images", content=body, headers={"content-type": content_type})
            assert response.status_code == 413 and response.headers["connection"] == "close"
            assert client.get("/api/ping").json() == {"ok": True}


# -- other sites, other names -----------------------------------------------------------------


def test_other_sites_cannot_upload(api: Htx) -> None:
    config = config_module.load(api.config_file)
    body, content_type = _multipart("hopper.jpg", (CORPUS_DIR / "hopper.jpg").read_bytes())
    url = f"{api.base_url}/api/images"

    def post(**headers: str) -> httpx.Response:
        return httpx.post(url, content=body, headers={"content-type": content_type, **headers}, timeout=10)

    queued = _leftovers(config.inbox_dir)
    for foreign in ("http://evil.example", "null", f"http://127.0.0.1:{_port(api) + 1}", "https://photos.lan.evil.example"):
        refused = post(origin=foreign)
        assert refused.status_code == 403, foreign
        assert "Origin" in refused.json()["error"]
    assert _leftovers(config.inbox_dir) == queued
    assert post(origin=api.base_url).status_code == 202  # the gallery, served by this server
    assert post().status_code == 202  # no Origin: a program, not a web page (same bytes: renamed)
    assert len(_leftovers(config.inbox_dir)) == len(queued) + 2


def test_other_host_names_are_refused(api: Htx) -> None:
    def ping(host: str) -> httpx.Response:
        return httpx.get(f"{api.base_url}/api/ping", headers={"host": host.encode()}, timeout=5)

    refused = ping("rebound.evil.example")
    assert refused.status_code == 400
    assert "'rebound.evil.example'" in refused.json()["error"] and "api.allowed_hosts" in refused.json()["error"]
    for host in ("photos.lan.evil.example", "evil.example:8000", "localhost@evil.example", "local host", "ú.example"):
        assert ping(host).status_code == 400, host
    for host in ("localhost", "LOCALHOST:1", "127.0.0.1:80", "[::1]:8000", "[0:0::1]", "photos.lan", "photos.lan.:99"):
        assert ping(host).status_code == 200, host
    # Links are made from the Host the server answered to, and only such a one.
    listing = httpx.get(f"{api.base_url}/api/images?sha256={'0' * 64}", headers={"host": "photos.lan:99"}, timeout=5)
    assert listing.status_code == 503  # no database: the Host check came first
    body, content_type = _multipart("p.jpg", b"\xff\xd8\xff\xe0" + os.urandom(64))
    queued = httpx.post(
        f"{api.base_url}/api/images", content=body, headers={"content-type": content_type, "host": "photos.lan:99"}, timeout=10
    )
    assert queued.status_code == 202
    assert queued.json()["links"]["search"].startswith("http://photos.lan:99/api/images?sha256=")


# -- the environment --------------------------------------------------------------------------


def test_a_damaged_database_is_503(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "htx.db").write_bytes(os.urandom(64 * 1024))
    htx = start_api(tmp_path)
    try:
        for path in ("/api/images", "/api/images/1", "/api/images/1/thumbnails/small", "/api/stats"):
            response = httpx.get(f"{htx.base_url}{path}", timeout=5)
            assert response.status_code == 503, (path, response.text)
            assert "damaged" in response.json()["error"], path
            assert "/" not in response.json()["error"]
        assert httpx.get(f"{htx.base_url}/healthz", timeout=5).status_code == 503
    finally:
        stop_cleanly(htx)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A data folder that can be filled in a moment."""
    with mounted_tmpfs(tmp_path / "htx" / "data", "2m") as mount_point:
        yield mount_point


def test_an_upload_to_a_full_disk_is_507_and_leaves_nothing(small_disk: Path) -> None:
    (small_disk / "uploads").mkdir()
    htx = start_api(small_disk.parent, register_timeout_s=0.2)
    try:
        filler = fill(small_disk)
        url = f"{htx.base_url}/api/images"
        # 200 KB fails while it is written; 2 KB stays in the file's buffer until the flush.
        for content in (b"\xff\xd8\xff\xe0" + os.urandom(200_000), b"\xff\xd8\xff\xe0" + os.urandom(2000)):
            body, content_type = _multipart("photo.jpg", content)
            response = httpx.post(url, content=body, headers={"content-type": content_type}, timeout=10)
            assert response.status_code == 507, response.text
            assert response.json() == {"error": "The server's disk is full: try again later."}
            assert _leftovers(small_disk / "uploads") == []
        filler.unlink()
        body, content_type = _multipart("photo.jpg", b"\xff\xd8\xff\xe0" + os.urandom(2000))
        assert httpx.post(url, content=body, headers={"content-type": content_type}, timeout=10).status_code == 202
        assert _leftovers(small_disk / "uploads") == []
    finally:
        stop_cleanly(htx)


# -- the pieces -------------------------------------------------------------------------------


class _FailingHandle:
    """A staging file's handle on a full disk: closing flushes, and fails."""

    def __init__(self) -> None:
        self.close_calls = 0

    def close(self) -> None:
        self.close_calls += 1
        raise OSError(errno.ENOSPC, "No space left on device")


def test_discard_removes_the_staged_file_when_closing_fails(tmp_path: Path) -> None:
    path = tmp_path / "x.part"
    path.write_bytes(b"partial")
    handle = _FailingHandle()
    staged = uploads.StagedFile(path, handle, "0" * 64, 7, "x.jpg", "JPEG")  # type: ignore[arg-type]
    staged.discard()
    assert handle.close_calls == 1 and not path.exists()


def test_the_open_files_limit_is_raised_for_max_connections() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard limit on open files is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert api_server.allow_open_files(2048) == 2048
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (2048, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
