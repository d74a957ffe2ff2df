from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from models import migrate
from models.db import make_engine


@pytest.fixture
def engine(backend_url: str) -> Iterator[Engine]:
    """An engine on a database of the test's backend, its schema created."""
    engine = make_engine(backend_url)
    migrate.upgrade(engine)
    yield engine
    engine.dispose()
