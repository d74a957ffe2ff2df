"""api.read_token: every route but /healthz needs it, as a header or the gallery's cookie."""

from __future__ import annotations

import pytest

from api.access import COOKIE
from models import config as config_module
from models.config import Config
from tests.api.conftest import ingest, serve

READ = "read-token-1"
UPLOAD = "upload-token-2"


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
