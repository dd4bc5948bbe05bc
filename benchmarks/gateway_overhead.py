"""Gateway overhead: added TTFT (through the gateway minus direct) and streamed req/s on one core.

Two instant fake replicas (``shipit.bench.instant_server``: 16 content chunks at once) and the
load generator share CPU 1; the gateway (``shipit up --replica-url ...``) is pinned to CPU 0.
Open loop at ``--rate`` req/s gives TTFT P50/P99 direct and through the gateway; a closed loop
of ``--concurrency`` streams gives the highest streamed req/s. Prints a table and writes
``benchmarks/results/gateway_overhead.json``. Goals: added TTFT P50 <= 1 ms and
P99 <= 5 ms at 500 req/s; >= 2,000 streamed req/s on one gateway core. On a 2-core machine the
Python load generator shares a core with the fakes, so the req/s figure is a floor.

Peers ("the same run drives litellm's proxy and vllm-router"): with
``--vllm-router-bin PATH`` and/or ``--litellm-bin PATH`` (each installed in a throwaway venv
outside the repo; neither is a project dependency) the same fakes are put behind each peer,
pinned to CPU 0 like the gateway, and the same open and closed loops run through it. Added TTFT
is always taken against the direct figure at the same rate; LiteLLM's proxy manages ~12-17
streamed req/s on one core, so it is driven at ``--litellm-rate`` (and shipit's gateway is
measured again at that rate for its ratio). Peers not given are skipped with a note.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

BODY = json.dumps(
    {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "max_tokens": 16,
    }
).encode()
RESULTS = Path(__file__).parent / "results" / "gateway_overhead.json"
LITELLM_KEY = "sk-shipit-bench-0123456789abcdef0123456789abcdef"  # 127.0.0.1 only


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


def start_fake(cpu: int, tokens: int = 16, itl_s: float = 0.0) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "shipit.bench.instant_server", "--tokens", str(tokens)]
    cmd += ["--itl-s", str(itl_s), "--cpu", str(cpu)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, f"http://127.0.0.1:{int(proc.stdout.readline())}"


def start_gateway(
    urls: list[str],
    cpu: int,
    src: Path | None = None,
    extra_args: tuple[str, ...] = (),
    cap_per_replica: int = 512,
    gateway: dict[str, Any] | None = None,
    policy: str | None = None,
    venv: Path | None = None,
) -> tuple[subprocess.Popen[bytes], str, Path]:
    """``shipit up`` in front of ``urls``; with ``src``, the shipit package under that source
    tree (an older checkout's ``src/``) runs instead of this one, for before/after figures;
    with ``venv``, that environment's ``shipit`` (another interpreter, say); ``extra_args`` go
    to ``shipit up`` as they are."""
    tmp = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    cap = "max_concurrency"
    env = None
    if src is not None:
        env = {**os.environ, "PYTHONPATH": str(src)}
        if cap not in (src / "shipit" / "config" / "gateway.py").read_text():
            cap = "concurrency_target"  # its name before it was split in two
    cfg: dict[str, Any] = {
        **({"gateway": gateway} if gateway else {}),
        "deployments": [
            {
                "model": "m",
                "replicas": 0,
                "replica_urls": urls,
                "queueing": {cap: cap_per_replica, "max_queue": 4096},
                **({"routing": {"policy": policy}} if policy else {}),
            }
        ],
    }
    (tmp / "shipit.yaml").write_text(json.dumps(cfg))
    sock_port = _free_port()
    shipit = str(venv / "bin" / "shipit" if venv else Path(sys.executable).with_name("shipit"))
    cmd = ["taskset", "-c", str(cpu), shipit, "up", "-c", str(tmp / "shipit.yaml")]
    cmd += ["--port", str(sock_port), "--log-level", "warning", *extra_args]
    log = tmp / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{sock_port}"
    for _ in range(200):
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if json.loads(r.read())["ready_replicas"] == len(urls):
                    return proc, url, log
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the gateway did not become ready:\n" + log.read_text())


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


HEADERS = {"content-type": "application/json"}
LITELLM_AUTH = {**HEADERS, "authorization": f"Bearer {LITELLM_KEY}"}


async def _stream(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str] = HEADERS
) -> float | None:
    """TTFT in seconds of one streamed chat completion, or None if it failed."""
    t0 = time.perf_counter()
    ttft = None
    async with session.post(url + "/v1/chat/completions", data=BODY, headers=headers) as resp:
        if resp.status != 200:
            return None
        async for _chunk in resp.content.iter_any():
            if ttft is None:
                ttft = time.perf_counter() - t0
    return ttft


async def open_loop(
    urls: list[str], rate: float, n: int, headers: dict[str, str] = HEADERS
) -> list[float]:
    """``n`` requests at ``rate``/s spread over ``urls`` (one per fake, or the gateway)."""
    ttfts: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        start = time.perf_counter()
        tasks = []
        for i in range(n):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_stream(session, urls[i % len(urls)], headers)))
        for t in await asyncio.gather(*tasks):
            if t is not None:
                ttfts.append(t)
    return ttfts


async def closed_loop(
    urls: list[str], concurrency: int, seconds: float, headers: dict[str, str] = HEADERS
) -> float:
    done, elapsed_s = await closed_loop_counted(urls, concurrency, seconds, headers)
    return done / elapsed_s


def closed_loop_cpu(
    urls: list[str], pid: int, concurrency: int, seconds: float, headers: dict[str, str] = HEADERS
) -> tuple[float, float]:
    """Streamed req/s of a closed loop, and the CPU (user + system) the process ``pid`` spent
    per completed request, in microseconds. CPU time leaves out what the machine's neighbours
    took from the core (steal), which moves req/s by a fifth between runs here."""
    from gateway_long_streams import cpu_s

    before = cpu_s(pid)
    done, elapsed_s = uvloop.run(closed_loop_counted(urls, concurrency, seconds, headers))
    used_s = cpu_s(pid) - before
    return done / elapsed_s, used_s / max(done, 1) * 1e6


async def closed_loop_counted(
    urls: list[str], concurrency: int, seconds: float, headers: dict[str, str] = HEADERS
) -> tuple[int, float]:
    done = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        stop = time.perf_counter() + seconds

        async def worker(k: int) -> None:
            nonlocal done
            while time.perf_counter() < stop:
                if await _stream(session, urls[k % len(urls)], headers) is not None:
                    done += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        return done, time.perf_counter() - t0


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"{url} did not become ready:\n{log.read_text()[-4000:]}")


def stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM this one process (by its pid), then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _venv_version(binary: str, dist: str) -> str:
    """The installed version of ``dist`` in the venv that holds ``binary``."""
    python = Path(binary).with_name("python")
    code = f"import importlib.metadata as m; print(m.version({dist!r}))"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    return out.stdout.strip() or "unknown"


def start_vllm_router(
    binary: str, urls: list[str], cpu: int
) -> tuple[subprocess.Popen[bytes], str, list[str]]:
    port = _free_port()
    cmd = ["taskset", "-c", str(cpu), binary, "--worker-urls", *urls, "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--policy", "round_robin", "--log-level", "warning"]
    log = Path(tempfile.mkdtemp(prefix="vllm-router-bench-")) / "router.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url + "/health", proc, log, 60)
    return proc, url, cmd


def start_litellm(
    binary: str, urls: list[str], cpu: int
) -> tuple[subprocess.Popen[bytes], str, list[str]]:
    """LiteLLM's proxy, one worker, both fakes as deployments of model ``m`` (simple-shuffle).
    Its cost map is read from the package (no network) and telemetry is off."""
    tmp = Path(tempfile.mkdtemp(prefix="litellm-bench-"))
    deployment = {"model": "openai/m", "api_key": "unused"}
    cfg = {
        "model_list": [
            {"model_name": "m", "litellm_params": {**deployment, "api_base": u + "/v1"}}
            for u in urls
        ],
        "litellm_settings": {"telemetry": False},
        "general_settings": {"master_key": LITELLM_KEY},
    }
    (tmp / "litellm.yaml").write_text(json.dumps(cfg))
    port = _free_port()
    cmd = ["taskset", "-c", str(cpu), binary, "--config", str(tmp / "litellm.yaml")]
    cmd += ["--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"}
    log = tmp / "litellm.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url + "/health/liveliness", proc, log, 180)
    return proc, url, cmd


def _ttft(direct: list[float], via: list[float]) -> dict[str, float]:
    ms = 1000.0
    return {
        "direct_ttft_p50_ms": _pct(direct, 50) * ms,
        "direct_ttft_p99_ms": _pct(direct, 99) * ms,
        "ttft_p50_ms": _pct(via, 50) * ms,
        "ttft_p99_ms": _pct(via, 99) * ms,
        "added_ttft_p50_ms": (_pct(via, 50) - _pct(direct, 50)) * ms,
        "added_ttft_p99_ms": (_pct(via, 99) - _pct(direct, 99)) * ms,
        "completed": len(via),
    }


def measure_peer(
    name: str,
    start: Any,
    binary: str,
    fake_urls: list[str],
    *,
    rate: float,
    requests: int,
    concurrency: int,
    seconds: float,
    headers: dict[str, str],
) -> dict[str, Any]:
    """One peer in front of the fakes: open loop at ``rate`` (and direct at the same rate),
    then a closed loop of ``concurrency`` streams."""
    proc, url, cmd = start(binary, fake_urls, 0)
    load = os.getloadavg()[0]
    try:
        uvloop.run(open_loop([url], rate, max(20, requests // 10), headers))  # warm up
        direct = uvloop.run(open_loop(fake_urls, rate, requests))
        via = uvloop.run(open_loop([url], rate, requests, headers))
        rps, cpu_us = closed_loop_cpu([url], proc.pid, concurrency, seconds, headers)
    finally:
        stop(proc)
    return {
        "peer": name,
        "command": " ".join(cmd[3:]),
        "rate_req_s": rate,
        "requests": requests,
        **_ttft(direct, via),
        "closed_loop_concurrency": concurrency,
        "streamed_req_s_one_core": rps,
        "cpu_us_per_request": cpu_us,
        "loadavg_1m": load,
    }


def measure_shipit(
    args: argparse.Namespace, fake_urls: list[str], src: Path | None = None
) -> dict[str, Any]:
    """The gateway's figures at ``--rate`` and ``--concurrency`` (and at ``--litellm-rate``
    when LiteLLM is compared, so its ratio compares like with like)."""
    gw, gw_url, _log = start_gateway(fake_urls, 0, src, policy=args.shipit_policy)
    load = os.getloadavg()[0]
    try:
        run = uvloop.run
        run(open_loop(fake_urls, args.rate, 300))  # warm up both paths
        run(open_loop([gw_url], args.rate, 300))
        direct = run(open_loop(fake_urls, args.rate, args.requests))
        via = run(open_loop([gw_url], args.rate, args.requests))
        direct_rps = run(closed_loop(fake_urls, args.concurrency, args.seconds))
        via_rps, via_cpu_us = closed_loop_cpu([gw_url], gw.pid, args.concurrency, args.seconds)
        slow: dict[str, float] = {}
        if args.litellm_bin:
            n = args.litellm_requests
            slow = _ttft(
                run(open_loop(fake_urls, args.litellm_rate, n)),
                run(open_loop([gw_url], args.litellm_rate, n)),
            )
    finally:
        stop(gw)
    t = _ttft(direct, via)
    result: dict[str, Any] = {
        "rate_req_s": args.rate,
        "requests": args.requests,
        "direct_ttft_p50_ms": t["direct_ttft_p50_ms"],
        "direct_ttft_p99_ms": t["direct_ttft_p99_ms"],
        "gateway_ttft_p50_ms": t["ttft_p50_ms"],
        "gateway_ttft_p99_ms": t["ttft_p99_ms"],
        "added_ttft_p50_ms": t["added_ttft_p50_ms"],
        "added_ttft_p99_ms": t["added_ttft_p99_ms"],
        "completed_direct": len(direct),
        "completed_gateway": len(via),
        "closed_loop_concurrency": args.concurrency,
        "direct_streamed_req_s": direct_rps,
        "gateway_streamed_req_s_one_core": via_rps,
        "gateway_cpu_us_per_request": via_cpu_us,
        "loadavg_1m": load,
    }
    if slow:
        result["gateway_at_litellm_rate"] = {"rate_req_s": args.litellm_rate, **slow}
    return result


def compare_peers(
    args: argparse.Namespace, fake_urls: list[str]
) -> tuple[dict[str, Any], list[str]]:
    """Each peer given on the command line, through the same loops as the gateway."""
    peers: dict[str, Any] = {}
    notes: list[str] = []
    plan = [
        ("vllm-router", "vllm-router", args.vllm_router_bin, start_vllm_router, HEADERS, False),
        ("litellm", "litellm", args.litellm_bin, start_litellm, LITELLM_AUTH, True),
    ]
    for name, dist, binary, start, headers, slow in plan:
        if not binary:
            notes.append(f"{name}: skipped (pass --{name}-bin PATH to compare)")
            continue
        rate = args.litellm_rate if slow else args.rate
        r = measure_peer(
            name,
            start,
            binary,
            fake_urls,
            rate=rate,
            requests=args.litellm_requests if slow else args.requests,
            concurrency=args.concurrency,
            seconds=args.litellm_seconds if slow else args.seconds,
            headers=headers,
        )
        r["version"] = _venv_version(binary, dist)
        peers[name] = r
    return peers, notes


def add_ratios(result: dict[str, Any]) -> None:
    """Peer ÷ shipit, from the (median) figures: LiteLLM's TTFT against shipit's at the same
    (LiteLLM) rate, everything else against shipit's main figures."""
    for name, r in result["peers"].items():
        base = result["gateway_at_litellm_rate"] if name == "litellm" else result
        r["ratio_added_ttft_p50"] = r["added_ttft_p50_ms"] / base["added_ttft_p50_ms"]
        r["ratio_added_ttft_p99"] = r["added_ttft_p99_ms"] / base["added_ttft_p99_ms"]
        r["ratio_streamed_req_s"] = (
            r["streamed_req_s_one_core"] / result["gateway_streamed_req_s_one_core"]
        )
        if "cpu_us_per_request" in r and "gateway_cpu_us_per_request" in result:
            r["ratio_cpu_per_request"] = (
                r["cpu_us_per_request"] / result["gateway_cpu_us_per_request"]
            )


def median_tree(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per key, the median of the runs' numbers (recursing into dicts); other values from the
    first run. Added TTFT is the median of each run's own difference."""
    out: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r[key] for r in runs if key in r]
        if isinstance(first, dict):
            out[key] = median_tree(values)
        elif isinstance(first, int | float) and not isinstance(first, bool):
            out[key] = statistics.median(values)
        else:
            out[key] = first
    return out


def print_peers(shipit: dict[str, Any], peers: dict[str, Any], notes: list[str]) -> None:
    print(
        f"\n{'router':22s} {'rate':>6s} {'added P50':>10s} {'added P99':>10s} {'req/s':>8s}"
        f" {'x P50':>8s} {'x P99':>8s} {'x req/s':>8s}"
    )
    rows: list[tuple[str, float, float, float, float, float, float, float]] = [
        (
            "shipit",
            shipit["rate_req_s"],
            shipit["added_ttft_p50_ms"],
            shipit["added_ttft_p99_ms"],
            shipit["gateway_streamed_req_s_one_core"],
            1,
            1,
            1,
        )
    ]
    slow = shipit.get("gateway_at_litellm_rate")
    if slow:
        rows.append(
            (
                "shipit (LiteLLM rate)",
                slow["rate_req_s"],
                slow["added_ttft_p50_ms"],
                slow["added_ttft_p99_ms"],
                float("nan"),
                1,
                1,
                float("nan"),
            )
        )
    for name, r in peers.items():
        rows.append(
            (
                f"{name} {r['version']}",
                r["rate_req_s"],
                r["added_ttft_p50_ms"],
                r["added_ttft_p99_ms"],
                r["streamed_req_s_one_core"],
                r["ratio_added_ttft_p50"],
                r["ratio_added_ttft_p99"],
                r["ratio_streamed_req_s"],
            )
        )
    for row in rows:
        print(
            f"{row[0]:22s} {row[1]:6.0f} {row[2]:8.2f}ms {row[3]:8.2f}ms {row[4]:8.0f}"
            f" {row[5]:8.2f} {row[6]:8.2f} {row[7]:8.2f}"
        )
    cpu = [f"shipit {shipit['gateway_cpu_us_per_request']:.0f} us"] + [
        f"{name} {r['cpu_us_per_request']:.0f} us (x {r['ratio_cpu_per_request']:.2f})"
        for name, r in peers.items()
        if "ratio_cpu_per_request" in r
    ]
    print("server CPU per streamed request, closed loop: " + "; ".join(cpu))
    for note in notes:
        print(note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--vllm-router-bin", help="vllm-router executable (PyPI vllm-router)")
    parser.add_argument("--litellm-bin", help="litellm executable (PyPI 'litellm[proxy]')")
    parser.add_argument("--litellm-rate", type=float, default=10.0)
    parser.add_argument("--litellm-requests", type=int, default=300)
    parser.add_argument("--litellm-seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=1, help="report medians of N runs")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="an older checkout's src/ directory: its gateway is measured in the same run, "
        "alternating with this one, and the ratios printed (before/after a change)",
    )
    parser.add_argument(
        "--shipit-policy",
        default=None,
        help="shipit's routing preset (default: the deployment default, least_outstanding); "
        "round_robin compares like with like against vllm-router --policy round_robin",
    )
    parser.add_argument("--out", type=Path, default=None, help="results JSON path")
    long = parser.add_argument_group(
        "long streams (--long-streams: this case and the routing cost, instead of the above)"
    )
    long.add_argument("--long-streams", action="store_true")
    long.add_argument("--streams", type=int, default=2000, help="concurrent long streams")
    long.add_argument("--stream-tokens", type=int, default=512)
    long.add_argument("--token-interval-ms", type=float, default=20.0)
    long.add_argument(
        "--stall-factor", type=float, default=5.0, help="stall: gap > this x interval"
    )
    long.add_argument("--ramp-s", type=float, default=2.0, help="start the streams over this long")
    idle = parser.add_argument_group("idle keep-alive connections (--idle-connections N)")
    idle.add_argument("--idle-connections", type=int, default=0, help="hold N idle connections")
    idle.add_argument("--idle-hold-s", type=float, default=30.0)
    args = parser.parse_args()
    if args.idle_connections:
        main_idle(args)
        return
    if args.long_streams:
        main_long_streams(args)
        return
    args.out = args.out or RESULTS
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    fakes = [start_fake(1) for _ in range(2)]
    fake_urls = [u for _, u in fakes]
    runs: list[dict[str, Any]] = []
    notes: list[str] = []
    try:
        for i in range(args.repeats):
            if args.baseline_src is not None:
                # Alternate which goes first, so neither always runs on a warmer machine.
                if i % 2:
                    shipit = measure_shipit(args, fake_urls)
                before = measure_shipit(args, fake_urls, args.baseline_src)
                before["streamed_req_s_one_core"] = before["gateway_streamed_req_s_one_core"]
                before["cpu_us_per_request"] = before["gateway_cpu_us_per_request"]
                before["version"] = str(args.baseline_src)
                peers = {"baseline": before}
                if not i % 2:
                    shipit = measure_shipit(args, fake_urls)
            else:
                shipit = measure_shipit(args, fake_urls)
                peers, notes = compare_peers(args, fake_urls)
            runs.append({**shipit, "peers": peers})
    finally:
        for p, _ in fakes:
            stop(p)
    result = median_tree(runs)
    add_ratios(result)
    peers = result["peers"]
    result.update(
        shipit_policy=args.shipit_policy or "least_outstanding (default)",
        cpus=os.cpu_count(),
        repeats=args.repeats,
        note="gateway and each peer pinned to CPU 0; fakes and the Python load generator "
        "share CPU 1; figures are medians of the runs",
        peer_notes=notes,
    )
    if args.repeats > 1:
        result["runs"] = runs
    for k, v in result.items():
        if not isinstance(v, dict | list):
            print(f"{k:36s} {v:.2f}" if isinstance(v, float) else f"{k:36s} {v}")
    print_peers(result, peers, notes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def main_idle(args: argparse.Namespace) -> None:
    """``--idle-connections N``: the gateway holding N idle keep-alive connections."""
    from gateway_long_streams import raise_nofile, run_idle

    raise_nofile(args.idle_connections + 1024)  # before the gateway starts: it inherits it
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    fakes = [start_fake(1) for _ in range(2)]
    # keep-alive longer than the hold, or the gateway rightly closes idle connections
    edge = {"limits": {"keep_alive_s": args.idle_hold_s + 60}}
    gw, gw_url, _log = start_gateway([u for _, u in fakes], 0, gateway=edge)
    try:
        result = run_idle(gw_url, gw.pid, n=args.idle_connections, hold_s=args.idle_hold_s)
    finally:
        stop(gw)
        for p, _ in fakes:
            stop(p)
    result["note"] = "gateway pinned to CPU 0; the client holds the connections from CPU 1"
    out = args.out or RESULTS.with_name("gateway_idle_connections.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def main_long_streams(args: argparse.Namespace) -> None:
    """The long-stream case through the fakes, shipit and each peer given; the routing cost."""
    from gateway_long_streams import raise_nofile, routing_cost, run_long_streams

    raise_nofile(4 * args.streams + 1024)
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})
    interval = args.token_interval_ms / 1000
    fakes = [start_fake(1, args.stream_tokens, interval) for _ in range(2)]
    fake_urls = [u for _, u in fakes]
    cap = args.streams  # never queue in the gateway: every stream is in flight at once
    procs: list[subprocess.Popen[Any]] = []
    try:
        gw, gw_url, _log = start_gateway(fake_urls, 0, cap_per_replica=cap)
        procs.append(gw)
        systems: list[tuple[str, str, int | None, dict[str, str]]] = [
            ("direct", fake_urls[0], None, HEADERS),
            ("shipit", gw_url, gw.pid, HEADERS),
        ]
        if args.baseline_src is not None:  # the same case through an older checkout's gateway
            bgw, bgw_url, _log = start_gateway(fake_urls, 0, args.baseline_src, cap_per_replica=cap)
            procs.append(bgw)
            systems.append(("shipit-baseline", bgw_url, bgw.pid, HEADERS))
        if args.vllm_router_bin:
            vr, vr_url, _cmd = start_vllm_router(args.vllm_router_bin, fake_urls, 0)
            procs.append(vr)
            systems.append(("vllm-router", vr_url, vr.pid, HEADERS))
        result = run_long_streams(
            systems,
            streams=args.streams,
            tokens=args.stream_tokens,
            interval_s=interval,
            factor=args.stall_factor,
            ramp_s=args.ramp_s,
        )
    finally:
        for p in procs:
            stop(p)
        for p, _ in fakes:
            stop(p)
    if args.vllm_router_bin:
        result["systems"]["vllm-router"]["version"] = _venv_version(
            args.vllm_router_bin, "vllm-router"
        )
    result["routing_cost"] = routing_cost()
    result.update(
        cpus=os.cpu_count(),
        note="gateway and each peer pinned to CPU 0; the two fakes and the Python load "
        "generator share CPU 1; 'direct' streams from one fake (the load generator's own "
        "ceiling); CPU and RSS are the gateway's (or peer's) process",
    )
    out = args.out or RESULTS.with_name("gateway_long_streams.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
