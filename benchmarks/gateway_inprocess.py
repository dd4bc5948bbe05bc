"""Python work per streamed request on the gateway's own request path, with no sockets.

The gateway app is called directly as an ASGI app (``Gateway.__call__``: the edge checks,
parsing, admission, routing, the request core and the HTTP writer, accounting and metrics) in
front of an in-memory upstream that answers 16 content chunks at once, so the figure leaves out
uvicorn, the upstream client and the kernel (``benchmarks/gateway_overhead.py`` measures those
end to end). Prints microseconds per request, the best and the median of ``--repeats`` runs of
``--requests``; with ``--baseline-src DIR`` an older checkout's ``src/`` is measured too,
alternating, in separate processes. The process's startup objects are frozen out of the cyclic
garbage collector as ``shipit up`` does (``gc.freeze``) when the gateway supports it.

    uv run python benchmarks/gateway_inprocess.py [--requests 2000] [--repeats 5]
        [--baseline-src ../old/src] [--policies least_outstanding,round_robin]
        [--json benchmarks/results/gateway_inprocess.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import asyncio, gc, json, sys, time
from shipit.config.gateway import parse_config
from shipit.gateway.app import create_gateway, running
try:
    from shipit.core.fleet import ReplicaState
except ImportError:  # older layouts
    from shipit.core.views import ReplicaState

N, REPEATS, POLICY = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
EVENT = (b'data: {"id":"x","object":"chat.completion.chunk",'
         b'"choices":[{"index":0,"delta":{"content":"t%d"}}]}\n\n')
PAYLOAD = b"".join(EVENT % i for i in range(16)) + b"data: [DONE]\n\n"
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hello there " * 8}],
                   "stream": True, "max_tokens": 16}).encode()
SCOPE = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "query_string": b"",
         "headers": [(b"content-type", b"application/json"), (b"host", b"127.0.0.1")],
         "http_version": "1.1", "scheme": "http", "client": ("127.0.0.1", 5555),
         "server": ("127.0.0.1", 8000), "root_path": ""}

class Resp:
    status = 200
    headers = {"content-type": "text/event-stream"}
    async def chunks(self):
        yield PAYLOAD
    def close(self): pass
    def release(self): pass

OPENED = []  # when each request reached the upstream (perf_counter), for the time to it

class Up:
    async def open(self, url, body, headers, *, first_byte_timeout_s):
        OPENED.append(time.perf_counter())
        return Resp()
    async def get(self, url, *, timeout_s, headers=None): return 200, b"{}"
    async def post_json(self, url, payload, *, timeout_s, headers=None): return 200, b"{}"
    async def close(self): pass

STARTS = []

async def one(gw):
    sent = False
    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.sleep(3600)
    out = []
    async def send(m): out.append(m)
    STARTS.append(time.perf_counter())
    await gw(dict(SCOPE), receive, send)
    await asyncio.sleep(0)  # the loop runs between requests, as under a server
    assert out[0]["status"] == 200, out[:2]

async def main():
    routing = {"routing": {"policy": POLICY}} if POLICY else {}
    cfg = parse_config({"deployments": [{"model": "m", "replicas": 0, **routing}]})
    gw = create_gateway(cfg, upstream_factory=Up, monitor=False)
    for i in range(2):
        gw.routers["default"].add_replica(f"r{i}", f"http://127.0.0.1:{9000 + i}",
                                          state=ReplicaState.READY)
    async with running(gw):
        frozen = "gc.freeze" in open(sys.modules["shipit.gateway.server"].__file__).read()
        if frozen:
            gc.collect(); gc.freeze()
        for _ in range(300):
            await one(gw)
        runs, to_upstream = [], []
        for _ in range(REPEATS):
            STARTS.clear(); OPENED.clear()
            t0 = time.process_time()
            for _ in range(N):
                await one(gw)
            runs.append((time.process_time() - t0) / N * 1e6)
            waits = sorted(o - s for s, o in zip(STARTS, OPENED))
            to_upstream.append(waits[len(waits) // 2] * 1e6)
    print(json.dumps({"us_per_request": runs, "us_to_upstream": to_upstream, "gc_freeze": frozen}))

import shipit.gateway.server  # noqa: E402,F401
import uvloop; uvloop.run(main())
"""


def measure(src: Path | None, requests: int, repeats: int, policy: str = "") -> dict[str, object]:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(requests), str(repeats), policy],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(
            f"the measurement failed ({src or 'this checkout'}):\n{out.stderr[-3000:]}"
        )
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--requests", type=int, default=2000, help="requests per run")
    ap.add_argument("--repeats", type=int, default=5, help="runs per gateway")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds with a baseline")
    ap.add_argument("--baseline-src", type=Path, default=None, help="an older checkout's src/")
    ap.add_argument(
        "--policies",
        default="",
        help="comma-separated routing presets to compare, alternating (e.g. "
        "least_outstanding,round_robin); default: the deployment default only",
    )
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.baseline_src is not None and not (args.baseline_src / "shipit").is_dir():
        raise SystemExit(f"--baseline-src {args.baseline_src} has no shipit/ package; give a src/")
    policies = [p for p in args.policies.split(",") if p] or [""]
    names: dict[str, tuple[Path | None, str]] = {}
    for policy in policies:
        tag = f" ({policy})" if policy else ""
        names[f"this checkout{tag}"] = (None, policy)
        if args.baseline_src is not None:
            names[f"baseline {args.baseline_src}{tag}"] = (args.baseline_src, policy)
    runs: dict[str, list[float]] = {name: [] for name in names}
    before: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.rounds if len(names) > 1 else 1):
        for name, (src, policy) in names.items():
            got = measure(src, args.requests, args.repeats, policy)
            runs[name] += got["us_per_request"]  # type: ignore[operator]
            before[name] += got.get("us_to_upstream", [])  # type: ignore[operator]
    print(
        "| gateway | best µs/request | median µs/request | median µs to the upstream request "
        "| runs |\n|---|---|---|---|---|"
    )
    for name, xs in runs.items():
        ups = f"{statistics.median(before[name]):.1f}" if before[name] else "-"
        print(f"| {name} | {min(xs):.1f} | {statistics.median(xs):.1f} | {ups} | {len(xs)} |")
    if args.json:
        load = os.getloadavg()[0]
        out = {"runs_us": runs, "to_upstream_us": before, "loadavg_1m": load}
        args.json.write_text(json.dumps(out, indent=1))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
