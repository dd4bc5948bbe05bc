"""Replica cold start from a warm cache, in phases: the embedded default model and a simulated
accelerator.

Each start spawns ``shipit replica`` (as ``shipit up`` does: ``python -m shipit replica``),
polls ``GET /health`` every 20 ms until 200 (ready), then at once sends a one-token
completion (first token) and reads the replica's own ``GET /shipit/startup`` report. Phases:

- ``spawn``: Popen -> the process exists (from ``/proc``);
- ``process_start``: process created -> shipit's command running (interpreter, CLI parsing);
- ``imports``: -> the server listening and the app loading (the server stack's imports);
  a build without that mark reports both as ``process_start``;
- ``load_weights``: weights in (mapped from the prepared cache, or read and re-laid-out);
- ``warmup``: engine built (KV cache, engine thread answering);
- ``health``: the replica ready -> this poller saw 200 (at most one poll interval);
- ``ready_s``: Popen -> /health 200; ``first_token_s``: /health 200 -> the one-token answer;
  ``to_first_token_s``: Popen -> that answer;
- ``--blas-threads N`` sets ``OPENBLAS_NUM_THREADS`` for the replicas: on a machine whose cores
  are busy, OpenBLAS's worker threads wait for a core and the first forward pass (and every
  one after) can take many times longer than with one thread;
- ``cpu_s_to_ready``: CPU seconds the replica process used until ready (user + system, from
  ``/proc``): the figure that moves least when the machine is busy.

One unmeasured start of each kind first fills the caches (the default model's safetensors
conversion and the prepared weights). With ``--baseline-src OLD/src`` an older checkout's
replica (run with ``PYTHONPATH=OLD/src``, same environment) is measured in the same run,
alternating with this one start by start, and the results carry both. Reports P50 and max.

Run: ``uv run python benchmarks/cold_start.py [--starts 5] [--baseline-src /tmp/old/src]``.
Goal: a warm start of the default model ready in <= 2 s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results" / "cold_start.json"
KINDS = {"default": [], "simulated": ["--simulate", "H100:llama-3.1-8b"]}
MODELS = {"default": "smollm2-135m-instruct", "simulated": "llama-3.1-8b"}
POLL_S = 0.02
TIMEOUT_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def request(port: int, method: str, path: str, body: Any = None, token: str = "") -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"content-type": "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None, headers)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data) if data.startswith(b"{") else None)
    finally:
        conn.close()


def proc_times(pid: int) -> tuple[float, float]:
    """(process created, Unix s; CPU seconds used) from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    created = time.time() - (uptime - int(fields[19]) / tick)
    return created, (int(fields[11]) + int(fields[12])) / tick


def one_start(kind: str, src: Path | None, blas_threads: int | None = None) -> dict[str, Any]:
    port, token = free_port(), secrets.token_urlsafe(24)
    env = {**os.environ, "SHIPIT_REPLICA_ADMIN_TOKEN": token}
    if blas_threads is not None:
        env["OPENBLAS_NUM_THREADS"] = str(blas_threads)
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, "-m", "shipit", "replica", "--port", str(port), *KINDS[kind]]
    cmd += ["--log-level", "warning"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        created, _ = proc_times(proc.pid)
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{kind} replica exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if request(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            if time.time() - t0 > TIMEOUT_S:
                raise RuntimeError(f"{kind} replica not ready after {TIMEOUT_S}s")
            time.sleep(POLL_S)
        t_ready = time.time()
        _, cpu_s = proc_times(proc.pid)
        body = {"model": MODELS[kind], "prompt": "The capital of France is", "max_tokens": 1}
        status, _ = request(port, "POST", "/v1/completions", body)
        t_first = time.time()
        if status != 200:
            raise RuntimeError(f"{kind}: first completion answered {status}")
        _, report = request(port, "GET", "/shipit/startup", token=token)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    phases = {"spawn": max(created - t0, 0.0), **report["phases_s"]}
    phases["health"] = max(t_ready - report["ready_unix_s"], 0.0)
    return {
        "phases_s": phases,
        "weights_source": report.get("weights_source"),
        "ready_s": t_ready - t0,
        "first_token_s": t_first - t_ready,
        "to_first_token_s": t_first - t0,
        "cpu_s_to_ready": cpu_s,
    }


def summarize(starts: list[dict[str, Any]]) -> dict[str, Any]:
    def stat(values: list[float]) -> dict[str, float]:
        return {"p50": round(statistics.median(values), 3), "max": round(max(values), 3)}

    names = list(dict.fromkeys(k for s in starts for k in s["phases_s"]))
    out: dict[str, Any] = {
        "starts": len(starts),
        "weights_source": starts[-1]["weights_source"],
        "phases_s": {n: stat([s["phases_s"].get(n, 0.0) for s in starts]) for n in names},
    }
    for key in ("ready_s", "first_token_s", "to_first_token_s", "cpu_s_to_ready"):
        out[key] = stat([s[key] for s in starts])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=5, help="measured starts per kind")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=list(KINDS))
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="an older checkout's src/ directory, measured in the same run (before/after)",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        help="OPENBLAS_NUM_THREADS for the replicas (default: OpenBLAS's own choice)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    versions: dict[str, Path | None] = {"this": None}
    if args.baseline_src is not None:
        versions = {"baseline": args.baseline_src.resolve(), **versions}
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {v: {} for v in versions}
    for kind in args.kinds:
        for src in versions.values():
            one_start(kind, src, args.blas_threads)  # fills the caches; not measured
        for i in range(args.starts):
            order = list(versions.items())
            for name, src in order if i % 2 == 0 else reversed(order):
                start = one_start(kind, src, args.blas_threads)
                runs[name].setdefault(kind, []).append(start)
                print(
                    f"{name:8} {kind:9} ready {start['ready_s']:.2f}s  first token "
                    f"+{start['first_token_s']:.2f}s  cpu {start['cpu_s_to_ready']:.2f}s  "
                    + "  ".join(f"{k} {v:.2f}" for k, v in start["phases_s"].items()),
                    flush=True,
                )
    load = os.getloadavg()
    result = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_1_5_15": [round(x, 2) for x in load],
        },
        "poll_interval_s": POLL_S,
        "blas_threads": args.blas_threads,
        "results": {
            name: {k: summarize(v) for k, v in kinds.items()} for name, kinds in runs.items()
        },
        "versions": {k: str(v) if v else "this checkout" for k, v in versions.items()},
    }
    print(json.dumps(result["results"], indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
