"""Where a request's time to first token goes inside the gateway, at an open-loop rate.

``shipit up`` runs in front of the two instant fakes of ``gateway_overhead.py`` (pinned to CPU
0, the fakes and the load generator on CPU 1) with timestamps taken in the process itself
(``time.perf_counter_ns``) at fixed points of one request's way: the request's bytes read by
the server protocol, its headers parsed, the message complete, the gateway's early start
(``gateway.inference.start``, from the protocol's callback), parsing, the router's placement,
the upstream request opened and written, the replica's first bytes read back, and the first
write to the client. A request that takes the whole way (through ASGI) misses the early start
and is not counted. An open loop at ``--rate`` req/s (default 500, the rate the TTFT goal is
stated at) sends ``--requests``; each segment's median over the requests is printed, with the
whole (arrival to first client write) and the JSON written to ``--out``.

The points are wrappers installed on the gateway's own classes before it starts: a few
hundred nanoseconds each, so the segments read a little high, the small ones most. The
gateway is idle between requests at this rate, so each segment is its cold cost (several
times what a warm microbenchmark of the same code gives): the figure the TTFT pays.

    uv run python benchmarks/gateway_ttft_split.py [--rate 500] [--requests 3000]
        [--out benchmarks/results/gateway_ttft_split.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).parent))
import gateway_overhead as go  # the fakes and the open loop

RESULTS = Path(__file__).parent / "results" / "gateway_ttft_split.json"

# Runs in the gateway's process: marks, then ``shipit up`` as the command line gives it.
BOOT = r"""
import atexit, json, sys, time
from shipit.gateway import inference as I, protocol as P
from shipit.gateway import request_core as RC
from shipit.services import router as R, upstream_h1 as U

pc = time.perf_counter_ns
cur, recs = {}, []

def mark(label):
    if "arrived" in cur and "upstream write" not in cur and label not in cur:
        cur[label] = pc()

def at(cls, name, label):
    inner = getattr(cls, name)
    def wrapped(*a, **k):
        mark(label)
        return inner(*a, **k)
    setattr(cls, name, wrapped)

class Watched:  # a transport that dates the first write after a point
    def __init__(self, t, kind): self._t, self._k = t, kind
    def __getattr__(self, n): return getattr(self._t, n)
    def write(self, d):
        self._seen()
        return self._t.write(d)
    def writelines(self, ds):
        self._seen()
        return self._t.writelines(ds)
    def _seen(self):
        if self._k == "up" and "arrived" in cur and "upstream write" not in cur:
            cur["upstream write"] = pc()
        elif self._k == "client" and "upstream read" in cur:
            cur["client write"] = pc()
            recs.append(dict(cur))
            cur.clear()

made, got = P.GuardedHttpToolsProtocol.connection_made, P.GuardedHttpToolsProtocol.data_received
P.GuardedHttpToolsProtocol.connection_made = lambda self, t: made(self, Watched(t, "client"))
def data_received(self, d):
    if d[:5] == b"POST ":
        cur.clear()
        cur["arrived"] = pc()
    got(self, d)
P.GuardedHttpToolsProtocol.data_received = data_received
up_made, up_got = U._Conn.connection_made, U._Conn.data_received
U._Conn.connection_made = lambda self, t: up_made(self, Watched(t, "up"))
def up_data(self, d):
    if "upstream write" in cur and "upstream read" not in cur:
        cur["upstream read"] = pc()
    up_got(self, d)
U._Conn.data_received = up_data
at(P.GuardedHttpToolsProtocol, "on_headers_complete", "headers parsed")
at(P.GuardedHttpToolsProtocol, "on_message_complete", "message complete")
at(I, "start", "early start")
at(I, "parse_request", "parse")
at(R.RouterService, "on_request", "parsed")
at(R.RouterService, "place_now", "place")
at(RC.RequestCore, "_open", "placed")
at(U.H1Pool, "open", "upstream open")
atexit.register(lambda: json.dump(recs, open(MARKS, "w")))
from shipit.cli.main import main
main()
"""

# The segments, in the order a request crosses them.
POINTS = [
    "arrived",
    "headers parsed",
    "message complete",
    "early start",
    "parse",
    "parsed",
    "place",
    "placed",
    "upstream open",
    "upstream write",
    "upstream read",
    "client write",
]
WHAT = {
    "headers parsed": "server: request line and headers parsed (httptools, header guards)",
    "message complete": "server: the body held for the early start",
    "early start": "protocol: the app's early start called (no ASGI cycle, no task yet)",
    "parse": "edge: headers, JSON parse, limits and checks; a request id",
    "parsed": "parse: the request's view (model, fields, prompt)",
    "place": "router.on_request, rollout offer",
    "placed": "routing: snapshot, decide, slot taken, pace book",
    "upstream open": "the upstream request's headers",
    "upstream write": "upstream client: request head built, pooled connection, write",
    "upstream read": "the replica (fake) answers: not the gateway's time",
    "client write": "ASGI cycle and task; the answer woken, head, relay, first client write",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=500.0)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.rate <= 0 or args.requests < 100:
        raise SystemExit("--rate > 0 and --requests >= 100, please")
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    fakes = [go.start_fake(1) for _ in range(2)]
    urls = [u for _, u in fakes]
    tmp = Path(tempfile.mkdtemp(prefix="gw-split-"))
    queueing = {"max_concurrency": 512, "max_queue": 4096}
    dep = {"model": "m", "replicas": 0, "replica_urls": urls, "queueing": queueing}
    (tmp / "shipit.yaml").write_text(json.dumps({"deployments": [dep]}))
    port = go._free_port()
    argv = ["shipit", "up", "-c", str(tmp / "shipit.yaml"), "--port", str(port)]
    argv += ["--log-level", "warning"]
    marks = tmp / "marks.json"
    code = f"import sys; sys.argv = {argv!r}; MARKS = {str(marks)!r}\n" + BOOT
    cmd = ["taskset", "-c", "0", sys.executable, "-c", code]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                with urllib.request.urlopen(url + "/health", timeout=1) as r:
                    if json.loads(r.read())["ready_replicas"] == 2:
                        break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("the gateway did not become ready")
        uvloop.run(go.open_loop([url], args.rate, 500))  # warm up
        uvloop.run(go.open_loop([url], args.rate, args.requests))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        for p, _ in fakes:
            go.stop(p)
    recs = json.loads(marks.read_text())[-args.requests :]
    full = [r for r in recs if all(p in r for p in POINTS)]
    if len(full) < len(recs) // 2:
        raise SystemExit(f"only {len(full)} of {len(recs)} requests passed every point")
    segments = {}
    print(f"{len(full)} requests at {args.rate:g} req/s; median microseconds per segment\n")
    print("| segment (up to the point) | µs | what runs |\n|---|---|---|")
    for a, b in itertools.pairwise(POINTS):
        us = statistics.median(r[b] - r[a] for r in full) / 1000
        segments[b] = us
        print(f"| {b} | {us:.1f} | {WHAT[b]} |")
    whole = statistics.median(r["client write"] - r["arrived"] for r in full) / 1000
    before = statistics.median(r["upstream write"] - r["arrived"] for r in full) / 1000
    print(
        f"\narrival to upstream write: {before:.1f} µs; arrival to first client write: "
        f"{whole:.1f} µs (the replica's time included)"
    )
    result = {
        "rate_req_s": args.rate,
        "requests": len(full),
        "segments_us_median": segments,
        "arrival_to_upstream_write_us": before,
        "arrival_to_client_write_us": whole,
        "loadavg_1m": os.getloadavg()[0],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
