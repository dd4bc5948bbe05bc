"""Long streams, routing cost and idle connections, for ``gateway_overhead.py``.

Long streams: ``--streams`` concurrent streamed requests of ``--stream-tokens`` tokens
``--token-interval-ms`` apart (the fakes pace them), first straight to the fakes (the control:
what the load generator itself can keep up with), then through shipit's gateway and through each
peer given, each pinned to CPU 0. Per system: streams completed, stalls (a stream whose largest
gap between two reads exceeded ``--stall-factor`` x the interval), the largest gap, the
process's CPU seconds (user + system, from ``/proc/<pid>/stat``) per streamed token, and its
resident memory per active stream (RSS with every stream open minus RSS before, over the
streams).

Routing cost: the pure ``decide`` of ``shipit.policy.routing`` for ``round_robin`` and
``prefix_cache`` on a realistic snapshot (8 replicas with load; a 1,181-character prompt, 18
blocks, half of them held by one replica), in microseconds per call (best of
five); for ``prefix_cache`` also the driver's whole step (the index lookup, ``decide``,
recording what was routed).

Idle keep-alive connections (``--idle-connections N``): N connections opened with one request
each, held idle, then asked again; RSS per idle connection and the gateway's CPU while idle.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def raise_nofile(want: int) -> int:
    """Raise the soft open-files limit toward ``want`` (children inherit it); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(max(soft, want), hard)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


async def _long_stream(
    session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, float, float]:
    """Tokens received (content events), the largest gap between two reads once the first
    token arrived, and the time to that first token, in seconds."""
    tokens = 0
    gap = 0.0
    t0 = time.perf_counter()
    ttft = float("nan")
    async with session.post(url + "/v1/chat/completions", data=body, headers=headers) as resp:
        if resp.status != 200:
            return 0, 0.0, ttft
        last = None
        async for chunk in resp.content.iter_any():
            now = time.perf_counter()
            if last is not None:
                gap = max(gap, now - last)
            n = chunk.count(b'"content"')
            if n and last is None:
                ttft = now - t0
                last = now
            elif last is not None:
                last = now
            tokens += n
    return tokens, gap, ttft


async def long_streams(
    url: str,
    *,
    streams: int,
    tokens: int,
    body: bytes,
    headers: dict[str, str],
    pid: int | None,
    ramp_s: float,
) -> dict[str, Any]:
    """``streams`` concurrent long streams through ``url`` (started over ``ramp_s``); with
    ``pid``, that process's CPU and memory while they run."""
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        rss0 = rss_bytes(pid) if pid else 0
        cpu0 = cpu_s(pid) if pid else 0.0
        t0 = time.perf_counter()
        tasks = []
        for i in range(streams):
            due = t0 + ramp_s * i / streams
            if (delay := due - time.perf_counter()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_long_stream(session, url, body, headers)))
        # Every stream is open once the ramp is over and lasts tokens x interval: sample the
        # memory at its highest, in the middle of the run.
        await asyncio.sleep(0.5)
        rss_peak = rss_bytes(pid) if pid else 0
        results = await asyncio.gather(*tasks, return_exceptions=True)
        wall = time.perf_counter() - t0
        cpu1 = cpu_s(pid) if pid else 0.0
    done = [r for r in results if isinstance(r, tuple)]
    streamed = sum(n for n, _, _ in done)
    gaps = sorted(g for _, g, _ in done)
    ttfts = sorted(t for _, _, t in done)
    out: dict[str, Any] = {
        "streams": streams,
        "completed": sum(1 for n, _, _ in done if n == tokens),
        "failed": len(results) - len(done) + sum(1 for n, _, _ in done if n != tokens),
        "max_ttft_ms": ttfts[-1] * 1000 if ttfts else float("nan"),
        "tokens_streamed": streamed,
        "wall_s": wall,
        "max_gap_ms": gaps[-1] * 1000 if gaps else float("nan"),
        "p99_gap_ms": gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))] * 1000 if gaps else 0,
        "_gaps": gaps,
    }
    if pid:
        out["cpu_s"] = cpu1 - cpu0
        out["cpu_us_per_token"] = (cpu1 - cpu0) / max(streamed, 1) * 1e6
        out["rss_idle_mib"] = rss0 / 2**20
        out["rss_active_mib"] = rss_peak / 2**20
        out["rss_kib_per_active_stream"] = (rss_peak - rss0) / 1024 / streams
    return out


def summarise(r: dict[str, Any], interval_s: float, factor: float) -> dict[str, Any]:
    gaps = r.pop("_gaps")
    r["stall_threshold_ms"] = interval_s * factor * 1000
    r["stalled_streams"] = sum(1 for g in gaps if g > interval_s * factor)
    return r


def run_long_streams(
    systems: list[tuple[str, str, int | None, dict[str, str]]],
    *,
    streams: int,
    tokens: int,
    interval_s: float,
    factor: float,
    ramp_s: float,
) -> dict[str, Any]:
    """Each (name, url, pid, headers): the same long streams, one system after the other."""
    import json

    body = json.dumps(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "max_tokens": tokens,
        }
    ).encode()
    nofile = raise_nofile(4 * streams + 1024)
    out: dict[str, Any] = {
        "streams": streams,
        "tokens_per_stream": tokens,
        "token_interval_ms": interval_s * 1000,
        "nofile_soft_limit": nofile,
        "systems": {},
    }
    for name, url, pid, headers in systems:
        load = os.getloadavg()[0]
        r = uvloop.run(
            long_streams(
                url,
                streams=streams,
                tokens=tokens,
                body=body,
                headers=headers,
                pid=pid,
                ramp_s=ramp_s,
            )
        )
        r = summarise(r, interval_s, factor)
        r["loadavg_1m_before"] = load
        out["systems"][name] = r
        print(
            f"long streams {name:12s} completed {r['completed']}/{streams}  stalled "
            f"{r['stalled_streams']}  max gap {r['max_gap_ms']:.0f} ms  max TTFT "
            f"{r['max_ttft_ms']:.0f} ms  wall {r['wall_s']:.1f} s"
            + (
                f"  CPU {r['cpu_us_per_token']:.1f} us/token  "
                f"RSS {r['rss_kib_per_active_stream']:.1f} KiB/stream"
                if pid
                else ""
            ),
            flush=True,
        )
    return out


def _time_us(fn: Callable[[], object], n: int) -> float:
    best = float("inf")
    for _ in range(5):  # the best of five: the least disturbed by the shared machine
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def routing_cost(n: int = 20000) -> dict[str, Any]:
    """Microseconds per routing decision, round_robin vs prefix_cache, on one snapshot."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "src"))
    from shipit.config.gateway import RoutingConfig
    from shipit.core.fleet import ReplicaRecord
    from shipit.core.views import RequestView
    from shipit.policy import routing

    replicas = tuple(
        ReplicaRecord(f"r{i}", f"http://10.0.0.{i}:8000/v1", in_flight=i % 5, max_concurrency=8)
        for i in range(8)
    )
    config = RoutingConfig()
    prompt = "You are a helpful assistant. " * 40 + "Tell me about item 7."
    block_chars = max(
        1, int(config.prefix_cache.block_size_tokens * config.prefix_cache.chars_per_token)
    )
    hashes = routing.text_block_hashes(prompt, block_chars=block_chars)
    request = RequestView("req-1", "default", "m", prompt_text=prompt, prefix_hashes=hashes)
    index = routing.PrefixIndex(max_blocks_per_replica=100_000)
    index.record("r3", hashes[: len(hashes) // 2])
    ids = [r.replica_id for r in replicas]
    hits = routing.prefix_hits(index, hashes, ids)
    out: dict[str, Any] = {
        "replicas": len(replicas),
        "prompt_chars": len(prompt),
        "prefix_blocks": len(hashes),
        "calls": n,
    }
    for name in ("round_robin", "prefix_cache"):
        plan = routing.plan_for(name, config)
        snap = routing.RouteSnapshot(0.0, request, replicas, hits if name == "prefix_cache" else ())
        state = routing.RoutingState()
        out[f"{name}_decide_us"] = _time_us(
            lambda plan=plan, snap=snap, state=state: routing.decide(plan, snap, state), n
        )
    plan = routing.plan_for("prefix_cache", config)

    def whole_step() -> None:
        found = routing.prefix_hits(index, hashes, ids)
        s = routing.RouteSnapshot(0.0, request, replicas, found)
        decision, _ = routing.decide(plan, s, routing.RoutingState())
        routing.observe(plan, request, decision, index)

    out["prefix_cache_step_us"] = _time_us(whole_step, n)
    out["prefix_hashing_us"] = _time_us(
        lambda: routing.text_block_hashes(prompt, block_chars=block_chars), n // 4
    )
    print(
        f"routing cost per request: round_robin {out['round_robin_decide_us']:.1f} us, "
        f"prefix_cache {out['prefix_cache_decide_us']:.1f} us (decide); prefix_cache with the "
        f"index lookup and update {out['prefix_cache_step_us']:.1f} us; hashing the prompt "
        f"{out['prefix_hashing_us']:.1f} us",
        flush=True,
    )
    return out


_HEALTH = b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"


async def _ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """One GET /health on an open keep-alive connection; whether it answered 200."""
    writer.write(_HEALTH)
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return head.startswith(b"HTTP/1.1 200")


async def idle_connections(url: str, *, n: int, pid: int, hold_s: float) -> dict[str, Any]:
    """Open ``n`` keep-alive connections (one request each, in batches of 500 so the listen
    backlog is never the limit), hold them idle ``hold_s``, then ask on each again: how many
    were still open and answered, and the gateway's RSS and CPU over the idle hold."""
    host, port = url.rsplit(":", 1)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    rss0 = rss_bytes(pid)
    refused = 0

    async def one() -> None:
        nonlocal refused
        try:
            r, w = await asyncio.open_connection(host.split("//")[1], int(port))
            if await _ask(r, w):
                conns.append((r, w))
            else:
                refused += 1
        except (OSError, asyncio.IncompleteReadError):
            refused += 1

    t0 = time.perf_counter()
    for start in range(0, n, 500):
        await asyncio.gather(*(one() for _ in range(min(500, n - start))))
    opened_s = time.perf_counter() - t0
    rss_open = rss_bytes(pid)
    cpu0 = cpu_s(pid)
    await asyncio.sleep(hold_s)
    cpu_idle = cpu_s(pid) - cpu0
    rss_held = rss_bytes(pid)
    answered = 0
    for start in range(0, len(conns), 500):
        batch = conns[start : start + 500]
        got = await asyncio.gather(*(_ask(r, w) for r, w in batch), return_exceptions=True)
        answered += sum(1 for g in got if g is True)
    for _, w in conns:
        w.close()
    return {
        "connections": n,
        "opened": len(conns),
        "refused_or_failed": refused,
        "open_s": opened_s,
        "hold_s": hold_s,
        "still_open_and_answered": answered,
        "rss_before_mib": rss0 / 2**20,
        "rss_held_mib": rss_held / 2**20,
        "rss_kib_per_idle_connection": (rss_open - rss0) / 1024 / max(len(conns), 1),
        "gateway_cpu_s_while_idle": cpu_idle,
    }


def run_idle(url: str, pid: int, *, n: int, hold_s: float) -> dict[str, Any]:
    nofile = raise_nofile(n + 1024)
    r = uvloop.run(idle_connections(url, n=n, pid=pid, hold_s=hold_s))
    r["nofile_soft_limit"] = nofile
    r["loadavg_1m"] = os.getloadavg()[0]
    print(
        f"idle keep-alive: {r['opened']}/{n} opened, {r['still_open_and_answered']} still "
        f"open and answering after {hold_s:g}s idle; {r['rss_kib_per_idle_connection']:.1f} "
        f"KiB RSS per idle connection; gateway CPU while idle {r['gateway_cpu_s_while_idle']:.2f}s",
        flush=True,
    )
    return r
