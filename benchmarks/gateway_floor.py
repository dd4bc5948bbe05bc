"""The floor under the gateway's CPU per request: its server and upstream client with no gateway.

A trivial ASGI proxy (read the body, open the request on the pooled HTTP/1.1 client round robin
over the two instant fakes, relay the answer's chunks through ``send``) served by uvicorn with
the gateway's own HTTP/1.1 protocol (``gateway.protocol``: header guards, coalesced writes) on
uvloop, pinned to CPU 0 like ``gateway_overhead.py``'s gateway, in front of the same fakes and
driven by the same closed loop. What it costs per streamed request is what any gateway built on
these parts pays before doing anything of its own; the gateway's figure minus this one is its
own work (edge checks, parsing, admission and routing, accounting, metrics). Alternates with
``shipit up`` over the same fakes for ``--rounds`` rounds. With ``FLOOR_DIRECT=1`` in its
environment (``gateway_ttft_ab.py``'s ``floor-direct``) the proxy writes the answer's head, body
and end as the gateway does, past ASGI ``send`` (``gateway.direct``), the body relayed in the
upstream's read callback.

    uv run python benchmarks/gateway_floor.py [--rounds 3] [--seconds 6] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
import gateway_overhead as go  # the fakes, the gateway and the closed loop

RESULTS = Path(__file__).parent / "results" / "gateway_floor.json"
APP = r"""
import itertools, os, sys
import uvicorn
from shipit.gateway.protocol import protocol_class
from shipit.gateway.direct import DIRECT_BODY
from shipit.services.upstream_h1 import H1Pool

DIRECT = os.environ.get("FLOOR_DIRECT") == "1"

urls = itertools.cycle(os.environ["FLOOR_FAKES"].split(","))
pool = H1Pool()
HEADERS = {"content-type": "application/json"}

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    direct = scope.get("extensions", {}).get(DIRECT_BODY) if DIRECT else None
    body = direct.take_body() if direct is not None else None
    if body is None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
    if scope["path"] == "/health":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    resp = await pool.open(next(urls) + scope["path"], body, HEADERS, first_byte_timeout_s=30)
    head = [(b"content-type", resp.headers.get("content-type", "").encode())]
    if direct is not None and direct.serves(send) and direct.start(resp.status, tuple(head)):
        # FLOOR_DIRECT=1: the head, the body (relayed in the read callback) and the end
        # written as the gateway writes them, past ASGI ``send``
        await resp.relay(direct.write, direct.drain)
        resp.release()
        direct.finish()
        return
    await send({"type": "http.response.start", "status": resp.status, "headers": head})
    async for chunk in resp.chunks():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    resp.release()
    await send({"type": "http.response.body", "body": b"", "more_body": False})

# The gateway serves without uvicorn's proxy-headers middleware; the plain floor keeps
# uvicorn's default, as when its published figures were taken.
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", lifespan="on",
            http=protocol_class(header_timeout_s=10, max_header_bytes=65536),
            log_level="warning", access_log=False, proxy_headers=not DIRECT)
"""


def start_floor(
    urls: list[str], script: str = APP, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """``script`` (this floor's proxy by default) in front of ``urls``, pinned to CPU 0, once
    it answers ``/health``; ``env`` adds to its environment."""
    port = go._free_port()
    env = {**os.environ, "FLOOR_FAKES": ",".join(urls), **(env or {})}
    cmd = ["taskset", "-c", "0", sys.executable, "-c", script, str(port)]
    proc = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return proc, url
        except OSError:
            time.sleep(0.05)
    go.stop(proc)
    raise RuntimeError("the floor proxy did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    fakes = [go.start_fake(1) for _ in range(2)]
    urls = [u for _, u in fakes]
    runs: dict[str, list[tuple[float, float]]] = {"floor": [], "shipit": []}
    try:
        for i in range(args.rounds):
            for name in ("floor", "shipit") if i % 2 == 0 else ("shipit", "floor"):
                proc: subprocess.Popen[bytes]
                if name == "floor":
                    proc, url = start_floor(urls)
                else:
                    proc, url, _ = go.start_gateway(urls, 0)
                try:
                    go.closed_loop_cpu([url], proc.pid, args.concurrency, 2)  # warm up
                    rps, cpu_us = go.closed_loop_cpu(
                        [url], proc.pid, args.concurrency, args.seconds
                    )
                finally:
                    go.stop(proc)
                runs[name].append((rps, cpu_us))
                print(f"round {i + 1} {name:7s} {rps:8.0f} req/s {cpu_us:7.1f} us CPU a request")
    finally:
        for p, _ in fakes:
            go.stop(p)
    result: dict[str, Any] = {"rounds": args.rounds, "seconds": args.seconds, "runs": runs}
    for name, values in runs.items():
        result[name] = {
            "streamed_req_s": statistics.median(v[0] for v in values),
            "cpu_us_per_request": statistics.median(v[1] for v in values),
        }
    own = result["shipit"]["cpu_us_per_request"] - result["floor"]["cpu_us_per_request"]
    result["gateway_own_cpu_us_per_request"] = own
    result["loadavg_1m"] = os.getloadavg()[0]
    print(
        f"floor {result['floor']['cpu_us_per_request']:.0f} us, shipit "
        f"{result['shipit']['cpu_us_per_request']:.0f} us: the gateway's own work {own:.0f} us "
        "a request (medians)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
