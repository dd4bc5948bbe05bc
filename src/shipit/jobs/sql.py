"""The job store's logic, in the SQL that SQLite and PostgreSQL both run.

Exactly once: a worker ``claim``s queued items with a lease (owner + expiry) in one
transaction (SQLite: ``BEGIN IMMEDIATE``, one writer at a time; PostgreSQL: ``FOR UPDATE SKIP
LOCKED``, so gateways never wait on each other's rows), renews the lease while the request
runs, and ``complete`` writes the answer and marks the item done in one transaction, only
while it still holds the lease. An item whose lease ran out (its gateway was killed) is
claimed again by the next worker. The output file is built from the items table, one row per
input line, when ``tick`` finalizes the batch, in the same transaction that marks it
completed, expired or cancelled. A request may thus reach a replica twice after a crash, but
its line appears once in the output. Every client-facing call is scoped to a ``tenant``.
``SqlJobStore`` holds it all; ``store.SqliteJobStore`` and ``store_pg.PostgresJobStore`` give
the connection, the schema and the dialect's few differences.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from shipit.jobs import formats
from shipit.jobs.formats import BatchLine, BatchRecord, FileRecord, ItemRecord, WorkItem
from shipit.policy.jobs import Backlog

_BATCH_COLS = ", ".join(BatchRecord.__slots__)
_ITEM_COLS = (
    "id, tenant, batch_id, line, custom_id, url, state, attempts, status_code, response, "
    "created_at, done_at, webhook_url, webhook_state"
)
# Statuses in which a batch's lines may run (or still finish).
_LIVE = ("in_progress", "cancelling")


class IdempotencyConflictError(Exception):
    """An idempotency key used again with another request body."""

    def __init__(self, key: str, item_id: str) -> None:
        super().__init__(
            f"the idempotency key {key!r} was used for another request (async request "
            f"{item_id}); use a new key for a new request"
        )
        self.key, self.item_id = key, item_id


class SqlJobStore:
    """The store's logic in SQL both SQLite and PostgreSQL run; a subclass gives the
    connection, the transactions and the dialect's few differences."""

    # Claims skip rows another worker holds locked (PostgreSQL); SQLite has one writer.
    _skip_locked = ""
    _for_update = ""

    # ----- helpers ----------------------------------------------------------------------
    def _tx(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _x(self, sql: str, args: Sequence[Any] = ()) -> Any:
        """Run one statement (``?`` placeholders); the cursor."""
        raise NotImplementedError

    def _xmany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _one(self, sql: str, args: Sequence[Any]) -> Any:
        return self._x(sql, args).fetchone()

    # ----- files ------------------------------------------------------------------------
    def put_file(
        self, tenant: str, filename: str, purpose: str, content: bytes, now: float
    ) -> FileRecord:
        rec = FileRecord(formats.new_id("file-"), tenant, purpose, filename, len(content), int(now))
        with self._tx():
            self._insert_file(rec, content)
        return rec

    def _insert_file(self, rec: FileRecord, content: bytes) -> None:
        self._x(
            "INSERT INTO files(id, tenant, purpose, filename, bytes, created_at, content) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rec.id, rec.tenant, rec.purpose, rec.filename, rec.bytes, rec.created_at, content),
        )

    def get_file(self, tenant: str, file_id: str) -> FileRecord | None:
        row = self._one(
            "SELECT id, tenant, purpose, filename, bytes, created_at FROM files "
            "WHERE id = ? AND tenant = ?",
            (file_id, tenant),
        )
        return FileRecord(*row) if row else None

    def file_content(self, tenant: str, file_id: str) -> bytes | None:
        row = self._one("SELECT content FROM files WHERE id = ? AND tenant = ?", (file_id, tenant))
        return bytes(row[0]) if row else None

    def list_files(
        self, tenant: str, purpose: str | None, limit: int, after: str | None
    ) -> list[FileRecord]:
        sql = "SELECT id, tenant, purpose, filename, bytes, created_at FROM files WHERE tenant = ?"
        args: list[Any] = [tenant]
        if purpose:
            sql += " AND purpose = ?"
            args.append(purpose)
        if after:
            sql += " AND seq < (SELECT seq FROM files WHERE id = ?)"
            args.append(after)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [FileRecord(*r) for r in self._x(sql, args)]

    def delete_file(self, tenant: str, file_id: str) -> bool:
        with self._tx():
            cur = self._x("DELETE FROM files WHERE id = ? AND tenant = ?", (file_id, tenant))
        return bool(cur.rowcount == 1)

    # ----- batches ----------------------------------------------------------------------
    def create_batch(
        self,
        tenant: str,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        now: float,
        allows: Callable[[str], bool] | None = None,
    ) -> BatchRecord:
        """Validate the input file and queue its lines, in one transaction: the batch is
        ``in_progress`` with every line queued, or ``failed`` with the errors (``allows``:
        the models the tenant may use)."""
        content = self.file_content(tenant, input_file_id)
        if content is None:
            raise KeyError(input_file_id)
        window_s = formats.window_seconds(completion_window)
        lines, errors = formats.parse_batch_input(content, endpoint, allows=allows)
        t = int(now)
        bid = formats.new_id("batch_")
        meta = json.dumps(metadata) if metadata else None
        with self._tx():
            if errors:
                self._x(
                    "INSERT INTO batches(id, tenant, input_file_id, endpoint, completion_window, "
                    "status, created_at, expires_at, errors, metadata, failed_at) "
                    "VALUES (?, ?, ?, ?, ?, 'failed', ?, ?, ?, ?, ?)",
                    (
                        bid,
                        tenant,
                        input_file_id,
                        endpoint,
                        completion_window,
                        t,
                        t + window_s,
                        json.dumps([e.json() for e in errors]),
                        meta,
                        t,
                    ),
                )
            else:
                self._x(
                    "INSERT INTO batches(id, tenant, input_file_id, endpoint, completion_window, "
                    "status, created_at, expires_at, total, metadata, in_progress_at) "
                    "VALUES (?, ?, ?, ?, ?, 'in_progress', ?, ?, ?, ?, ?)",
                    (
                        bid,
                        tenant,
                        input_file_id,
                        endpoint,
                        completion_window,
                        t,
                        t + window_s,
                        len(lines),
                        meta,
                        t,
                    ),
                )
                self._insert_lines(tenant, bid, lines, now)
        batch = self.get_batch(tenant, bid)
        assert batch is not None
        return batch

    def _insert_lines(self, tenant: str, batch_id: str, lines: list[BatchLine], now: float) -> None:
        self._xmany(
            "INSERT INTO items(id, tenant, batch_id, line, custom_id, url, body, state, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
            [
                (
                    formats.new_id("batch_req_"),
                    tenant,
                    batch_id,
                    x.line,
                    x.custom_id,
                    x.url,
                    x.body,
                    now,
                )
                for x in lines
            ],
        )

    def get_batch(self, tenant: str, batch_id: str) -> BatchRecord | None:
        row = self._one(
            f"SELECT {_BATCH_COLS} FROM batches WHERE id = ? AND tenant = ?", (batch_id, tenant)
        )
        return BatchRecord(*row) if row else None

    def list_batches(self, tenant: str, limit: int, after: str | None) -> list[BatchRecord]:
        sql = f"SELECT {_BATCH_COLS} FROM batches WHERE tenant = ?"
        args: list[Any] = [tenant]
        if after:
            sql += " AND seq < (SELECT seq FROM batches WHERE id = ?)"
            args.append(after)
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [BatchRecord(*r) for r in self._x(sql, args)]

    def cancel_batch(self, tenant: str, batch_id: str, now: float) -> BatchRecord | None:
        """``cancelling`` now; queued lines are dropped, running ones may finish; ``tick``
        makes it ``cancelled`` with the files of what was answered."""
        with self._tx():
            cur = self._x(
                "UPDATE batches SET status = 'cancelling', cancelling_at = ? "
                "WHERE id = ? AND tenant = ? AND status IN ('validating', 'in_progress')",
                (int(now), batch_id, tenant),
            )
            if cur.rowcount:
                self._x(
                    "UPDATE items SET state = 'cancelled', done_at = ? "
                    "WHERE batch_id = ? AND state = 'queued'",
                    (now, batch_id),
                )
        return self.get_batch(tenant, batch_id)

    # ----- single async requests ----------------------------------------------------------
    def submit(
        self,
        tenant: str,
        url: str,
        body: bytes,
        webhook_url: str | None,
        now: float,
        idempotency_key: str | None = None,
    ) -> tuple[ItemRecord, bool]:
        """Queue one request; ``(item, replayed)``. With an ``idempotency_key`` already used by
        this tenant, nothing is queued: the first request's item comes back (``replayed``), or
        ``IdempotencyConflict`` when that request's body was another."""
        iid = formats.new_id("areq_")
        sha = hashlib.sha256(body).hexdigest()
        replayed = False
        with self._tx():
            if idempotency_key is not None:
                cur = self._x(
                    "INSERT INTO idempotency(tenant, key, item_id, body_sha256, created_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                    (tenant, idempotency_key, iid, sha, now),
                )
                if cur.rowcount == 0:  # the key is taken: the first request stands
                    row = self._one(
                        "SELECT item_id, body_sha256 FROM idempotency WHERE tenant = ? AND key = ?",
                        (tenant, idempotency_key),
                    )
                    if row[1] != sha:
                        raise IdempotencyConflictError(idempotency_key, row[0])
                    iid, replayed = row[0], True
            if not replayed:
                self._x(
                    "INSERT INTO items(id, tenant, url, body, state, created_at, webhook_url) "
                    "VALUES (?, ?, ?, ?, 'queued', ?, ?)",
                    (iid, tenant, url, body, now, webhook_url),
                )
        item = self.get_item(tenant, iid)
        assert item is not None
        return item, replayed

    def get_item(self, tenant: str, item_id: str) -> ItemRecord | None:
        row = self._one(
            f"SELECT {_ITEM_COLS} FROM items WHERE id = ? AND tenant = ? AND batch_id IS NULL",
            (item_id, tenant),
        )
        return _item(row) if row else None

    def cancel_item(self, tenant: str, item_id: str, now: float) -> ItemRecord | None:
        """A queued request is cancelled; one already running or done is left as it is."""
        with self._tx():
            self._x(
                "UPDATE items SET state = 'cancelled', done_at = ? "
                "WHERE id = ? AND tenant = ? AND batch_id IS NULL AND state = 'queued'",
                (now, item_id, tenant),
            )
        return self.get_item(tenant, item_id)

    # ----- work -------------------------------------------------------------------------
    def claim(self, owner: str, n: int, lease_s: float, now: float) -> list[WorkItem]:
        """Up to ``n`` items to run: queued ones, and running ones whose lease ran out (their
        worker died), unless their batch was cancelled or expired meanwhile. Single async
        requests go first, then batch lines by the end of their window, then in order."""
        if n <= 0:
            return []
        with self._tx():
            rows = self._x(
                "SELECT i.seq FROM items i LEFT JOIN batches b ON b.id = i.batch_id "
                "WHERE ((i.state = 'queued' AND i.not_before <= ?) "
                "   OR (i.state = 'running' AND i.lease_until < ?)) "
                "  AND (i.batch_id IS NULL OR b.status = 'in_progress') "
                # Single requests first, then the batch whose window ends first, in order.
                f"ORDER BY i.batch_id IS NOT NULL, b.expires_at, i.seq LIMIT ? {self._skip_locked}",
                (now, now, n),
            ).fetchall()
            seqs = [r[0] for r in rows]
            if not seqs:
                return []
            marks = ",".join("?" * len(seqs))
            self._x(
                "UPDATE items SET state = 'running', owner = ?, lease_until = ?, "
                f"attempts = attempts + 1 WHERE seq IN ({marks})",
                (owner, now + lease_s, *seqs),
            )
            got = self._x(
                f"SELECT id, tenant, url, body, attempts FROM items WHERE seq IN ({marks}) "
                "ORDER BY seq",
                seqs,
            ).fetchall()
        return [WorkItem(r[0], r[1], r[2], bytes(r[3]), r[4]) for r in got]

    def renew(self, owner: str, ids: Sequence[str], lease_s: float, now: float) -> None:
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        with self._tx():
            self._x(
                f"UPDATE items SET lease_until = ? WHERE owner = ? AND state = 'running' "
                f"AND id IN ({marks})",
                (now + lease_s, owner, *ids),
            )

    def complete(self, owner: str, item_id: str, status: int, response: bytes, now: float) -> bool:
        """Write the answer and mark the item done, only if ``owner`` still holds it: False
        means another worker took it over (its answer, not this one, will count)."""
        with self._tx():
            cur = self._x(
                "UPDATE items SET state = 'done', status_code = ?, response = ?, done_at = ?, "
                "owner = NULL, lease_until = NULL, "
                "webhook_state = CASE WHEN webhook_url IS NULL THEN NULL ELSE 'pending' END, "
                "webhook_next_at = ? "
                "WHERE id = ? AND owner = ? AND state = 'running'",
                (status, response, now, now, item_id, owner),
            )
            if cur.rowcount != 1:
                return False
            column = "completed" if status < 400 else "failed"
            self._x(
                f"UPDATE batches SET {column} = {column} + 1 "
                "WHERE id = (SELECT batch_id FROM items WHERE id = ?)",
                (item_id,),
            )
        return True

    def release(self, owner: str, item_id: str, not_before: float, *, count_attempt: bool) -> None:
        """Give a claimed item back to the queue (admission refused it, or a retry later)."""
        with self._tx():
            self._x(
                "UPDATE items SET state = 'queued', owner = NULL, lease_until = NULL, "
                "not_before = ?, attempts = attempts - ? "
                "WHERE id = ? AND owner = ? AND state = 'running'",
                (not_before, 0 if count_attempt else 1, item_id, owner),
            )

    def backlog(self, now: float) -> list[Backlog]:
        """Items queued or running (the demand job work adds to the fleet), by batch with its
        window (single async requests together, without one); cancelled or expired batches'
        lines are not counted."""
        rows = self._x(
            "SELECT COUNT(*), b.created_at, b.expires_at FROM items i "
            "LEFT JOIN batches b ON b.id = i.batch_id "
            "WHERE i.state IN ('queued', 'running') "
            "  AND (i.batch_id IS NULL OR b.status = 'in_progress') "
            "GROUP BY i.batch_id, b.created_at, b.expires_at",
            (),
        ).fetchall()
        out = []
        for lines, created, expires in rows:
            if expires is None:
                out.append(Backlog(int(lines)))
            else:
                out.append(Backlog(int(lines), float(expires - created), float(expires - now)))
        return out

    def tick(self, now: float) -> list[str]:
        """Expire batches past their window, then finalize every live batch with no line left
        to run; returns the ids of the batches finalized."""
        done: list[str] = []
        live = self._x(
            f"SELECT id, status, expires_at FROM batches WHERE status IN {_LIVE}"
        ).fetchall()
        for bid, status, expires_at in live:
            with self._tx():
                row = self._one(
                    f"SELECT status FROM batches WHERE id = ? {self._for_update}", (bid,)
                )
                if row is None or row[0] != status:
                    continue  # another gateway moved it meanwhile
                end = "cancelled" if status == "cancelling" else "completed"
                if status == "in_progress" and now >= expires_at:
                    end = "expired"
                if end != "completed":
                    state = "cancelled" if end == "cancelled" else "expired"
                    self._x(
                        "UPDATE items SET state = ?, done_at = ? WHERE batch_id = ? AND "
                        "(state = 'queued' OR (state = 'running' AND lease_until < ?))",
                        (state, now, bid, now),
                    )
                left = self._one(
                    "SELECT COUNT(*) FROM items WHERE batch_id = ? "
                    "AND state IN ('queued', 'running')",
                    (bid,),
                )[0]
                if left:
                    continue
                self._finalize(bid, end, now)
                done.append(bid)
        return done

    def _finalize(self, batch_id: str, end: str, now: float) -> None:
        """Inside a transaction: the output and error files, and the final status."""
        (tenant,) = self._one("SELECT tenant FROM batches WHERE id = ?", (batch_id,))
        out: list[bytes] = []
        err: list[bytes] = []
        rows = self._x(
            f"SELECT {_ITEM_COLS} FROM items WHERE batch_id = ? ORDER BY line", (batch_id,)
        )
        for row in rows:
            ok, line = formats.output_line(_item(row))
            (out if ok else err).append(line)
        t = int(now)
        ids: list[str | None] = []
        for lines, suffix in ((out, "output"), (err, "errors")):
            if not lines:
                ids.append(None)
                continue
            content = b"".join(lines)
            name = f"{batch_id}_{suffix}.jsonl"
            rec = FileRecord(formats.new_id("file-"), tenant, "batch_output", name, len(content), t)
            self._insert_file(rec, content)
            ids.append(rec.id)
        self._x(
            f"UPDATE batches SET status = ?, output_file_id = ?, error_file_id = ?, "
            f"finalizing_at = ?, {end}_at = ? WHERE id = ?",
            (end, ids[0], ids[1], t, t, batch_id),
        )

    # ----- webhooks ---------------------------------------------------------------------
    def due_webhooks(self, now: float, n: int) -> list[tuple[ItemRecord, int]]:
        """The items whose callback is due now, with the deliveries tried so far."""
        rows = self._x(
            f"SELECT {_ITEM_COLS}, webhook_attempts FROM items "
            "WHERE webhook_state = 'pending' AND webhook_next_at <= ? ORDER BY webhook_next_at "
            "LIMIT ?",
            (now, n),
        ).fetchall()
        return [(_item(r[:-1]), int(r[-1])) for r in rows]

    def webhook_result(
        self, item_id: str, delivered: bool, next_at: float | None, now: float
    ) -> None:
        """After one delivery attempt: delivered, retried at ``next_at``, or given up (None)."""
        state = "delivered" if delivered else ("pending" if next_at is not None else "failed")
        with self._tx():
            self._x(
                "UPDATE items SET webhook_state = ?, webhook_attempts = webhook_attempts + 1, "
                "webhook_next_at = ? WHERE id = ?",
                (state, next_at if next_at is not None else now, item_id),
            )


def _item(row: Sequence[Any]) -> ItemRecord:
    values = list(row)
    values[9] = bytes(values[9]) if values[9] is not None else None
    return ItemRecord(*values)
