"""api.read_token: every route but /healthz needs it, as a header or the gallery's cookie."""

from __future__ import annotations

import logging

import pytest

from api.access import COOKIE
from models import config as config_module
from models.config import Config
from tests.api.conftest import ingest, serve
from tests.helpers import wait_for

READ = "read-token-number-1"
UPLOAD = "upload-token-number-2"


@pytest.fixture
def guarded(make_config) -> Config:
    config = make_config(api={"read_token": READ, "upload_token": UPLOAD})
    ingest(config, ("hopper.jpg",))
    return config


@pytest.mark.parametrize(
    "path", ["/api/images", "/api/images/1", "/api/images/1/thumbnails/small", "/api/images/1/original", "/api/stats", "/metrics", "/api/docs", "/"]
)
def test_every_route_needs_the_read_token(guarded: Config, path: str) -> None:
    with serve(guarded) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {READ}"}):
            response = client.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.json() == {"error": "This server needs its read token: send Authorization: Bearer <token>."}
            assert response.headers["www-authenticate"] == "Bearer"
        for token in (READ, UPLOAD):  # the upload token may do more: it reads too
            assert client.get(path, headers={"Authorization": f"Bearer {token}"}).status_code == 200, (path, token)


def test_health_and_the_gallery_code_are_open(guarded: Config) -> None:
    with serve(guarded) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/static/gallery.css").status_code == 200


def test_a_browser_signs_in_once_and_its_cookie_reads_everything(guarded: Config) -> None:
    with serve(guarded) as client:
        page = client.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 401 and 'action="/api/session"' in page.text and "img" not in page.text
        assert client.post("/api/session", data={"token": "wrong"}).status_code == 401
        assert COOKIE not in client.cookies

        signed_in = client.post("/api/session", data={"token": READ}, follow_redirects=False)

        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith(f"{COOKIE}={READ};")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
        assert client.get("/").status_code == 200
        thumbnail = client.get("/api/images/1/thumbnails/small")
        assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/jpeg"


def test_tokens_may_come_from_the_environment(tmp_path, monkeypatch) -> None:
    path = tmp_path / "htx.toml"
    path.write_text('[api]\nread_token = "in-the-file"\n')
    monkeypatch.setenv(config_module.READ_TOKEN_ENV, "from-the-environment")
    monkeypatch.setenv(config_module.UPLOAD_TOKEN_ENV, "upload-from-the-environment")
    api = config_module.load(path).api
    assert (api.read_token, api.upload_token) == ("from-the-environment", "upload-from-the-environment")


def test_without_a_read_token_reading_is_open(config: Config) -> None:
    ingest(config, ("hopper.jpg",))
    with serve(config) as client:
        assert client.get("/api/images/1").status_code == 200
        assert client.post("/api/session", data={}, follow_redirects=False).status_code == 303


def test_wrong_tokens_anywhere_hold_the_client_back_and_are_logged_once(guarded: Config, caplog) -> None:
    read = {"Authorization": f"Bearer {READ}"}
    upload = {"Authorization": f"Bearer {UPLOAD}"}
    with serve(guarded) as client, caplog.at_level(logging.WARNING, logger="htx.api.access"):
        assert client.get("/api/images").status_code == 401  # no token: no guess
        # Wrong tokens of every kind count together: the read token, the sign-in, the upload token.
        for _ in range(2):
            assert client.get("/api/images", headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert client.post("/api/session", data={"token": "wrong"}).status_code == 401
        assert client.delete("/api/images/1", headers=read).status_code == 401  # reads, is not the upload token
        assert client.get("/api/images", headers=read).status_code == 200  # 5 free mistakes so far
        assert client.get("/api/images", headers={"Authorization": "Bearer wrong"}).status_code == 401

        # Held back now: even the right tokens are not looked at.
        for response in (
            client.get("/api/images", headers=read),
            client.post("/api/session", data={"token": READ}, follow_redirects=False),
            client.delete("/api/images/1", headers=upload),
        ):
            assert response.status_code == 429, response.request.url
            assert response.json()["error"].startswith("Too many wrong tokens from this address: try again in ")
            assert int(response.headers["retry-after"]) >= 1
        browser = client.post("/api/session", data={"token": READ}, headers={"Accept": "text/html"})
        assert browser.status_code == 429 and "Too many wrong tokens" in browser.text and "<form" in browser.text
        assert client.get("/api/images").status_code == 401  # still no guess without a token
        assert client.get("/healthz").status_code == 200

        # The hold is short at first: waiting as told lets the right token in.
        wait_for(lambda: client.get("/api/images", headers=read).status_code == 200, what="the hold to end")
    warnings = [record.getMessage() for record in caplog.records if record.name == "htx.api.access"]
    assert len(warnings) == 1 and warnings[0].startswith("6 wrong tokens from testclient in a short time"), warnings


def test_a_stale_cookie_beside_the_right_header_is_no_guess(guarded: Config) -> None:
    with serve(guarded) as client:
        client.cookies.set(COOKIE, "the-token-before-it-was-changed")
        for _ in range(20):
            assert client.get("/api/images", headers={"Authorization": f"Bearer {READ}"}).status_code == 200
        assert client.get("/api/images").status_code == 401  # the stale cookie alone: refused


def test_signing_in_leads_back_to_the_address_asked_for_and_only_on_this_server(guarded: Config) -> None:
    with serve(guarded) as client:
        page = client.get("/?image=1&status=done", headers={"Accept": "text/html"})
        assert page.status_code == 401
        assert '<input type="hidden" name="next" value="/?image=1&amp;status=done">' in page.text
        assert "script-src 'self'" in page.headers["content-security-policy"]
        wrong = client.post("/api/session", data={"token": "wrong", "next": "/?image=1"}, headers={"Accept": "text/html"})
        assert wrong.status_code == 401 and 'role="alert"' in wrong.text and 'aria-invalid="true"' in wrong.text
        assert 'name="next" value="/?image=1"' in wrong.text  # still where to go back to

        signed_in = client.post("/api/session", data={"token": READ, "next": "/?image=1"}, follow_redirects=False)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/?image=1"
        # Another site, however it is written, is never where it leads.
        for elsewhere in ("//evil.example/", "https://evil.example/", "/\\evil.example", "evil", "/a b", "/\x00"):
            answer = client.post("/api/session", data={"token": READ, "next": elsewhere}, follow_redirects=False)
            assert answer.headers["location"] == "/", elsewhere


def test_signing_out_clears_the_cookie(guarded: Config) -> None:
    with serve(guarded) as client:
        client.post("/api/session", data={"token": READ}, follow_redirects=False)
        assert client.get("/api/images").status_code == 200
        signed_out = client.post("/api/session", data={"sign_out": "1"})
        assert signed_out.status_code == 204
        assert signed_out.headers["set-cookie"].startswith(f'{COOKIE}=""; ') and "Max-Age=0" in signed_out.headers["set-cookie"]
        assert COOKIE not in client.cookies
        assert client.get("/api/images").status_code == 401
        # From a browser's form: back to the gallery, which asks again.
        form = client.post("/api/session", data={"sign_out": "1"}, headers={"Accept": "text/html"}, follow_redirects=False)
        assert form.status_code == 303 and form.headers["location"] == "/"
