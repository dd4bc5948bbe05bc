"""The embedded job store: ``SqliteJobStore``, one SQLite file in WAL mode (stdlib
``sqlite3``) that several gateways on one host may share; the logic is ``jobs.sql``.
``open_store`` picks the store the config names: PostgreSQL (``jobs.store_url``) or SQLite.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shipit.jobs.protocol import JobStore
from shipit.jobs.sql import SqlJobStore

__all__ = ["JobStore", "SqliteJobStore", "open_store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,
  purpose TEXT NOT NULL, filename TEXT NOT NULL,
  bytes INTEGER NOT NULL, created_at INTEGER NOT NULL, content BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS files_tenant ON files(tenant, created_at);
CREATE TABLE IF NOT EXISTS batches(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,
  input_file_id TEXT NOT NULL, endpoint TEXT NOT NULL,
  completion_window TEXT NOT NULL, status TEXT NOT NULL, created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL, total INTEGER NOT NULL DEFAULT 0,
  completed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
  output_file_id TEXT, error_file_id TEXT, errors TEXT, metadata TEXT,
  in_progress_at INTEGER, finalizing_at INTEGER, completed_at INTEGER, failed_at INTEGER,
  expired_at INTEGER, cancelling_at INTEGER, cancelled_at INTEGER);
CREATE INDEX IF NOT EXISTS batches_status ON batches(status);
CREATE TABLE IF NOT EXISTS items(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,
  batch_id TEXT, line INTEGER NOT NULL DEFAULT 0, custom_id TEXT, url TEXT NOT NULL,
  body BLOB NOT NULL, state TEXT NOT NULL, owner TEXT, lease_until REAL,
  not_before REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0, status_code INTEGER,
  response BLOB, created_at REAL NOT NULL, done_at REAL, webhook_url TEXT, webhook_state TEXT,
  webhook_attempts INTEGER NOT NULL DEFAULT 0, webhook_next_at REAL,
  UNIQUE(batch_id, line));
CREATE INDEX IF NOT EXISTS items_state ON items(state, not_before);
CREATE INDEX IF NOT EXISTS items_batch ON items(batch_id, state);
CREATE INDEX IF NOT EXISTS items_webhook ON items(webhook_state, webhook_next_at);
CREATE TABLE IF NOT EXISTS idempotency(
  tenant TEXT NOT NULL, key TEXT NOT NULL, item_id TEXT NOT NULL, body_sha256 TEXT NOT NULL,
  created_at REAL NOT NULL, PRIMARY KEY(tenant, key));
"""


class SqliteJobStore(SqlJobStore):
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One thread uses a connection at a time (AsyncJobStore's worker; tests call directly).
        self._db = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=False, timeout=30.0
        )
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=30000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _x(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._db.execute(sql, args)

    def _xmany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._db.executemany(sql, rows)

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an error): writers queue up on
        the database lock, so two gateways never claim the same line."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")


def open_store(path: str | Path, url: str | None) -> JobStore:
    """PostgreSQL at ``url`` when given (the ``postgres`` extra), else SQLite at ``path``."""
    if url:
        from shipit.jobs.store_pg import PostgresJobStore

        return PostgresJobStore(url)
    return SqliteJobStore(path)
