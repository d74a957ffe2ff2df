"""models.actions: what reprocess and delete change, on both backends."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select

from models import actions, migrate
from models.db import make_engine
from models.store import FolderStore
from models.tables import Image

images = Image.__table__


def _row(number: int, status: str, stored_path: str | None, error: str | None = None) -> dict:
    return {
        "sha256": f"{number:064x}", "filename": f"{number}.jpg", "status": status, "stored_path": stored_path,
        "error": error, "error_kind": "decode" if error else None, "received_at": datetime(2026, 1, 1), "size_bytes": 1,
    }


@pytest.mark.both_backends
def test_reprocess_leaves_images_whose_original_is_gone_as_they_are(backend_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "failed").mkdir(parents=True)
    (data_dir / "failed" / "kept.jpg").write_bytes(b"x")
    engine = make_engine(backend_url)
    migrate.upgrade(engine)
    try:
        with engine.begin() as connection:
            connection.execute(insert(images), [
                _row(1, "failed", "failed/kept.jpg", "cannot decode"),
                _row(2, "failed", "failed/gone.jpg", "cannot decode"),
                _row(3, "done", "originals/gone.jpg"),
            ])
            ids = dict(connection.execute(select(images.c.sha256, images.c.id)).all())
            first, gone_failed, gone_done = (ids[f"{number:064x}"] for number in (1, 2, 3))

            swept = actions.mark_for_reprocessing(connection, [], failed_only=True, store=FolderStore(data_dir))
            named = actions.mark_for_reprocessing(connection, [gone_done], failed_only=False, store=FolderStore(data_dir))

            rows = {row.id: row for row in connection.execute(select(images.c.id, images.c.status, images.c.error))}
        assert swept == actions.Reprocessing(marked=[first], gone=[gone_failed])
        assert named == actions.Reprocessing(marked=[], gone=[gone_done])
        assert (rows[first].status, rows[gone_failed].status, rows[gone_done].status) == ("pending", "failed", "done")
        assert rows[gone_failed].error == "cannot decode"  # the first reason, untouched
    finally:
        engine.dispose()


@pytest.mark.both_backends
def test_delete_takes_only_the_image_whose_original_was_read(backend_url: str) -> None:
    engine = make_engine(backend_url)
    migrate.upgrade(engine)
    try:
        with engine.begin() as connection:
            (image_id,) = connection.execute(insert(images).values(_row(1, "done", "originals/a.jpg")).returning(images.c.id)).one()
            image = actions.deletable_image(connection, image_id)
            assert image is not None and image.original == "originals/a.jpg"

            # Processed again meanwhile, into another place: the trash would hold the wrong file.
            assert actions.delete_image(connection, image_id, "failed/a.jpg") is None
            deleted = actions.delete_image(connection, image_id, image.original)

            assert deleted == image
            assert connection.execute(select(images.c.id)).all() == []
    finally:
        engine.dispose()
