"""A live fleet against the fleet simulator: the same fleet.yaml and the same trace, both ways.

Live: ``shipit up --fleet`` with two planes (us-east UTC-5, eu-west UTC+1), each one
``--simulate H100:llama-3.1-8b`` replica behind its gateway (``max_concurrency`` slots), the
global front door in front. A Poisson trace (``--rate`` requests/s for ``--seconds``, prompts of
``--input`` words, which the simulated tokenizer makes one token each, ``--output`` tokens, EOS
ignored) is replayed open-loop through the front door; each request's client region (americas
UTC-5 or europe UTC+1, half each, seeded) is sent as ``x-shipit-client-utc-offset``. A request
meets the SLO when its time to the first token at the client, plus the latency model's network
time from its region to the plane that served it (``ms_per_time_zone`` x hours apart, as the
simulator counts it), is within ``--slo-ms``; a failed request misses. Replica-seconds: each
plane's ready replicas (``/shipit/fleet``), sampled every second of the replay.

Simulated: ``shipit sim fleet`` on the same file (its ``traffic:`` section: the same regions and
shares, ``concurrency`` = the gateway's ``max_concurrency``, token rates derived from the same
model and GPU) and the same trace, for the same length: each request at its own time from the
region the live replay sent it from (the trace's ``region`` field), request by request
(``--traffic requests``, what ``auto`` picks for a trace this size). Its replica-seconds are
its cost divided by the price per GPU-hour.

By default both planes are held at one replica (``min_replicas = max_replicas = 1``, no
autoscaling live), so replica-seconds agree by construction and the SLO attainment is the
comparison that can fail. With ``--max-replicas N`` each plane autoscales from 1 to N replicas,
live and simulated alike: the plane gateway's autoscaler with the simulator's settings
(``target_concurrency`` = the slots, ``target_utilization`` 0.7, a 60 s window, a 10 s panic
window, 600 s before a scale-down, a tick every 5 s, a replica ready 5 s after its start, as a
``--simulate`` replica about is), so replica-seconds are a comparison too; ``--step-rate R``
raises the rate to R half-way through, so the autoscalers have a step to follow.
The live replay starts once the front door's ``/health`` is 200 and one request per region
has warmed the planes (the simulated fleet starts warm). Writes
``benchmarks/results/fleet_live_vs_sim_r<rate>_c<concurrency>.json``.

Run: ``uv run python benchmarks/fleet_live_vs_sim.py [--rate 9] [--seconds 180]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from shipit.policy.global_routing import latency_ms

RESULTS = Path(__file__).parent / "results"  # fleet_live_vs_sim_r<rate>_c<concurrency>.json
SHIPIT = str(Path(sys.executable).with_name("shipit"))
MODEL, SPEC = "llama-3.1-8b", "H100:llama-3.1-8b"
PLANES = {"us-east": -5.0, "eu-west": 1.0}
REGIONS = {"americas": -5.0, "europe": 1.0}  # half each
MS_PER_TIME_ZONE = 5.0
USD_PER_GPU_HOUR = 4.0
SCALE_TICK_S, COLD_S, WINDOW_S, PANIC_S, DOWN_S, UTIL = 5.0, 5.0, 60.0, 10.0, 600.0, 0.7
BUCKET_S = 10  # the trace's rate curve: requests per 10 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fleet_yaml(args: argparse.Namespace, door: int) -> dict[str, Any]:
    planes = []
    deployment: dict[str, Any] = {
        "name": "chat",
        "model": MODEL,
        "simulate": SPEC,
        "replicas": 1,
        "queueing": {"max_concurrency": args.concurrency},
        "replica_args": ["--log-level", "warning"],
    }
    if args.max_replicas > 1:  # the settings the simulator gives each plane's autoscaler
        deployment["autoscaling"] = {
            "min_replicas": 1,
            "max_replicas": args.max_replicas,
            "target_concurrency": float(args.concurrency),
            "target_utilization": UTIL,
            "autoscaling_window_s": WINDOW_S,
            "panic_window_s": PANIC_S,
            "scale_down_delay_s": DOWN_S,
            "cold_start_s": COLD_S,
            "tick_interval_s": SCALE_TICK_S,
        }
    for name, offset in PLANES.items():
        planes.append(
            {
                "name": name,
                "utc_offset_h": offset,
                "min_replicas": 1,
                "max_replicas": args.max_replicas,
                "pools": {
                    "on_demand": {"usd_per_gpu_hour": USD_PER_GPU_HOUR, "obtain_delay_s": COLD_S}
                },
                "port": free_port(),
                "gateway": {"deployments": [deployment]},
            }
        )
    return {
        "fleet": {
            "posture": "active-active",
            "ms_per_time_zone": MS_PER_TIME_ZONE,
            "front_door": {"port": door, "utc_offset_h": 0},
            "planes": planes,
            "traffic": {
                "regions": [
                    {"name": n, "utc_offset_h": o, "share": 0.5} for n, o in REGIONS.items()
                ],
                "replica": {"concurrency": args.concurrency, "model": MODEL, "gpu": "h100"},
                "ttft_slo_ms": args.slo_ms,
                "input_len": args.input,
                "output_len": args.output,
                "target_utilization": UTIL,
            },
            "simulation": {"tick_s": 10, "autoscale_interval_s": SCALE_TICK_S},
        }
    }


def trace(args: argparse.Namespace) -> list[tuple[float, str]]:
    rng = random.Random(args.seed)
    out, t = [], 0.0
    while True:
        second_half = args.step_rate is not None and t >= args.seconds / 2
        t += rng.expovariate(args.step_rate if second_half else args.rate)
        if t >= args.seconds:
            return out
        out.append((t, rng.choice(list(REGIONS))))


async def one(
    session: aiohttp.ClientSession, url: str, at_s: float, region: str, args: argparse.Namespace
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    body = {
        "model": MODEL,
        "prompt": " ".join(f"w{i}" for i in range(args.input)),
        "max_tokens": args.output,
        "stream": True,
        "ignore_eos": True,
    }
    headers = {"x-shipit-client-utc-offset": str(REGIONS[region])}
    sent = loop.time()
    ttft_s, plane, ok, tokens = None, None, False, 0
    try:
        async with session.post(url, json=body, headers=headers) as r:
            plane = r.headers.get("x-shipit-plane")
            buf = b""
            async for chunk in r.content.iter_any():
                buf += chunk
                if ttft_s is None and b'"text"' in buf:
                    ttft_s = loop.time() - sent
            events = [e for e in buf.split(b"\n\n") if e.startswith(b"data: ")]
            ok = r.status == 200 and bool(events) and events[-1] == b"data: [DONE]"
            tokens = sum(1 for e in events if b'"text"' in e)
    except (aiohttp.ClientError, TimeoutError):
        ok = False
    net_ms = latency_ms(REGIONS[region], PLANES[plane], MS_PER_TIME_ZONE) if plane else 0.0
    met = ok and ttft_s is not None and ttft_s * 1000 + net_ms <= args.slo_ms
    return {
        "at_s": round(at_s, 3),
        "region": region,
        "plane": plane,
        "ok": ok,
        "ttft_ms": None if ttft_s is None else round(ttft_s * 1000, 2),
        "net_ms": net_ms,
        "met": met,
        "tokens": tokens,
    }


async def replay(base: str, arrivals: list[tuple[float, str]], args: argparse.Namespace) -> Any:
    loop = asyncio.get_running_loop()
    replica_s = dict.fromkeys(PLANES, 0.0)
    changes: list[tuple[float, dict[str, int]]] = []  # (s into the replay, ready per plane)
    done = asyncio.Event()

    async def sample(session: aiohttp.ClientSession) -> None:
        last = loop.time()
        while not done.is_set():
            await asyncio.sleep(1.0)
            now = loop.time()
            async with session.get(base + "/shipit/fleet") as r:
                view = await r.json()
            ready = {p["name"]: p["ready_replicas"] for p in view["planes"]}
            for name, n in ready.items():
                replica_s[name] += n * (now - last)
            if not changes or changes[-1][1] != ready:
                changes.append((round(now - start, 1), ready))
            last = now

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        # Warm-up, not counted: the simulator's fleet starts warm.
        await asyncio.gather(*(one(session, base + "/v1/completions", 0, r, args) for r in REGIONS))
        start = loop.time()

        async def at(t: float, region: str) -> dict[str, Any]:
            await asyncio.sleep(max(start + t - loop.time(), 0.0))
            return await one(session, base + "/v1/completions", t, region, args)

        sampler = asyncio.create_task(sample(session))
        results = await asyncio.gather(*(at(t, r) for t, r in arrivals))
        elapsed = loop.time() - start
        done.set()
        await sampler
    return results, replica_s, elapsed, changes


def start_fleet(config: Path, logs: Path, door: int) -> subprocess.Popen[bytes]:
    log = (logs / "fleet.log").open("wb")
    proc = subprocess.Popen(
        [SHIPIT, "up", "--fleet", str(config), "--log-dir", str(logs / "planes")],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"shipit up --fleet exited:\n{(logs / 'fleet.log').read_text()}")
        try:  # the port listens before the planes are ready: ask /health
            with urllib.request.urlopen(f"http://127.0.0.1:{door}/health", timeout=2) as r:
                if r.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the front door never listened")


def simulate(config: Path, arrivals: list[tuple[float, str]], args: argparse.Namespace) -> Any:
    path = config.with_name("trace.jsonl")
    with path.open("w") as f:
        for t, region in arrivals:
            row = {"timestamp": round(t, 6), "input_length": args.input}  # seconds
            row |= {"output_length": args.output, "region": region}
            f.write(json.dumps(row) + "\n")
    out = subprocess.run(
        [
            *(SHIPIT, "sim", "fleet", "--config", str(config), "--trace", str(path)),
            *("--hours", str(args.seconds / 3600), "--bucket-s", str(BUCKET_S)),
            *("--seed", str(args.seed), "-o", "json"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=float, default=9.0, help="requests/s, all regions")
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--input", type=int, default=256, help="prompt tokens")
    ap.add_argument("--output", type=int, default=64, help="output tokens")
    ap.add_argument("--concurrency", type=int, default=4, help="slots per replica")
    ap.add_argument("--slo-ms", type=float, default=200.0, help="TTFT SLO")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--max-replicas", type=int, default=1, help="per plane; over 1 the planes autoscale"
    )
    ap.add_argument(
        "--step-rate", type=float, default=None, help="requests/s from half-way through"
    )
    ap.add_argument("--out", type=Path, default=None, help="default: results/...r<rate>_c<slots>")
    args = ap.parse_args()
    scaled = f"_m{args.max_replicas}" if args.max_replicas > 1 else ""
    scaled += f"_s{args.step_rate:g}" if args.step_rate is not None else ""
    name = f"fleet_live_vs_sim_r{args.rate:g}_c{args.concurrency}{scaled}.json"
    args.out = args.out or RESULTS / name
    arrivals = trace(args)
    with tempfile.TemporaryDirectory(prefix="fleet-live-vs-sim-") as tmp:
        root = Path(tmp)
        door = free_port()
        config = root / "fleet.yaml"
        config.write_text(yaml.safe_dump(fleet_yaml(args, door), sort_keys=False))
        sim = simulate(config, arrivals, args)
        proc = start_fleet(config, root, door)
        try:
            base = f"http://127.0.0.1:{door}"
            results, replica_s, elapsed, changes = asyncio.run(replay(base, arrivals, args))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
    n = len(results)
    live_att = sum(r["met"] for r in results) / n
    ttfts = sorted(r["ttft_ms"] for r in results if r["ttft_ms"] is not None)
    live_regions = {
        reg: sum(r["met"] for r in results if r["region"] == reg)
        / max(sum(1 for r in results if r["region"] == reg), 1)
        for reg in REGIONS
    }
    sim_replica_s = sum(
        usd / USD_PER_GPU_HOUR * 3600
        for plane in sim["cost_usd_by_plane"].values()
        for usd in plane.values()
    )
    live_replica_s = sum(replica_s.values()) * args.seconds / elapsed  # over the trace's span
    report = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "service_sim": sim["service"],
        "live": {
            "requests": n,
            "failed": sum(not r["ok"] for r in results),
            "slo_attainment": round(live_att, 4),
            "regions": {k: round(v, 4) for k, v in live_regions.items()},
            "ttft_ms_p50": ttfts[len(ttfts) // 2] if ttfts else None,
            "ttft_ms_p90": ttfts[int(len(ttfts) * 0.9)] if ttfts else None,
            "ttft_ms_p99": ttfts[int(len(ttfts) * 0.99)] if ttfts else None,
            "served_by": {p: sum(1 for r in results if r["plane"] == p) for p in PLANES},
            "replica_seconds": round(live_replica_s, 1),
            "replay_s": round(elapsed, 1),
            "ready_replicas_changes": changes,
            "slowest": sorted(results, key=lambda r: -(r["ttft_ms"] or 1e9))[:20],
        },
        "sim": {
            "traffic": sim["traffic"],
            "requests": sim["requests"],
            "slo_attainment": sim["slo_attainment"],
            "regions": {k: v["slo_attainment"] for k, v in sim["regions"].items()},
            "routed_to": sim["routed_to"],
            "replica_seconds": round(sim_replica_s, 1),
        },
    }
    d_att = abs(live_att - sim["slo_attainment"]) * 100
    d_rs = abs(live_replica_s - sim_replica_s) / sim_replica_s * 100
    report["agreement"] = {
        "slo_attainment_points": round(d_att, 2),
        "replica_seconds_pct": round(d_rs, 2),
        "within_2_points_and_10_pct": d_att <= 2 and d_rs <= 10,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
