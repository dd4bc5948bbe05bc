"""The server-backed job store: ``PostgresJobStore``, so that several gateways (on any hosts)
share one queue of files, batches and async requests.

The logic is ``jobs.sql``; this gives the connection (``psycopg``, from the ``postgres``
extra: ``pip install 'shipit[postgres]'``), the schema in PostgreSQL's types (created once
under an advisory lock, so gateways starting together do not race), and the dialect: claims
take ``FOR UPDATE SKIP LOCKED`` rows (gateways never wait on each other's lines), and a batch
is locked while one gateway finalizes it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg

from shipit.jobs.sql import SqlJobStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files(
  seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,
  purpose TEXT NOT NULL, filename TEXT NOT NULL, bytes BIGINT NOT NULL,
  created_at BIGINT NOT NULL, content BYTEA NOT NULL);
CREATE INDEX IF NOT EXISTS files_tenant ON files(tenant, created_at);
CREATE TABLE IF NOT EXISTS batches(
  seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL,
  input_file_id TEXT NOT NULL, endpoint TEXT NOT NULL, completion_window TEXT NOT NULL,
  status TEXT NOT NULL, created_at BIGINT NOT NULL, expires_at BIGINT NOT NULL,
  total BIGINT NOT NULL DEFAULT 0, completed BIGINT NOT NULL DEFAULT 0,
  failed BIGINT NOT NULL DEFAULT 0, output_file_id TEXT, error_file_id TEXT, errors TEXT,
  metadata TEXT, in_progress_at BIGINT, finalizing_at BIGINT, completed_at BIGINT,
  failed_at BIGINT, expired_at BIGINT, cancelling_at BIGINT, cancelled_at BIGINT);
CREATE INDEX IF NOT EXISTS batches_status ON batches(status);
CREATE TABLE IF NOT EXISTS items(
  seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL UNIQUE, tenant TEXT NOT NULL, batch_id TEXT,
  line BIGINT NOT NULL DEFAULT 0, custom_id TEXT, url TEXT NOT NULL, body BYTEA NOT NULL,
  state TEXT NOT NULL, owner TEXT, lease_until DOUBLE PRECISION,
  not_before DOUBLE PRECISION NOT NULL DEFAULT 0, attempts BIGINT NOT NULL DEFAULT 0,
  status_code BIGINT, response BYTEA, created_at DOUBLE PRECISION NOT NULL,
  done_at DOUBLE PRECISION, webhook_url TEXT, webhook_state TEXT,
  webhook_attempts BIGINT NOT NULL DEFAULT 0, webhook_next_at DOUBLE PRECISION,
  UNIQUE(batch_id, line));
CREATE INDEX IF NOT EXISTS items_state ON items(state, not_before);
CREATE INDEX IF NOT EXISTS items_batch ON items(batch_id, state);
CREATE INDEX IF NOT EXISTS items_webhook ON items(webhook_state, webhook_next_at);
CREATE TABLE IF NOT EXISTS idempotency(
  tenant TEXT NOT NULL, key TEXT NOT NULL, item_id TEXT NOT NULL, body_sha256 TEXT NOT NULL,
  created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY(tenant, key))
"""
_SCHEMA_LOCK = 0x5368697049744A6F  # an advisory-lock key of our own


class PostgresJobStore(SqlJobStore):
    _skip_locked = "FOR UPDATE OF i SKIP LOCKED"
    _for_update = "FOR UPDATE"

    def __init__(self, url: str) -> None:
        self.url = url
        self._db = psycopg.connect(url, autocommit=True)
        self._lock = threading.Lock()
        with self._tx():
            self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            for statement in _SCHEMA.split(";"):
                self._db.execute(statement.encode())

    def close(self) -> None:
        self._db.close()

    def _x(self, sql: str, args: Sequence[Any] = ()) -> Any:
        return self._db.execute(sql.replace("?", "%s").encode(), args)

    def _xmany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        with self._db.cursor() as cur:
            cur.executemany(sql.replace("?", "%s").encode(), rows)

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self._lock, self._db.transaction():
            yield
