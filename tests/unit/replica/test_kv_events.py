"""The KV-event buffer: ordered pages, resumable by sequence number, gaps flagged."""

from __future__ import annotations

from shipit.engine.block_manager import KVEvent
from shipit.replica.kv_events import KVEventBuffer


def ev(n: int) -> KVEvent:
    return KVEvent(n, "stored" if n % 2 == 0 else "evicted", 1000 + n, None)


def test_pages_resume_after_the_last_seen_number() -> None:
    buf = KVEventBuffer(100)
    assert buf.events_after(-1, limit=10).events == ()
    buf.extend(ev(i) for i in range(5))
    page = buf.events_after(-1, limit=3)
    assert [e.seq_no for e in page.events] == [0, 1, 2] and page.next_after == 2
    page = buf.events_after(page.next_after, limit=10)
    assert [e.seq_no for e in page.events] == [3, 4] and not page.truncated
    empty = buf.events_after(4, limit=10)
    assert empty.events == () and empty.next_after == 4 and not empty.truncated


def test_a_consumer_behind_the_buffer_is_told_it_missed_events() -> None:
    buf = KVEventBuffer(3)
    buf.extend(ev(i) for i in range(10))
    page = buf.events_after(2, limit=10)
    assert page.truncated and [e.seq_no for e in page.events] == [7, 8, 9]
    assert not buf.events_after(6, limit=10).truncated


def test_a_consumer_ahead_of_the_buffer_sees_a_restart() -> None:
    buf = KVEventBuffer(10)
    buf.extend(ev(i) for i in range(2))
    page = buf.events_after(50, limit=10)
    assert page.truncated and page.next_after == 1


def test_json_shape() -> None:
    buf = KVEventBuffer(10)
    buf.extend([ev(0)])
    data = buf.events_after(-1, limit=5).to_json(block_size=16, instance_id="abc")
    assert data == {
        "instance_id": "abc",
        "hash_scheme": "shipit-kv-v1",
        "block_size": 16,
        "truncated": False,
        "next_after": 0,
        "events": [
            {
                "seq_no": 0,
                "kind": "stored",
                "block_hash": 1000,
                "parent_hash": None,
                "salt_key": None,
            }
        ],
    }
