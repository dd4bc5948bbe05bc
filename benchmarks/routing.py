"""Routing on a shared-prefix workload: prefix-cache hit rate vs the ideal, TTFT and load balance.

Workload (seeded, identical for every policy): ``--groups`` system prompts of
``--system-tokens`` words (one word is one token for the simulated replicas' tokenizer),
optionally opening with a ``--shared-preamble-tokens`` text common to all of them; ``--users``
users, each bound to one system prompt (uniform, or Zipf with ``--zipf S``); each request is a
chat of that system prompt plus a fresh user question of ``--suffix-tokens`` words, sent
streamed at Poisson arrivals of ``--rate`` req/s.

For every policy a fresh ``shipit up --replicas N --simulate GPU:MODEL --routing POLICY`` is
started (cold caches), the workload runs, and it is stopped (SIGTERM by pid). Measured:

- hit rate: deltas of each replica's own ``vllm:prefix_cache_hits_total`` /
  ``vllm:prefix_cache_queries_total`` (tokens), scraped from its ``/metrics`` before and after;
- ideal hit rate: the replicas' chat template and tokenizer applied to every request; a block
  counts as cacheable when any earlier request produced it (the engine's chained block hashes,
  16-token blocks, the last prompt token always computed). That is every prompt's shared prefix
  after its group's first request; it assumes a fleet whose KV holds the reused blocks, which
  is checked against the replicas' KV capacity (the planner's VRAM plan the replicas use);
- TTFT P50/P90: client side, request sent -> first content chunk;
- load: requests per replica (the gateway's ``x-shipit-replica`` header, cross-checked with
  the replicas' ``vllm:request_success_total``), max/mean.

Goal: ``prefix_cache`` hit rate >= 90 % of the ideal with max/mean load <= 1.3.
Prints a table and writes ``benchmarks/results/routing.json``. Medians over ``--repeats``.

With ``--trace FILE`` (JSON lines with ``hash_ids``, e.g. the Mooncake conversation trace) it
runs ``benchmarks/routing_trace.py`` instead: the trace's prefixes at 1x and 1.5x the fleet's
capacity, live and in the simulator (see that module).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from shipit.capacity.memory import plan_vram
from shipit.engine.block_manager import hash_prompt_blocks
from shipit.engine.engine import EngineConfig
from shipit.engine.simulated import SimTokenizer, SimulationSpec, simulated_deployment

RESULTS = Path(__file__).parent / "results" / "routing.json"
BLOCK = 16
POLICIES = ("prefix_cache", "round_robin", "least_outstanding", "power_of_two")


@dataclass(frozen=True, slots=True)
class Req:
    at_s: float
    group: int
    messages: list[dict[str, str]]
    max_tokens: int | None = None  # this request's own cap (a trace's output length)


# ----- workload -------------------------------------------------------------------------------
def _words(rng: random.Random, n: int) -> list[str]:
    syllables = ["ka", "lo", "mi", "ru", "te", "sa", "no", "vi", "de", "pa", "zu", "ri", "on"]
    vocab = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(3000)]
    return [rng.choice(vocab) for _ in range(n)]


def build_workload(args: argparse.Namespace) -> list[Req]:
    rng = random.Random(args.seed)
    preamble = " ".join(_words(rng, args.shared_preamble_tokens))
    systems = []
    for g in range(args.groups):
        head = f"You are assistant {g} of tenant t{g * 7919 % 1000}."  # 6 words
        body = " ".join(_words(rng, args.system_tokens - args.shared_preamble_tokens - 6))
        systems.append(" ".join(p for p in (preamble, head, body) if p))
    weights = [1.0 / (g + 1) ** args.zipf for g in range(args.groups)]
    user_group = rng.choices(range(args.groups), weights=weights, k=args.users)
    reqs, t = [], 0.0
    for _ in range(args.requests):
        t += rng.expovariate(args.rate)
        g = user_group[rng.randrange(args.users)]
        question = "Question: " + " ".join(_words(rng, args.suffix_tokens - 1))
        messages = [
            {"role": "system", "content": systems[g]},
            {"role": "user", "content": question},
        ]
        reqs.append(Req(t, g, messages))
    return reqs


def ideal(reqs: list[Req], kv_blocks_per_replica: int, replicas: int) -> dict[str, Any]:
    """Infinite-cache ideal over the replicas' own tokens, and whether the fleet's KV holds
    the blocks that get reused."""
    tok = SimTokenizer()
    seen: set[int] = set()
    reused: set[int] = set()
    queries = hits = 0
    per_prompt: list[int] = []
    for r in reqs:
        ids = tok.encode(tok.apply_chat_template(r.messages, add_generation_prompt=True))
        hashes = hash_prompt_blocks(ids, BLOCK)
        n = 0
        for h in hashes[: (len(ids) - 1) // BLOCK]:
            if h not in seen:
                break
            reused.add(h)
            n += 1
        seen.update(hashes)
        queries += len(ids)
        hits += n * BLOCK
        per_prompt.append(len(ids))
    return {
        "ideal_hit_rate": hits / queries,
        "prompt_tokens_mean": statistics.fmean(per_prompt),
        "reused_blocks": len(reused),
        "kv_blocks_per_replica": kv_blocks_per_replica,
        "reused_blocks_fit_one_replica": len(reused) <= kv_blocks_per_replica,
        "reused_blocks_fit_fleet": len(reused) <= kv_blocks_per_replica * replicas,
    }


def kv_blocks(simulate: str) -> int:
    """What ``shipit replica --simulate`` allocates with its default flags."""
    d = simulated_deployment(SimulationSpec.parse(simulate), EngineConfig())
    return plan_vram(d).kv_pool_tokens // BLOCK


# ----- processes and scraping --------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def start_up(args: argparse.Namespace, policy: str) -> tuple[subprocess.Popen[bytes], str, Path]:
    port = _free_port()
    shipit = str(Path(sys.executable).with_name("shipit"))
    cmd = [shipit, "up", "--replicas", str(args.replicas), "--simulate", args.simulate]
    cmd += ["--routing", policy, "--port", str(port), "--log-level", "warning"]
    tmp = Path(tempfile.mkdtemp(prefix="routing-bench-"))
    if args.prefix_cache:
        routing = {"policy": policy, "prefix_cache": json.loads(args.prefix_cache)}
        (tmp / "shipit.yaml").write_text(json.dumps({"deployments": [{"routing": routing}]}))
        cmd += ["-c", str(tmp / "shipit.yaml")]
    log = tmp / "up.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if _get_json(url + "/health")["ready_replicas"] == args.replicas:
                return proc, url, log
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"shipit up did not become ready:\n{log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def replica_urls(gw: str) -> dict[str, str]:
    dep = _get_json(gw + "/shipit/status")["deployments"][0]
    return {r["id"]: r["url"] for r in dep["replicas"]}


def scrape(url: str) -> dict[str, float]:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {"hits": 0.0, "queries": 0.0, "requests": 0.0}
    names = {
        "vllm:prefix_cache_hits": "hits",
        "vllm:prefix_cache_queries": "queries",
        "vllm:request_success": "requests",
    }
    for fam in text_string_to_metric_families(text):
        key = names.get(fam.name)
        for s in fam.samples if key else ():
            if s.name.endswith("_total"):
                out[key] += s.value  # type: ignore[index]
    return out


# ----- load --------------------------------------------------------------------------------
async def _one(
    session: aiohttp.ClientSession, url: str, model: str, req: Req, max_tokens: int
) -> tuple[float | None, str | None]:
    body = {
        "model": model,
        "messages": req.messages,
        "max_tokens": req.max_tokens or max_tokens,
        "stream": True,
        # The usage chunk carries the replica's cached tokens: the gateway checks its prefix
        # index's prediction against them (shipit_prefix_cache_predictions_total).
        "stream_options": {"include_usage": True},
    }
    t0 = time.perf_counter()
    ttft = None
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        replica = resp.headers.get("x-shipit-replica")
        if resp.status != 200:
            await resp.read()
            return None, replica
        async for line in resp.content:
            if ttft is None and b'"content":"' in line and b'"content":""' not in line:
                ttft = time.perf_counter() - t0
    return ttft, replica


async def drive(url: str, model: str, reqs: list[Req], max_tokens: int) -> list[Any]:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:
        start = time.perf_counter()
        tasks = []
        for r in reqs:
            delay = start + r.at_s - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_one(session, url, model, r, max_tokens)))
        return await asyncio.gather(*tasks, return_exceptions=True)


def _pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))] if s else float("nan")


def run_policy(args: argparse.Namespace, policy: str, reqs: list[Req]) -> dict[str, Any]:
    load_before = os.getloadavg()[0]
    proc, gw, _log = start_up(args, policy)
    try:
        urls = replica_urls(gw)
        before = {rid: scrape(u) for rid, u in urls.items()}
        t0 = time.perf_counter()
        results = asyncio.run(drive(gw, args.simulate.split(":")[1], reqs, args.max_tokens))
        wall_s = time.perf_counter() - t0
        after = {rid: scrape(u) for rid, u in urls.items()}
        decisions = _get_json(gw + "/shipit/status")["deployments"][0]["decisions"]
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
    counts = list(routed.values())
    return {
        "policy": policy,
        "hit_rate": hits / queries if queries else float("nan"),
        "ttft_p50_ms": _pct(ttfts, 50) * 1000,
        "ttft_p90_ms": _pct(ttfts, 90) * 1000,
        "max_over_mean_load": max(counts) / statistics.fmean(counts),
        "requests_per_replica": routed,
        "replica_counters": delta,
        "completed": len(ttfts),
        "failed": len(reqs) - len(ttfts),
        "decisions": decisions,
        "wall_s": wall_s,
        "loadavg_1m_before": load_before,
        "loadavg_1m_after": os.getloadavg()[0],
    }


# ----- report ------------------------------------------------------------------------------
def summarise(runs: list[dict[str, Any]], ideal_rate: float) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for policy in dict.fromkeys(r["policy"] for r in runs):
        mine = [r for r in runs if r["policy"] == policy]
        med = {
            k: statistics.median(r[k] for r in mine)
            for k in ("hit_rate", "ttft_p50_ms", "ttft_p90_ms", "max_over_mean_load")
        }
        med["hit_rate_over_ideal"] = med["hit_rate"] / ideal_rate
        med["failed"] = sum(r["failed"] for r in mine)
        med["runs"] = len(mine)
        out[policy] = med
    return out


def print_table(summary: dict[str, dict[str, float]], ideal_rate: float) -> None:
    print(f"\nideal hit rate {ideal_rate:.1%}")
    head = f"{'policy':18s} {'hit rate':>9s} {'/ideal':>7s} {'TTFT P50':>9s} {'TTFT P90':>9s}"
    print(head + f" {'max/mean':>9s} {'failed':>7s}")
    for policy, m in summary.items():
        print(
            f"{policy:18s} {m['hit_rate']:9.1%} {m['hit_rate_over_ideal']:7.1%} "
            f"{m['ttft_p50_ms']:7.0f}ms {m['ttft_p90_ms']:7.0f}ms "
            f"{m['max_over_mean_load']:9.2f} {int(m['failed']):7d}"
        )


def main() -> None:
    import routing_trace  # this directory's: the trace mode

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--simulate", default=None, help="GPU:MODEL of the replicas")
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--policies", default=None)
    parser.add_argument("--groups", type=int, default=32)
    parser.add_argument("--system-tokens", type=int, default=1000)
    parser.add_argument("--shared-preamble-tokens", type=int, default=0)
    parser.add_argument("--suffix-tokens", type=int, default=24)
    parser.add_argument("--users", type=int, default=512)
    parser.add_argument("--zipf", type=float, default=0.0, help="group popularity; 0: uniform")
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--rate", type=float, default=8.0)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--prefix-cache",
        default="",
        help="JSON merged into routing.prefix_cache, e.g. '{\"imbalance_abs_requests\": 8}'",
    )
    parser.add_argument("--out", type=Path, default=None)
    routing_trace.add_arguments(parser)
    args = parser.parse_args()
    if args.trace is not None:  # a real trace, at and past the fleet's capacity
        args.simulate = args.simulate or "h100:llama-3.1-8b"
        args.policies = args.policies or "round_robin,least_outstanding,prefix_cache"
        args.out = args.out or routing_trace.RESULTS
        routing_trace.main(args)
        return
    args.simulate = args.simulate or "a100-40gb:llama-2-13b"
    args.policies = args.policies or ",".join(POLICIES)
    args.out = args.out or RESULTS
    policies = [p for p in args.policies.split(",") if p]
    reqs = build_workload(args)
    ideal_info = ideal(reqs, kv_blocks(args.simulate), args.replicas)
    print(json.dumps(ideal_info))
    runs = []
    for rep in range(args.repeats):
        for policy in policies[rep % len(policies) :] + policies[: rep % len(policies)]:
            run = run_policy(args, policy, reqs)
            runs.append(run)
            print(
                f"run {rep} {policy:18s} hit {run['hit_rate']:.1%} "
                f"p50 {run['ttft_p50_ms']:.0f}ms p90 {run['ttft_p90_ms']:.0f}ms "
                f"max/mean {run['max_over_mean_load']:.2f} failed {run['failed']} "
                f"load {run['loadavg_1m_before']:.1f}->{run['loadavg_1m_after']:.1f}",
                flush=True,
            )
    summary = summarise(runs, ideal_info["ideal_hit_rate"])
    print_table(summary, ideal_info["ideal_hit_rate"])
    result = {
        "workload": {k: v for k, v in vars(args).items() if k != "out"},
        "ideal": ideal_info,
        "summary": summary,
        "runs": runs,
        "cpus": os.cpu_count(),
        "goal": "prefix_cache: hit rate >= 90% of ideal with max/mean load <= 1.3",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
