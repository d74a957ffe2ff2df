"""Every error is JSON {"error": ...} with its status: the API's own, Starlette's, and crashes."""

from __future__ import annotations

import logging

import pytest
from starlette.routing import Route

from api import errors
from models.config import Config
from tests.api.conftest import serve


def test_unknown_path_is_json_404(config: Config) -> None:
    with serve(config) as client:
        response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Not Found"}


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("DELETE", "/api/images", {"GET", "HEAD", "POST"}),
    ("POST", "/api/stats", {"GET", "HEAD"}),
    ("PUT", "/api/images/1", {"GET", "HEAD", "DELETE"}),
    ("GET", "/api/images/1/reprocess", {"POST"}),
])
def test_wrong_method_is_json_405_with_allow(config: Config, method: str, path: str, allowed: set[str]) -> None:
    with serve(config) as client:
        response = client.request(method, path)
    assert response.status_code == 405
    assert response.json() == {"error": "Method Not Allowed"}
    assert {item.strip() for item in response.headers["allow"].split(",")} == allowed


def test_a_crash_is_a_bare_json_500_and_logged(config: Config, caplog) -> None:
    async def explode(_request):
        raise RuntimeError(f"cannot open {config.data_dir}/secret.txt")

    with serve(config, raise_server_exceptions=False) as client:
        client.app.router.routes.append(Route("/explode", explode))
        with caplog.at_level(logging.ERROR, logger="htx.api"):
            response = client.get("/explode")
    assert response.status_code == 500
    assert response.json() == {"error": "Internal Server Error"}
    assert str(config.data_dir) not in response.text and "Traceback" not in response.text
    logged = [record for record in caplog.records if record.name == "htx.api"]
    assert logged and logged[0].exc_info is not None  # the traceback stays on the server


@pytest.mark.parametrize(("error", "status"), [
    (errors.BadRequest("bad"), 400),
    (errors.Unauthorized("who"), 401),
    (errors.NotFound("where"), 404),
    (errors.Conflict("wait"), 409),
    (errors.ContentTooLarge("big"), 413),
    (errors.UnsupportedMediaType("type"), 415),
    (errors.ServiceUnavailable("later"), 503),
])
def test_api_errors_carry_their_status(config: Config, error: errors.ApiError, status: int) -> None:
    async def fail(_request):
        raise error

    with serve(config) as client:
        client.app.router.routes.append(Route("/fail", fail))
        response = client.get("/fail")
    assert response.status_code == status
    assert response.json() == {"error": error.message}
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_malformed_multipart_is_json_400(config: Config) -> None:
    with serve(config) as client:
        response = client.post(
            "/api/images",
            content=b"this is not multipart",
            headers={"content-type": "multipart/form-data; boundary=xyz"},
        )
    assert response.status_code == 400
    assert set(response.json()) == {"error"}
