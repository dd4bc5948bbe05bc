"""Client writes coalesced per event-loop iteration (``gateway.coalesce``): what one iteration
writes reaches the socket in one write, in order; nothing waits past the iteration; close and
write_eof flush first, abort drops. (The gateway's integration tests serve every request
through it.)"""

from __future__ import annotations

import asyncio
from typing import Any

from shipit.gateway.coalesce import CoalescingTransport


class _Recorder(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.eof = False

    def write(self, data: Any) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5)}.get(name, default)


def test_one_iteration_is_one_write_in_order() -> None:
    async def go() -> list[bytes]:
        rec = _Recorder()
        t = CoalescingTransport(rec, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.write(b"")  # nothing to send is not a write
        t.write(bytearray(b"a"))
        t.writelines([b"b", memoryview(b"c")])
        assert rec.writes == []  # held until the iteration ends ...
        assert t.get_write_buffer_size() == 7 + 19 + 3  # ... and counted as buffered
        await asyncio.sleep(0)
        t.write(b"next")  # a later iteration: a write of its own
        await asyncio.sleep(0)
        return rec.writes

    assert asyncio.run(go()) == [b"HTTP/1.1 200 OK\r\n\r\nabc", b"next"]


def test_close_and_eof_flush_first_abort_drops() -> None:
    async def go() -> tuple[_Recorder, _Recorder, _Recorder]:
        loop = asyncio.get_running_loop()
        closing, eof, aborting = _Recorder(), _Recorder(), _Recorder()
        a = CoalescingTransport(closing, loop)
        a.write(b"last words")
        a.close()
        b = CoalescingTransport(eof, loop)
        b.write(b"end")
        b.write_eof()
        c = CoalescingTransport(aborting, loop)
        c.write(b"never")
        c.abort()
        await asyncio.sleep(0)  # the scheduled flushes find nothing left
        return closing, eof, aborting

    closing, eof, aborting = asyncio.run(go())
    assert closing.writes == [b"last words"] and closing.closed
    assert eof.writes == [b"end"] and eof.eof
    assert aborting.writes == [] and aborting.aborted


def test_a_write_to_a_closing_transport_is_dropped() -> None:
    async def go() -> _Recorder:
        rec = _Recorder()
        t = CoalescingTransport(rec, asyncio.get_running_loop())
        t.write(b"late")
        rec.closed = True  # the peer went away before the flush
        await asyncio.sleep(0)
        return rec

    assert asyncio.run(go()).writes == []


def test_extra_info_is_the_connections() -> None:
    async def go() -> Any:
        return CoalescingTransport(_Recorder(), asyncio.get_running_loop()).get_extra_info(
            "peername"
        )

    assert asyncio.run(go()) == ("127.0.0.1", 5)


def test_write_through_goes_at_once_unless_the_iteration_already_wrote() -> None:
    async def go() -> tuple[list[bytes], list[bytes]]:
        rec = _Recorder()
        t = CoalescingTransport(rec, asyncio.get_running_loop())
        t.write_through(b"alone")  # nothing buffered: straight to the connection
        at_once = list(rec.writes)
        t.write(b"head")
        t.write_through(b"body")  # behind the head, in the same flush: order kept
        assert rec.writes == [b"alone"]
        await asyncio.sleep(0)
        return at_once, rec.writes

    at_once, writes = asyncio.run(go())
    assert at_once == [b"alone"]
    assert writes == [b"alone", b"headbody"]
