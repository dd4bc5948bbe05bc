"""Routing on a real trace with shared prefixes, at and past the fleet capacity, live and sim.

``python benchmarks/routing.py --trace mooncake_conversation.jsonl`` runs this. The first
``--requests`` records of the trace (their ``hash_ids``: prefix blocks of 512 tokens) become
prompts: block id ``h`` is 512 fixed-width words derived from ``h`` (one word is one token on the
simulated replicas, five characters with its space), the rest of a prompt is unique to it;
outputs are capped at ``--max-tokens`` (streaming on 2 shared cores bounds it). Arrivals keep
the trace's pattern, rescaled to ``--loads`` x the fleet's capacity.

- Fleet capacity: the simulator (the same replicas' timing) replays the subset all arriving at
  once under ``prefix_cache``; capacity = 90 % of the requests / the time to finish them (the
  last ones run alone, at one replica's rate, not the fleet's).
- Ideal hit rate: one LRU cache the size of the whole fleet's KV (replicas x KV blocks), fed the
  prompts in arrival order, 16-token blocks, the last prompt token always computed.
- Live: for each load and policy a fresh ``shipit up --replicas N --simulate GPU:MODEL`` (cold
  caches); hit rate and computed tokens (queries - hits) from each replica's own counters; TTFT
  client side; requests per replica from the ``x-shipit-replica`` header.
- Simulated: ``shipit sim replay --policy fixed:N --routing POLICY`` on the same records and
  time scale, ``-o json``; with ``--sim-repeats K``, K replays at arrival rates 0.5 % apart, the
  median one reported with the range (a few follow-up turns routed differently move a short
  window's hit rate by several points).
- Live requests stream with ``include_usage``, so the gateway checks its prefix index against
  each replica's cached tokens (``shipit_prefix_cache_predictions_total``, kept per run), and
  ask for their own output length (capped), as the simulator runs them.

Goals (``prefix_cache``): hit rate >= 90 % of the ideal at every load, max/mean computed tokens
<= 1.3, TTFT P99 at the highest load below ``least_outstanding``'s; the simulator within 5 points
of the live hit rate (% of ideal). Writes ``--out`` (default ``results/routing_saturated.json``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import OrderedDict
from pathlib import Path
from typing import Any

from routing import Req, _get_json, _pct, drive, replica_urls, scrape, stop
from shipit.config.gateway import PrefixCacheConfig
from shipit.engine.block_manager import hash_prompt_blocks
from shipit.sim.prompts import prompt_token_ids
from shipit.sim.results import SimRequest
from shipit.sim.traces import parse_trace

RESULTS = Path(__file__).parent / "results" / "routing_saturated.json"
BLOCK = 16
_LETTERS = "abcdefghijklmnopqrstuvwxyz"


# ----- workload -------------------------------------------------------------------------------
def _word(key: bytes) -> str:
    n = int.from_bytes(hashlib.blake2b(key, digest_size=4).digest(), "big")
    return "".join(_LETTERS[(n >> (5 * k)) % 26] for k in range(4))


def prompt_text(spec: SimRequest, unique: int) -> str:
    """Fixed-width words: equal block ids give equal text, so the gateway's character
    hashing (5 characters a token) lines up with the replicas' 16-token blocks."""
    words: list[str] = []
    for h in spec.prefix_blocks:
        if len(words) >= spec.prompt_tokens:
            break
        take = min(spec.prefix_block_tokens, spec.prompt_tokens - len(words))
        words.extend(_word(f"{h}:{j}".encode()) for j in range(take))
    while len(words) < spec.prompt_tokens:
        words.append(_word(f"u{unique}:{len(words)}".encode()))
    return " ".join(words)


def load_subset(
    path: Path, n: int, max_tokens: int, max_prompt: int, *, offset: int = 0
) -> list[SimRequest]:
    """``n`` records that fit ``max_prompt``, after skipping the first ``offset`` such records
    (a later window of the trace; its arrivals then start where the window does)."""
    lines = []
    skipped = 0
    with path.open() as f:
        for line in f:
            row = json.loads(line)
            if row["input_length"] + max_tokens > max_prompt:
                continue
            if skipped < offset:
                skipped += 1
                continue
            lines.append(line)
            if len(lines) == n:
                break
    reqs = parse_trace("".join(lines), fmt="jsonl")
    return [
        SimRequest(
            q.arrival_s,
            q.prompt_tokens,
            min(q.output_tokens, max_tokens),
            prefix_blocks=q.prefix_blocks,
            prefix_block_tokens=q.prefix_block_tokens,
        )
        for q in reqs
    ]


def fleet_lru_ideal(reqs: list[SimRequest], capacity_blocks: int) -> float:
    lru: OrderedDict[int, None] = OrderedDict()
    hits = queries = 0
    for i, q in enumerate(reqs):
        tokens = prompt_token_ids(q, i)
        hashes = hash_prompt_blocks(tokens, BLOCK)
        n = 0
        for h in hashes[: (len(tokens) - 1) // BLOCK]:
            if h not in lru:
                break
            n += 1
        hits += n * BLOCK
        queries += len(tokens)
        for h in hashes:
            lru[h] = None
            lru.move_to_end(h)
        while len(lru) > capacity_blocks:
            lru.popitem(last=False)
    return hits / queries


def write_trace(reqs: list[SimRequest], path: Path, time_scale: float) -> None:
    """The subset as JSON lines, arrivals already rescaled (ms), for ``shipit sim replay``."""
    with path.open("w") as f:
        for q in reqs:
            row = {
                "timestamp": round(q.arrival_s / time_scale * 1000, 3),
                "input_length": q.prompt_tokens,
                "output_length": q.output_tokens,
                "hash_ids": list(q.prefix_blocks),
            }
            f.write(json.dumps(row) + "\n")


# ----- simulator ------------------------------------------------------------------------------
def sim_replay(
    args: argparse.Namespace, reqs: list[SimRequest], scale: float, policy: str, tmp: Path
) -> dict[str, Any]:
    trace = tmp / f"subset-{scale:.6f}.jsonl"
    if not trace.exists():
        write_trace(reqs, trace, scale)
    gpu, model = args.simulate.split(":")[:2]
    shipit = str(Path(sys.executable).with_name("shipit"))
    cmd = [shipit, "sim", "replay", "--trace", str(trace), "--time-unit", "ms"]
    cmd += ["--policy", f"fixed:{args.replicas}", "--routing", policy, "--gpu", gpu]
    cmd += ["--model", model, "--max-concurrency", str(args.max_concurrency)]
    cmd += ["--prefill-us-per-token", str(args.prefill_us_per_token)]
    cmd += ["--max-affinity-wait-s", str(args.max_affinity_wait_s), "--cold-start-s", "0"]
    cmd += ["-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    data: dict[str, Any] = json.loads(out.stdout)
    data["command"] = " ".join(["shipit", *cmd[1:]])
    return data


def capacity_rps(args: argparse.Namespace, reqs: list[SimRequest]) -> float:
    """Requests a second the simulated fleet finishes when the subset arrives at once, routed
    by ``prefix_cache`` (the replay ``shipit sim replay`` runs, with nothing dropped)."""
    from shipit.config.gateway import DeploymentConfig, QueueingConfig, RoutingConfig
    from shipit.engine.engine import EngineConfig
    from shipit.engine.sim_timing import ReplicaModel
    from shipit.sim.fleet import FleetSim
    from shipit.sim.policies import FixedFleet

    gpu, model = args.simulate.split(":")[:2]
    replica = ReplicaModel(gpu=gpu, model=model, tp=1, cold_start_s=0.0, engine=EngineConfig())
    routing = RoutingConfig(
        policy="prefix_cache",
        prefix_cache=PrefixCacheConfig(prefill_us_per_token=args.prefill_us_per_token),
    )
    queueing = QueueingConfig(
        max_concurrency=args.max_concurrency, max_queue=100_000, queue_timeout_s=1e6
    )
    deployment = DeploymentConfig(name="cap", replicas=0, routing=routing, queueing=queueing)

    burst = [
        SimRequest(0.0, q.prompt_tokens, q.output_tokens, prefix_blocks=q.prefix_blocks)
        for q in reqs
    ]
    sim = FleetSim(FixedFleet(args.replicas), replica, deployment, initial_replicas=args.replicas)
    result = sim.run(burst, 1e6)
    done = [r.e2e_s for r in result.requests if r.status == 200 and r.e2e_s is not None]
    if len(done) != len(burst):
        raise RuntimeError(f"capacity run served {len(done)} of {len(burst)}")
    # The last few requests of a burst run alone (one long prompt on one replica): the rate
    # over the first 90 % is the fleet's, the tail's is one replica's.
    done.sort()
    first = int(0.9 * len(done))
    return first / done[first - 1]


# ----- live -----------------------------------------------------------------------------------
def start_live(args: argparse.Namespace, policy: str) -> tuple[subprocess.Popen[bytes], str]:
    from routing import _free_port

    port = _free_port()
    tmp = Path(tempfile.mkdtemp(prefix="routing-trace-"))
    routing = {
        "policy": policy,
        "prefix_cache": {
            "chars_per_token": 5.0,
            "prefill_us_per_token": args.prefill_us_per_token,
            "max_affinity_wait_s": args.max_affinity_wait_s,
        },
    }
    queueing = {
        "max_concurrency": args.max_concurrency,
        "queue_timeout_s": 120,
        "cold_start_hold_s": 120,
    }
    (tmp / "shipit.yaml").write_text(
        json.dumps({"deployments": [{"routing": routing, "queueing": queueing}]})
    )
    shipit = str(Path(sys.executable).with_name("shipit"))
    cmd = [shipit, "up", "--replicas", str(args.replicas), "--simulate", args.simulate]
    cmd += ["--routing", policy, "--port", str(port), "--log-level", "warning"]
    cmd += ["-c", str(tmp / "shipit.yaml")]
    log = (tmp / "up.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if _get_json(url + "/health")["ready_replicas"] == args.replicas:
                return proc, url
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.3)
    stop(proc)
    raise RuntimeError(f"shipit up did not become ready: {(tmp / 'up.log').read_text()}")


def gateway_predictions(gw: str) -> dict[str, float]:
    """The gateway's prefix-cache prediction counters (index vs the replicas' cached tokens)."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(gw + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith("shipit_prefix_cache_"):
            continue
        for s in fam.samples:
            if s.name.endswith("_total") and s.value:
                labels = ",".join(
                    f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "deployment"
                )
                out[f"{s.name}{{{labels}}}"] = s.value
    return out


def live_run(
    args: argparse.Namespace, reqs: list[SimRequest], scale: float, policy: str
) -> dict[str, Any]:
    work = [
        # Each request's own output length (capped at --max-tokens), as the simulator runs it.
        Req(
            q.arrival_s / scale,
            0,
            [{"role": "user", "content": prompt_text(q, i)}],
            max_tokens=q.output_tokens,
        )
        for i, q in enumerate(reqs)
    ]
    proc, gw = start_live(args, policy)
    try:
        urls = replica_urls(gw)
        before = {rid: scrape(u) for rid, u in urls.items()}
        model = args.simulate.split(":")[1]
        t0 = time.perf_counter()
        results = asyncio.run(drive(gw, model, work, args.max_tokens))
        wall_s = time.perf_counter() - t0
        after = {rid: scrape(u) for rid, u in urls.items()}
        decisions = _get_json(gw + "/shipit/status")["deployments"][0]["decisions"]
        predictions = gateway_predictions(gw)
    finally:
        stop(proc)
    ttfts = [r[0] for r in results if isinstance(r, tuple) and r[0] is not None]
    routed = dict.fromkeys(urls, 0)
    for r in results:
        if isinstance(r, tuple) and r[1] in routed:
            routed[r[1]] += 1
    delta = {rid: {k: after[rid][k] - before[rid][k] for k in after[rid]} for rid in urls}
    hits = sum(d["hits"] for d in delta.values())
    queries = sum(d["queries"] for d in delta.values())
    computed = {rid: d["queries"] - d["hits"] for rid, d in delta.items()}
    counts = list(routed.values())
    return {
        "prefix_hit_rate": hits / queries if queries else None,
        "ttft_p50_s": _pct(ttfts, 50),
        "ttft_p99_s": _pct(ttfts, 99),
        "max_over_mean_requests": max(counts) / statistics.fmean(counts) if sum(counts) else None,
        "max_over_mean_computed_tokens": (
            max(computed.values()) / statistics.fmean(computed.values()) if queries else None
        ),
        "requests_per_replica": routed,
        "computed_tokens_per_replica": computed,
        "completed": len(ttfts),
        "failed": len(reqs) - len(ttfts),
        "decisions": decisions,
        "prefix_predictions": predictions,
        "wall_s": round(wall_s, 1),
        "loadavg_1m": os.getloadavg()[0],
    }


def sim_replays(
    args: argparse.Namespace, reqs: list[SimRequest], scale: float, policy: str, tmp: Path
) -> dict[str, Any]:
    """``--sim-repeats`` replays, the arrival rate moved by 0.5 % steps around ``scale``: one
    follow-up turn routed differently moves a 300-request hit rate by several points, so a
    single replay says little. The figures are the median replay's (by hit rate); every
    replay's hit rate is kept."""
    n = args.sim_repeats
    runs = [
        sim_replay(args, reqs, scale * (1 + 0.005 * (k - (n - 1) / 2)), policy, tmp)
        for k in range(n)
    ]
    runs.sort(key=lambda r: r.get("prefix_hit_rate") or 0.0)
    median = dict(runs[n // 2])
    median["repeat_hit_rates"] = [r.get("prefix_hit_rate") for r in runs]
    return median


def _fig(run: dict[str, Any], ideal: float) -> dict[str, Any]:
    rate = run.get("prefix_hit_rate")
    spread = [r for r in run.get("repeat_hit_rates", ()) if r is not None]
    return {
        "hit_rate_pct_of_ideal": round(100 * rate / ideal, 1) if rate is not None else None,
        **(
            {
                "hit_rate_pct_of_ideal_range": [
                    round(100 * min(spread) / ideal, 1),
                    round(100 * max(spread) / ideal, 1),
                ]
            }
            if len(spread) > 1
            else {}
        ),
        "hit_rate": rate,
        "ttft_p50_s": run.get("ttft_p50_s"),
        "ttft_p99_s": run.get("ttft_p99_s"),
        "max_over_mean_requests": run.get("max_over_mean_requests"),
        "max_over_mean_computed_tokens": run.get("max_over_mean_computed_tokens"),
    }


def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="routing-trace-sim-"))
    reqs = load_subset(
        args.trace, args.requests, args.max_tokens, args.max_prompt_tokens, offset=args.offset
    )
    span_s = reqs[-1].arrival_s
    trace_rps = len(reqs) / span_s
    from routing import kv_blocks

    blocks = kv_blocks(args.simulate)
    ideal = fleet_lru_ideal(reqs, blocks * args.replicas)
    cap = capacity_rps(args, reqs)
    print(
        f"{len(reqs)} requests over {span_s:.0f} s ({trace_rps:.2f} req/s); fleet capacity "
        f"{cap:.2f} req/s; fleet-sized LRU ideal hit rate {ideal:.2%}",
        flush=True,
    )
    loads = [float(x) for x in args.loads.split(",")]
    policies = [p for p in args.policies.split(",") if p]
    table: dict[str, Any] = {}
    for load in loads:
        scale = cap * load / trace_rps  # replay this many times faster than the trace
        for policy in policies:
            sim = sim_replays(args, reqs, scale, policy, tmp)
            live = live_run(args, reqs, scale, policy) if not args.sim_only else {}
            row = {
                "live": live,
                "sim": sim,
                "live_figures": _fig(live, ideal),
                "sim_figures": _fig(sim, ideal),
            }
            table[f"{load:g}x/{policy}"] = row
            lf, sf = row["live_figures"], row["sim_figures"]
            print(
                f"{load:g}x {policy:18s} live {json.dumps(lf)}\n{'':23s}sim  {json.dumps(sf)}",
                flush=True,
            )
    result = {
        "workload": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "requests": len(reqs),
        "trace_span_s": span_s,
        "trace_rps": trace_rps,
        "kv_blocks_per_replica": blocks,
        "fleet_capacity_rps": cap,
        "fleet_lru_ideal_hit_rate": ideal,
        "runs": table,
        "cpus": os.cpu_count(),
        "goal": "prefix_cache: >= 90% of the fleet-sized LRU ideal at every load, max/mean "
        "computed tokens <= 1.3, TTFT P99 at the highest load below least_outstanding's; the "
        "simulator within 5 points of the live run",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trace",
        type=Path,
        default=None,
        help="a JSON-lines trace with hash_ids: run this benchmark on it",
    )
    parser.add_argument(
        "--offset",
        type=int,
        default=0,
        help="skip the trace's first N records (that fit): a later window of it",
    )
    parser.add_argument("--loads", default="1,1.5", help="arrival rates, x fleet capacity")
    parser.add_argument("--max-concurrency", type=int, default=8, help="per replica (gateway)")
    parser.add_argument("--max-prompt-tokens", type=int, default=120_000)
    parser.add_argument(
        "--prefill-us-per-token",
        type=float,
        default=30.0,
        help="the replicas' prefill time a token (h100, llama-3.1-8b)",
    )
    parser.add_argument(
        "--max-affinity-wait-s",
        type=float,
        default=PrefixCacheConfig.model_fields["max_affinity_wait_s"].default,
    )
    parser.add_argument("--sim-only", action="store_true", help="skip the live runs")
    parser.add_argument(
        "--sim-repeats",
        type=int,
        default=1,
        help="simulator replays per row, arrival rates 0.5 %% apart (the median is reported, "
        "with the range: a few follow-up turns make a short window's hit rate jumpy)",
    )
