"""The job store tests run on both stores: embedded SQLite and a real PostgreSQL server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shipit.jobs.sql import SqlJobStore
from shipit.jobs.store import SqliteJobStore
from support.postgres import PostgresServer, postgres_server


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[object]:
    """A function that opens another connection to this test's store."""
    opened: list[SqlJobStore] = []
    if request.param == "sqlite":
        path = tmp_path / "jobs.sqlite3"

        def make() -> SqlJobStore:
            opened.append(SqliteJobStore(path))
            return opened[-1]
    else:
        from shipit.jobs.store_pg import PostgresJobStore

        url = request.getfixturevalue("pg_server").new_database()

        def make() -> SqlJobStore:
            opened.append(PostgresJobStore(url))
            return opened[-1]

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(store_factory: object) -> SqlJobStore:
    return store_factory()  # type: ignore[operator,no-any-return]
