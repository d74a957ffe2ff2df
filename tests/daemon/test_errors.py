"""daemon.errors: database errors named for the operator, from a real PostgreSQL server."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from daemon.errors import NO_FREE_SLOT, database_fault
from models.db import make_engine


def test_a_server_with_no_free_slot_is_named_so(postgres_cluster) -> None:
    postgres_cluster.admin("DROP ROLE IF EXISTS htx_no_slot; CREATE ROLE htx_no_slot LOGIN CONNECTION LIMIT 0")
    url = postgres_cluster.url("postgres", user="htx_no_slot")
    engine = make_engine(url)
    try:
        with pytest.raises(OperationalError) as refused, engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    finally:
        engine.dispose()
    fault = database_fault(refused.value)
    assert fault.problem == NO_FREE_SLOT, fault
