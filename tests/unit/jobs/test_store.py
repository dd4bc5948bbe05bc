"""The SQLite job store: leases, exactly-once answers, finalization, cancel, expiry, tenants."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from shipit.jobs.sql import SqlJobStore

EP = "/v1/chat/completions"


def _jsonl(n: int, *, url: str = EP) -> bytes:
    lines = [
        {
            "custom_id": f"req-{i}",
            "method": "POST",
            "url": url,
            "body": {"model": "m", "messages": [{"role": "user", "content": f"hi {i}"}]},
        }
        for i in range(n)
    ]
    return b"".join(json.dumps(x).encode() + b"\n" for x in lines)


def _batch(store: SqlJobStore, n: int, *, window: str = "24h", tenant: str = "default") -> str:
    f = store.put_file(tenant, "in.jsonl", "batch", _jsonl(n), 1000.0)
    b = store.create_batch(tenant, f.id, EP, window, {"k": "v"}, 1000.0)
    assert b.status == "in_progress", b.errors
    return b.id


def _pending(store: SqlJobStore) -> int:
    return sum(b.lines for b in store.backlog(1000.0))


def _lines(store: SqlJobStore, file_id: str | None) -> list[dict[str, object]]:
    assert file_id is not None
    content = store.file_content("default", file_id)
    assert content is not None
    return [json.loads(x) for x in content.splitlines()]


def test_two_workers_never_claim_the_same_line(store: SqlJobStore) -> None:
    _batch(store, 10)
    a = store.claim("a", 6, 30.0, 1001.0)
    b = store.claim("b", 6, 30.0, 1001.0)
    assert len(a) == 6
    assert len(b) == 4
    assert not {x.id for x in a} & {x.id for x in b}
    assert store.claim("c", 5, 30.0, 1002.0) == []


def test_expired_lease_is_taken_over_and_the_old_owner_cannot_answer(
    store: SqlJobStore,
) -> None:
    bid = _batch(store, 3)
    first = store.claim("dead", 3, 10.0, 1001.0)
    assert store.claim("alive", 3, 10.0, 1005.0) == []  # leases still held
    store.renew("dead", [first[0].id], 10.0, 1009.0)  # only the first one renewed
    taken = store.claim("alive", 3, 10.0, 1012.0)
    assert sorted(x.id for x in taken) == sorted(x.id for x in first[1:])
    assert all(x.attempts == 2 for x in taken)
    # The dead owner's late answer is refused for a line it lost, kept for the one it held.
    assert not store.complete("dead", taken[0].id, 200, b'{"late": true}', 1013.0)
    assert store.complete("dead", first[0].id, 200, b'{"n": 0}', 1013.0)
    for x in taken:
        assert store.complete("alive", x.id, 200, b'{"ok": true}', 1014.0)
    assert store.tick(1015.0) == [bid]
    batch = store.get_batch("default", bid)
    assert batch is not None
    assert batch.status == "completed"
    assert (batch.total, batch.completed, batch.failed) == (3, 3, 0)
    out = _lines(store, batch.output_file_id)
    assert [x["custom_id"] for x in out] == ["req-0", "req-1", "req-2"]
    assert [x["response"]["body"] for x in out[1:]] == [{"ok": True}, {"ok": True}]  # type: ignore[index]
    assert batch.error_file_id is None


def test_failed_lines_go_to_the_error_file(store: SqlJobStore) -> None:
    bid = _batch(store, 2)
    a, b = store.claim("w", 2, 30.0, 1001.0)
    store.complete("w", a.id, 200, b'{"ok": 1}', 1002.0)
    store.complete("w", b.id, 400, b'{"error": {"message": "bad"}}', 1002.0)
    store.tick(1003.0)
    batch = store.get_batch("default", bid)
    assert batch is not None
    assert (batch.completed, batch.failed) == (1, 1)
    assert [x["custom_id"] for x in _lines(store, batch.output_file_id)] == ["req-0"]
    (err,) = _lines(store, batch.error_file_id)
    assert err["custom_id"] == "req-1"
    assert err["response"]["status_code"] == 400  # type: ignore[index]


def test_released_line_runs_again_after_its_delay(store: SqlJobStore) -> None:
    _batch(store, 1)
    (x,) = store.claim("w", 1, 30.0, 1001.0)
    store.release("w", x.id, 1010.0, count_attempt=False)
    assert store.claim("w", 1, 30.0, 1005.0) == []
    (again,) = store.claim("w", 1, 30.0, 1010.0)
    assert again.attempts == 1  # an admission refusal is not an attempt


def test_invalid_input_fails_the_batch_with_line_errors(store: SqlJobStore) -> None:
    bad = _jsonl(2) + b"not json\n" + _jsonl(1, url="/v1/completions")
    f = store.put_file("default", "in.jsonl", "batch", bad, 1000.0)
    b = store.create_batch("default", f.id, EP, "24h", None, 1000.0)
    assert b.status == "failed"
    errors = json.loads(b.errors or "[]")
    assert [e["line"] for e in errors] == [3, 4]
    assert errors[0]["code"] == "invalid_json"
    assert "duplicate" not in errors[1]["message"]
    assert store.claim("w", 10, 30.0, 1001.0) == []


def test_duplicate_custom_id_is_refused(store: SqlJobStore) -> None:
    f = store.put_file("default", "in.jsonl", "batch", _jsonl(2) + _jsonl(1), 1000.0)
    b = store.create_batch("default", f.id, EP, "24h", None, 1000.0)
    assert b.status == "failed"
    assert json.loads(b.errors or "[]")[0]["code"] == "duplicate_custom_id"


def test_cancel_keeps_what_was_answered(store: SqlJobStore) -> None:
    bid = _batch(store, 4)
    a, b = store.claim("w", 2, 30.0, 1001.0)
    store.complete("w", a.id, 200, b"{}", 1002.0)
    batch = store.cancel_batch("default", bid, 1003.0)
    assert batch is not None
    assert batch.status == "cancelling"
    assert store.tick(1004.0) == []  # b still runs
    assert store.claim("w", 4, 30.0, 1004.0) == []  # the queued ones were dropped
    store.complete("w", b.id, 200, b"{}", 1005.0)
    assert store.tick(1006.0) == [bid]
    batch = store.get_batch("default", bid)
    assert batch is not None
    assert batch.status == "cancelled"
    assert len(_lines(store, batch.output_file_id)) == 2
    errs = _lines(store, batch.error_file_id)
    assert [e["error"]["code"] for e in errs] == ["batch_cancelled"] * 2  # type: ignore[index]


def test_window_expiry_answers_the_rest_as_expired(store: SqlJobStore) -> None:
    bid = _batch(store, 3, window="60s")
    (a,) = store.claim("w", 1, 30.0, 1001.0)
    store.complete("w", a.id, 200, b"{}", 1002.0)
    assert store.tick(1059.0) == []
    assert store.tick(1060.0) == [bid]
    batch = store.get_batch("default", bid)
    assert batch is not None
    assert batch.status == "expired"
    assert batch.expired_at == 1060
    codes = [e["error"]["code"] for e in _lines(store, batch.error_file_id)]  # type: ignore[index]
    assert codes == ["batch_expired", "batch_expired"]


def test_the_backlog_counts_lines_left_by_window(store: SqlJobStore) -> None:
    day = _batch(store, 3)  # 24h from t=1000
    hour = _batch(store, 2, window="1h")
    gone = _batch(store, 4, window="1h")
    store.submit("default", EP, b'{"model": "m"}', None, 1000.0)
    (a,) = store.claim("w", 1, 30.0, 1001.0)  # the async request: still left while it runs
    store.complete("w", a.id, 200, b"{}", 1002.0)  # ... and not once answered
    store.claim("w", 2, 30.0, 1002.0)  # two of the 1h batches' lines run: still left
    assert store.cancel_batch("default", gone, 1003.0) is not None  # its lines are not
    got = sorted((b.lines, b.window_s, b.left_s) for b in store.backlog(1600.0))
    assert got == [(2, 3600.0, 3000.0), (3, 86400.0, 85800.0)]
    assert day != hour
    store.submit("default", EP, b'{"model": "m2"}', None, 1700.0)
    assert (1, None, None) in {(b.lines, b.window_s, b.left_s) for b in store.backlog(1700.0)}


def test_tenants_see_only_their_own(store: SqlJobStore) -> None:
    f = store.put_file("acme", "in.jsonl", "batch", _jsonl(1), 1000.0)
    assert store.get_file("other", f.id) is None
    assert store.file_content("other", f.id) is None
    assert store.list_files("other", None, 10, None) == []
    assert not store.delete_file("other", f.id)
    with pytest.raises(KeyError):
        store.create_batch("other", f.id, EP, "24h", None, 1000.0)
    bid = _batch(store, 1, tenant="acme")
    assert store.get_batch("other", bid) is None
    assert store.cancel_batch("other", bid, 1001.0) is None
    item, _ = store.submit("acme", EP, b"{}", None, 1000.0)
    assert store.get_item("other", item.id) is None


def test_async_request_lifecycle_and_webhook_state(store: SqlJobStore) -> None:
    item, _ = store.submit("default", EP, b'{"model": "m"}', "http://127.0.0.1:9/hook", 1000.0)
    assert item.state == "queued"
    (w,) = store.claim("w", 5, 30.0, 1001.0)
    assert w.id == item.id
    assert store.cancel_item("default", item.id, 1001.5).state == "running"  # type: ignore[union-attr]
    store.complete("w", w.id, 200, b'{"answer": 1}', 1002.0)
    done = store.get_item("default", item.id)
    assert done is not None
    assert (done.state, done.status_code, done.webhook_state) == ("done", 200, "pending")
    (due, attempts), *rest = store.due_webhooks(1002.0, 10)
    assert (due.id, attempts, rest) == (item.id, 0, [])
    store.webhook_result(item.id, False, 1010.0, 1002.0)
    assert store.due_webhooks(1005.0, 10) == []
    assert store.due_webhooks(1010.0, 10)[0][1] == 1
    store.webhook_result(item.id, True, None, 1010.0)
    assert store.due_webhooks(2000.0, 10) == []
    assert store.get_item("default", item.id).webhook_state == "delivered"  # type: ignore[union-attr]


def test_a_second_connection_sees_the_same_queue(store_factory: Any) -> None:
    one, two = store_factory(), store_factory()
    _batch(one, 4)
    got_one = one.claim("a", 2, 30.0, 1001.0)
    got_two = two.claim("b", 4, 30.0, 1001.0)
    assert len(got_one) == 2
    assert len(got_two) == 2
    assert not {x.id for x in got_one} & {x.id for x in got_two}


def test_concurrent_claims_from_many_connections_split_the_lines(store_factory: Any) -> None:
    """Workers on separate connections claiming at once: every line to exactly one."""
    _batch(store_factory(), 200)
    workers = [store_factory() for _ in range(4)]
    claimed: dict[str, list[str]] = {}

    def work(k: int) -> None:
        s = workers[k]
        while got := s.claim(f"w{k}", 7, 30.0, 1001.0):
            claimed.setdefault(f"w{k}", []).extend(x.id for x in got)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ids = [i for got in claimed.values() for i in got]
    assert len(ids) == 200
    assert len(set(ids)) == 200


def test_claims_single_requests_first_then_the_earliest_window(store: SqlJobStore) -> None:
    late = _batch(store, 2, window="24h")
    soon = _batch(store, 2, window="1h")
    single, _ = store.submit("default", EP, b"{}", None, 1000.0)

    def batch_of(item_id: str) -> str | None:
        row = store._one("SELECT batch_id FROM items WHERE id = ?", (item_id,))
        return row[0] if row else None

    assert [x.id for x in store.claim("w", 1, 30.0, 1001.0)] == [single.id]
    assert [batch_of(x.id) for x in store.claim("w", 2, 30.0, 1001.0)] == [soon, soon]
    assert [batch_of(x.id) for x in store.claim("w", 3, 30.0, 1001.0)] == [late, late]


def test_an_idempotency_key_queues_one_request_however_often_it_is_sent(store: SqlJobStore) -> None:
    body = b'{"model": "m", "messages": []}'
    first, replayed = store.submit("acme", EP, body, None, 1000.0, "key-1")
    assert not replayed
    again, replayed = store.submit("acme", EP, body, None, 1001.0, "key-1")
    assert replayed and again.id == first.id
    assert _pending(store) == 1
    # Keys are the tenant's own: another tenant's same key is another request.
    other, replayed = store.submit("globex", EP, body, None, 1002.0, "key-1")
    assert not replayed and other.id != first.id
    assert _pending(store) == 2


def test_an_idempotency_key_sent_with_another_body_is_refused(store: SqlJobStore) -> None:
    from shipit.jobs.sql import IdempotencyConflictError

    first, _ = store.submit("acme", EP, b'{"model": "m"}', None, 1000.0, "key-2")
    with pytest.raises(IdempotencyConflictError, match="key-2") as err:
        store.submit("acme", EP, b'{"model": "other"}', None, 1001.0, "key-2")
    assert err.value.item_id == first.id
    assert _pending(store) == 1
