"""Simulator-only sweep of ``prefix_cache`` variants on a trace window (in-process replays).

``python benchmarks/routing_sweep.py --trace T --offset 0 --requests 1000 --loads 1,1.5
--repeats 5 --variant base={} --variant ratio3='{"token_imbalance_ratio": 3}'`` replays, for
each load and variant, ``--repeats`` arrival rates 0.5 % apart (as ``routing.py --trace
--sim-repeats``), and prints the hit rate as % of the fleet-sized LRU ideal (median and range),
TTFT P50/P99, max/mean computed tokens and the routing decisions by reason code. The
fleet's capacity is measured on the window as ``routing.py`` does. Deterministic: no live runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter, OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any

import routing_trace
from routing import kv_blocks
from shipit.config.gateway import (
    DeploymentConfig,
    PrefixCacheConfig,
    QueueingConfig,
    RoutingConfig,
)
from shipit.engine.block_manager import hash_prompt_blocks
from shipit.engine.engine import EngineConfig
from shipit.engine.sim_timing import ReplicaModel
from shipit.policy.routing import RouteDecision, RouteSnapshot
from shipit.sim.fleet import FleetSim
from shipit.sim.policies import FixedFleet
from shipit.sim.prompts import prompt_token_ids
from shipit.sim.results import SimRequest, percentile


class Reasons:
    """A decision log that counts routing decisions by reason code and, for each request
    placed, the blocks the index said the best replica held against those where it went."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()  # reason -> blocks held elsewhere, not used
        self.best: dict[int, int] = {}  # request index -> best index hit when placed

    def record(
        self, policy: str, deployment: str, snapshot: object, state: object, decision: object
    ) -> None:
        if not isinstance(decision, RouteDecision) or not isinstance(snapshot, RouteSnapshot):
            return
        self.counts[decision.reason_code] += 1
        if decision.reason_code == "holder_busy":  # which test sent it away
            why = "bound" if "bound" in decision.reason else "slack"
            self.counts[f"holder_busy ({why})"] += 1
        if decision.replica_id is None:
            return
        best = max((n for _, n in snapshot.prefix_hits), default=0)
        self.lost[decision.reason_code] += best - decision.prefix_hit_blocks
        self.best[int(snapshot.request.request_id[1:])] = best


def replay(
    args: argparse.Namespace,
    reqs: list[SimRequest],
    scale: float,
    policy: str,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    gpu, model = args.simulate.split(":")[:2]
    replica = ReplicaModel(
        gpu=gpu,
        model=model,
        tp=1,
        cold_start_s=0.0,
        engine=EngineConfig(enable_prefix_caching=True),
    )
    prefix = PrefixCacheConfig(
        **{
            "prefill_us_per_token": args.prefill_us_per_token,
            "max_affinity_wait_s": args.max_affinity_wait_s,
            **overrides,
        }
    )
    deployment = DeploymentConfig(
        name="replay",
        replicas=0,
        routing=RoutingConfig(policy=policy, prefix_cache=prefix),
        queueing=QueueingConfig(
            max_concurrency=args.max_concurrency, cold_start_hold_s=120, queue_timeout_s=120
        ),
    )
    # As write_trace + parse_trace: arrivals rescaled, in ms rounded to 3 decimals.
    t0 = reqs[0].arrival_s
    trace = [replace(q, arrival_s=round((q.arrival_s - t0) / scale * 1000, 3) / 1000) for q in reqs]
    log = Reasons()
    sim = FleetSim(
        FixedFleet(args.replicas), replica, deployment, initial_replicas=args.replicas, log=log
    )
    result = sim.run(trace, trace[-1].arrival_s + 120.0)
    blocks = {rid: rep.engine.blocks for rid, rep in sorted(sim.replicas.items())}
    queries = sum(b.prefix_cache_queries for b in blocks.values())
    hits = sum(b.prefix_cache_hits for b in blocks.values())
    computed = [b.prefix_cache_queries - b.prefix_cache_hits for b in blocks.values()]
    ttfts = [r.ttft_s for r in result.requests if r.status == 200 and r.ttft_s is not None]
    ideal = args.ideal_blocks
    partition = sum(max(b - log.best.get(i, 0), 0) for i, b in enumerate(ideal))
    return {
        "lost_blocks": {"partition": partition, **dict(log.lost)},
        "ideal_blocks": sum(ideal),
        "hit_rate": hits / queries if queries else 0.0,
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p99_s": percentile(ttfts, 99),
        "max_over_mean_computed": max(computed) / statistics.fmean(computed),
        "failed": len(trace) - len(ttfts),
        "reasons": dict(log.counts),
    }


def ideal_hits(reqs: list[SimRequest], capacity_blocks: int) -> list[int]:
    """Per request, the blocks the fleet-sized LRU (``fleet_lru_ideal``) serves from cache."""
    lru: OrderedDict[int, None] = OrderedDict()
    out = []
    for i, q in enumerate(reqs):
        tokens = prompt_token_ids(q, i)
        hashes = hash_prompt_blocks(tokens, routing_trace.BLOCK)
        n = 0
        for h in hashes[: (len(tokens) - 1) // routing_trace.BLOCK]:
            if h not in lru:
                break
            n += 1
        out.append(n)
        for h in hashes:
            lru[h] = None
            lru.move_to_end(h)
        while len(lru) > capacity_blocks:
            lru.popitem(last=False)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--trace", type=Path, required=True)
    p.add_argument("--offset", type=int, default=0, help="skip this many eligible records")
    p.add_argument("--requests", type=int, default=1000)
    p.add_argument("--loads", default="1,1.5")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--step", type=float, default=0.005, help="arrival-rate step between repeats")
    p.add_argument("--policy", default="prefix_cache")
    p.add_argument("--variant", action="append", default=[], help="NAME=JSON overrides")
    p.add_argument("--simulate", default="h100:llama-3.1-8b")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--max-concurrency", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--max-prompt-tokens", type=int, default=120_000)
    p.add_argument("--prefill-us-per-token", type=float, default=30.0)
    p.add_argument(
        "--max-affinity-wait-s",
        type=float,
        default=PrefixCacheConfig.model_fields["max_affinity_wait_s"].default,
    )
    p.add_argument("--capacity", type=float, default=None, help="req/s (default: measured)")
    p.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    p.add_argument(
        "--patch",
        default="",
        help="MODULE:NAME: call MODULE.apply(NAME) first (routing_sweep_variants:cost:slots)",
    )
    args = p.parse_args()
    if args.patch:
        import importlib

        module, _, name = args.patch.partition(":")
        importlib.import_module(module).apply(name)
    reqs = routing_trace.load_subset(
        args.trace, args.requests, args.max_tokens, args.max_prompt_tokens, offset=args.offset
    )
    blocks = kv_blocks(args.simulate)
    ideal = routing_trace.fleet_lru_ideal(reqs, blocks * args.replicas)
    args.ideal_blocks = ideal_hits(reqs, blocks * args.replicas)
    # The fleet's capacity under the unpatched policy: give it (--capacity) when comparing
    # patched variants, so that every variant replays the same arrival rates.
    cap = args.capacity or routing_trace.capacity_rps(args, reqs)
    span = reqs[-1].arrival_s - reqs[0].arrival_s
    trace_rps = len(reqs) / span
    print(f"offset {args.offset}: {len(reqs)} req, capacity {cap:.2f} req/s, ideal {ideal:.2%}")
    variants = [v.split("=", 1) for v in args.variant] or [["base", "{}"]]
    for load in (float(x) for x in args.loads.split(",")):
        for name, js in variants:
            runs = []
            for k in range(args.repeats):
                scale = cap * load / trace_rps * (1 + args.step * (k - (args.repeats - 1) / 2))
                runs.append(replay(args, reqs, scale, args.policy, json.loads(js)))
            pct = sorted(100 * r["hit_rate"] / ideal for r in runs)
            reasons: Counter[str] = Counter()
            lost: Counter[str] = Counter()
            for r in runs:
                reasons.update(r["reasons"])
                lost.update(r["lost_blocks"])
            ideal_blocks = runs[0]["ideal_blocks"]
            row = {
                "offset": args.offset,
                "load": load,
                "variant": name,
                "patch": args.patch,
                "overrides": json.loads(js),
                "pct_of_ideal": [round(x, 1) for x in pct],
                "median": round(statistics.median(pct), 1),
                "mean": round(statistics.fmean(pct), 1),
                "ttft_p50_s": round(statistics.median(r["ttft_p50_s"] for r in runs), 2),
                "ttft_p99_s": round(statistics.median(r["ttft_p99_s"] for r in runs), 2),
                "max_over_mean_computed": round(max(r["max_over_mean_computed"] for r in runs), 3),
                "failed": sum(r["failed"] for r in runs),
                "reasons_per_run": {k: round(v / len(runs), 1) for k, v in sorted(reasons.items())},
                "lost_pct_of_ideal": {
                    k: round(100 * v / len(runs) / ideal_blocks, 1)
                    for k, v in sorted(lost.items())
                    if v
                },
            }
            print(json.dumps(row), flush=True)
            if args.out is not None:
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
