"""The gateway app under two ASGI servers: uvicorn (httptools + uvloop, what ``shipit up`` runs)
and granian (a Rust HTTP server), on the same core, in front of the same instant fakes.

The same app (``create_gateway`` with two instant fake replicas registered, no health monitor) is
served by each stack pinned to CPU 0, while the fakes and the load generator share CPU 1. A
closed loop of ``--concurrency`` streams runs for ``--seconds`` per round, stacks alternating
for ``--rounds`` rounds. Reported per stack: streamed requests/s, and the server's CPU seconds
per request (user + system of the server process and its children, from /proc), which is the
fairer figure on a shared machine: a multi-threaded server gets more of a busy core's time
slices, so its requests/s rises with the machine's load while its CPU per request does not.

granian is not a project dependency; run with it added for this run only:

    uv run --with granian python benchmarks/serving_stacks.py [--rounds 3] [--out PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from importlib.metadata import version
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).parent))
import gateway_overhead as go  # the fakes and the closed loop

RESULTS = Path(__file__).parent / "results" / "serving_stacks.json"
APP = """
import os
from shipit.config.gateway import parse_config
from shipit.core.fleet import ReplicaState
from shipit.gateway.app import create_gateway

cfg = parse_config({"deployments": [{"model": "m", "replicas": 0,
    "queueing": {"max_concurrency": 512, "max_queue": 4096}}]})
app = create_gateway(cfg, monitor=False)
for i, url in enumerate(os.environ["SHIPIT_BENCH_FAKES"].split(",")):
    app.routers["default"].add_replica(f"r{i}", url, state=ReplicaState.READY)

from shipit.gateway.protocol import protocol_class
Shipit = protocol_class(header_timeout_s=10, max_header_bytes=65536)
ShipitNoCoalesce = protocol_class(
    header_timeout_s=10, max_header_bytes=65536, coalesce_writes=False
)
"""
STACKS = ("uvicorn", "shipit", "shipit-no-coalesce", "own-h1", "granian")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its children so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return own + sum(cpu_s(int(k)) for k in kids.split())


def stacks(port: int) -> dict[str, list[str]]:
    py = sys.executable
    uv = [
        *(py, "-m", "uvicorn", "gwapp:app", "--port", str(port), "--loop", "uvloop"),
        *("--log-level", "warning", "--no-access-log", "--backlog", "2048"),
    ]
    return {
        # uvicorn's own httptools protocol
        "uvicorn": [*uv, "--http", "httptools"],
        # what `shipit up` serves with: uvicorn with the gateway's protocol (header guards,
        # writes coalesced per loop iteration), and the same without coalescing
        "shipit": [*uv, "--http", "gwapp:Shipit"],
        "shipit-no-coalesce": [*uv, "--http", "gwapp:ShipitNoCoalesce"],
        # a minimal protocol of our own on httptools (benchmarks/own_h1.py): what uvicorn's
        # share of the CPU is; not a production server
        "own-h1": [py, str(Path(__file__).parent / "own_h1.py"), "gwapp:app", str(port)],
        "granian": [
            *(py, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1"),
            *("--port", str(port), "--loop", "uvloop", "--http", "1", "--workers", "1"),
            *("--log-level", "warning", "--no-ws", "gwapp:app"),
        ],
    }


def stack_version(name: str) -> str:
    if name == "granian":
        return version("granian")
    if name == "own-h1":
        return "httptools " + version("httptools")
    return version("uvicorn")


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}) before it was ready")
        try:
            with urllib.request.urlopen(url + "/health", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} never answered /health")


def one_round(
    name: str, argv: list[str], port: int, args: argparse.Namespace, env: dict[str, str], cwd: str
) -> dict[str, float]:
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *argv],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        uvloop.run(go.closed_loop([url], args.concurrency, 2.0))  # warm up
        before = cpu_s(proc.pid)
        rps = uvloop.run(go.closed_loop([url], args.concurrency, args.seconds))
        used = cpu_s(proc.pid) - before
    finally:
        go.stop(proc)
    done = rps * args.seconds
    return {
        "streamed_req_s": rps,
        "cpu_us_per_request": used / done * 1e6,
        "loadavg_1m": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--stacks",
        default=",".join(STACKS),
        help="comma-separated, from: " + ", ".join(STACKS) + " (granian only when installed)",
    )
    args = ap.parse_args()
    chosen = [n.strip() for n in args.stacks.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in STACKS]
    if unknown:
        raise SystemExit(f"--stacks: unknown {unknown}; choose from {', '.join(STACKS)}")
    if "granian" in chosen and importlib.util.find_spec("granian") is None:
        print("granian is not installed: skipped (uv run --with granian ...)", file=sys.stderr)
        chosen.remove("granian")
    fakes = [go.start_fake(1) for _ in range(2)]
    runs: dict[str, list[dict[str, float]]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, "gwapp.py").write_text(APP)
            env = {
                **os.environ,
                "SHIPIT_BENCH_FAKES": ",".join(u for _, u in fakes),
                "PYTHONPATH": tmp,
            }
            for r in range(args.rounds):
                for name in chosen:  # alternating, each on a fresh port
                    port = go._free_port()
                    got = one_round(name, stacks(port)[name], port, args, env, tmp)
                    runs.setdefault(name, []).append(got)
                    print(f"round {r + 1} {name}: {got}", file=sys.stderr, flush=True)
    finally:
        for proc, _ in fakes:
            go.stop(proc)
    summary: dict[str, Any] = {}
    print("| server | streamed req/s (median) | CPU µs per request (median) |\n|---|---|---|")
    for name, rows in runs.items():
        rps = statistics.median(r["streamed_req_s"] for r in rows)
        cpu = statistics.median(r["cpu_us_per_request"] for r in rows)
        ver = stack_version(name)
        summary[name] = {
            "version": ver,
            "streamed_req_s": rps,
            "cpu_us_per_request": cpu,
            "runs": rows,
        }
        print(f"| {name} {ver} | {rps:,.0f} | {cpu:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "stacks": summary}, indent=2
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
