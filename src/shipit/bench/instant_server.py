"""An instant OpenAI-compatible streaming server for the self-check (``python -m`` it).

Owns the smallest HTTP/1.1 keep-alive server that answers any POST with a chunked SSE stream of
``tokens`` content chunks (``itl_s`` apart, 0 = all at once), a usage chunk and ``[DONE]``,
and any other request (a health probe) with ``{}`` at once.
Plain asyncio streams, no framework: its cost per request must stay well below the client's, so
the self-check measures the generator. It must not be used to serve anything real.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket

_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
    b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
)


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _events(tokens: int) -> tuple[bytes, bytes, bytes]:
    token = _chunk(b'data: {"choices":[{"index":0,"delta":{"content":" hi"}}]}\n\n')
    usage = (
        b'data: {"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":%d,'
        b'"total_tokens":%d}}\n\n' % (tokens, tokens + 1)
    )
    tail = _chunk(usage) + _chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    return _HEAD, token, tail


_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


async def _read_request(reader: asyncio.StreamReader) -> bool:
    """Read one request; whether it is a POST (anything else, a health probe, gets ``{}``)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return head.startswith(b"POST")


def make_handler(tokens: int, itl_s: float) -> object:
    head, token, tail = _events(tokens)
    whole = head + token * tokens + tail

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                if not await _read_request(reader):
                    writer.write(_OK)  # a paced stream would outlast a health probe's timeout
                elif itl_s <= 0:
                    writer.write(whole)
                else:
                    writer.write(head)
                    for _ in range(tokens):
                        writer.write(token)
                        await writer.drain()
                        await asyncio.sleep(itl_s)
                    writer.write(tail)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    return handle


async def serve(*, tokens: int, itl_s: float, port: int = 0) -> None:
    handler = make_handler(tokens, itl_s)
    server = await asyncio.start_server(handler, "127.0.0.1", port, backlog=4096)  # type: ignore[arg-type]
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--itl-s", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--cpu", type=int, default=None, help="pin to this CPU (Linux)")
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(tokens=args.tokens, itl_s=args.itl_s, port=args.port))


if __name__ == "__main__":
    main()
