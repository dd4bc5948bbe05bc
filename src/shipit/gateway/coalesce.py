"""Write coalescing for the gateway's client connections: one ``send`` per loop iteration.

uvicorn writes a response's head when the app starts the response and each body message as it
comes, one ``send`` system call each. A streamed answer whose head and first chunks are ready
in the same event-loop iteration (the replica's headers and first token in one read, or a
replica that answers at once) so costs two or three calls where one would do, and on loopback
and on real NICs each call costs about as much as the gateway's own Python for the request.

``CoalescingTransport`` wraps the connection's transport: ``write`` appends to a buffer and,
for the first write of an iteration, schedules one flush with ``loop.call_soon``; the flush
hands everything buffered to the real transport in one write. Nothing is held back longer
than the current iteration: a chunk that arrives alone goes out at the end of the iteration
it came in, so a token's latency grows by at most the callbacks already queued in that
iteration. ``close`` and ``write_eof`` flush first; ``abort`` drops the buffer (as the real
transport drops its own). ``write_through`` writes at once when nothing is waiting for the
flush (the gateway's direct body writes use it). Everything else is the real transport's.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["CoalescingTransport"]


class CoalescingTransport(asyncio.Transport):
    __slots__ = ("_buf", "_loop", "_scheduled", "_t")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._t = transport
        self._loop = loop
        self._buf: list[bytes] = []
        self._scheduled = False

    # ----- writing ----------------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._buf.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def write_through(self, data: bytes) -> None:
        """``data`` to the connection now, unless this iteration already wrote something
        (then after it, in the same flush): for a chunk that arrives alone, as a long
        stream's tokens do, one system call and no callback to schedule."""
        if self._buf:
            self._buf.append(data)
        elif data:
            self._t.write(data)

    def write_now(self, data: bytes) -> None:
        """``data``, after whatever this iteration already wrote, to the connection now in one
        call (the flush scheduled for the end of the iteration then finds nothing left): for
        the end of a response, which need not wait for the rest of the iteration."""
        if self._buf:
            self._buf.append(data)
            self._flush()
        elif data:
            self._t.write(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def _flush(self) -> None:
        self._scheduled = False
        buf = self._buf
        if not buf:
            return
        self._buf = []
        if self._t.is_closing():
            return  # the real transport would drop it as well
        self._t.write(buf[0] if len(buf) == 1 else b"".join(buf))

    def get_write_buffer_size(self) -> int:
        return self._t.get_write_buffer_size() + sum(len(b) for b in self._buf)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._t.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._t.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._t.can_write_eof()

    def write_eof(self) -> None:
        self._flush()
        self._t.write_eof()

    # ----- closing ----------------------------------------------------------------------
    def close(self) -> None:
        self._flush()
        self._t.close()

    def abort(self) -> None:
        self._buf = []
        self._t.abort()

    def is_closing(self) -> bool:
        return self._t.is_closing()

    # ----- everything else is the connection's ------------------------------------------
    def pause_reading(self) -> None:
        self._t.pause_reading()

    def resume_reading(self) -> None:
        self._t.resume_reading()

    def is_reading(self) -> bool:
        return self._t.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._t.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._t.get_protocol()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._t.get_extra_info(name, default)
