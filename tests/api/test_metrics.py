"""GET /metrics, read back with prometheus_client's own parser."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from models.config import Config
from tests.api.conftest import serve, wait_status
from tests.helpers import CORPUS_DIR, read_images

pytestmark = pytest.mark.both_backends


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_metrics_report_images_stages_workers_and_requests(config: Config, start_daemon) -> None:
    daemon = start_daemon(config)
    config.inbox_dir.mkdir(parents=True, exist_ok=True)
    for name in ("hopper.jpg", "flower.jpg", "broken.png"):
        body = (CORPUS_DIR / name).read_bytes()
        (config.inbox_dir / name).write_bytes(body)
        wait_status(config, hashlib.sha256(body).hexdigest())
    daemon.heartbeat()
    rows = read_images(config)
    done = [row for row in rows if row["status"] == "done"]
    with serve(config) as client:
        for _ in range(3):
            assert client.get(f"/api/images/{done[0]['id']}").status_code == 200
        assert client.get("/api/images/999999").status_code == 404
        assert client.get("/no/such/page").status_code == 404

        response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    found = samples(response.text)
    assert found[("htx_images", (("status", "done"),))] == len(done) == 2
    assert found[("htx_images", (("status", "failed"),))] == 1
    assert found[("htx_queue_depth", (("waiting_for", "prepare"),))] == 0
    # Histograms: cumulative buckets ending in +Inf = count, and the sum in seconds.
    assert found[("htx_image_processing_seconds_count", ())] == 2
    assert found[("htx_image_processing_seconds_bucket", (("le", "+Inf"),))] == 2
    assert found[("htx_image_processing_seconds_sum", ())] == pytest.approx(sum(row["processing_ms"] for row in done) / 1000)
    thumbnails = [found[("htx_image_stage_seconds_bucket", (("le", le), ("stage", "thumbnails")))] for le in ("0.005", "0.1", "60.0", "+Inf")]
    assert thumbnails == sorted(thumbnails) and thumbnails[-1] == 2
    worker = daemon.worker_name
    assert found[("htx_worker_up", (("worker", worker),))] == 1
    assert 0 <= found[("htx_worker_heartbeat_age_seconds", (("roles", "watch thumbnails captions"), ("worker", worker)))] < 60
    route = "/api/images/{image_id}"
    assert found[("htx_api_requests_total", (("method", "GET"), ("route", route), ("status", "200")))] == 3
    assert found[("htx_api_requests_total", (("method", "GET"), ("route", route), ("status", "404")))] == 1
    assert found[("htx_api_requests_total", (("method", "GET"), ("route", "unmatched"), ("status", "404")))] == 1
    assert found[("htx_api_request_duration_seconds_count", (("method", "GET"), ("route", route)))] == 4


def test_caption_batches_are_counted_per_worker(make_config, start_daemon, tiny_blip: Path) -> None:
    config = make_config(caption={"model": str(tiny_blip), "max_new_tokens": 5, "batch_size": 4, "batch_wait_ms": 300})
    daemon = start_daemon(config)
    config.inbox_dir.mkdir(parents=True, exist_ok=True)
    bodies = [(CORPUS_DIR / name).read_bytes() for name in ("hopper.jpg", "flower.jpg", "Landscape_1.jpg")]
    for number, body in enumerate(bodies):
        (config.inbox_dir / f"{number}.jpg").write_bytes(body)
    for body in bodies:
        assert wait_status(config, hashlib.sha256(body).hexdigest())["caption"]
    daemon.heartbeat()
    with serve(config) as client:
        found = samples(client.get("/metrics").text)
    worker = (("worker", daemon.worker_name),)
    batches = found[("htx_caption_batch_size_count", worker)]
    assert 1 <= batches <= 3
    assert found[("htx_caption_batch_size_sum", worker)] == 3  # images captioned
    assert found[("htx_caption_batch_size_bucket", (("le", "4.0"), *worker))] == batches
    assert found[("htx_caption_batch_seconds_count", worker)] == batches
    assert found[("htx_caption_batch_seconds_sum", worker)] > 0


def test_a_silent_worker_is_stale_then_gone_in_stats_metrics_and_htx_stats(config: Config, start_daemon, tmp_path, capsys) -> None:
    from daemon.cli import main
    from daemon.database.records import utcnow
    from models.db import make_engine
    from models.tables import DaemonState
    from tests.helpers import write_config_file

    daemon = start_daemon(config)
    daemon.heartbeat()
    # Two workers that stopped beating without a clean stop (killed): one two heartbeats ago
    # and more, one longer ago than a lease (pipeline.lease_s, 60 s here).
    engine = make_engine(config.database_url)
    now = utcnow()
    with engine.begin() as connection:
        for pid, seconds_ago in ((101, 15), (102, config.pipeline.lease_s + 30)):
            heard = now - timedelta(seconds=seconds_ago)
            connection.execute(
                DaemonState.__table__.insert().values(host="elsewhere", pid=pid, roles="thumbnails", started_at=heard, heartbeat_at=heard)
            )
    engine.dispose()
    expected = {daemon.worker_name: "running", "elsewhere:101": "stale", "elsewhere:102": "gone"}

    with serve(config) as client:
        stats = client.get("/api/stats").json()
        metrics = samples(client.get("/metrics").text)

    assert {worker["name"]: worker["state"] for worker in stats["workers"]} == expected
    for name, state in expected.items():
        assert metrics[("htx_worker_up", (("worker", name),))] == (1 if state == "running" else 0)
        for known in ("running", "stale", "gone"):
            assert metrics[("htx_worker_state", (("state", known), ("worker", name)))] == (1 if known == state else 0)

    assert main(["--config", str(write_config_file(config, tmp_path / "htx.toml")), "stats"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("  ") and ":" in line}
    assert rows == expected
