"""Keeps the router's picture of its replicas current: health, load, adapters and KV events.

Owns ``ReplicaMonitor``, a thin driver of the health policy (``policy.health``): one ``tick``
probes every replica once (``GET /health``), and for each answer reads the clock once, builds a
``HealthSnapshot`` (the replica's record and the probe's outcome), asks ``health.decide`` with
the consecutive-probe counts it keeps between ticks, records the decision in the decision log
and applies its target state through the router. Ready replicas also get their load read
(``GET /metrics``: vLLM's ``num_requests_waiting`` and ``kv_cache_usage_perc``); a replica that
may become ready first has its adapters listed (``GET /v1/models``); with precise prefix routing,
a feed per ready replica keeps the prefix index current: ``GET /v1/kv_events`` polled every
``kv_event_poll_s`` for shipit replicas, or a ZeroMQ subscriber for vLLM replicas
(``services.kv_feed_vllm``); each starts once the replica is ready and stops when it leaves the
registry or the monitor stops. ``run`` ticks forever at the deployment's
interval. It also owns ``AdapterLoader``, which loads a LoRA adapter through a replica's admin
API once, however many requests wait for it. Probing goes through the ``Upstream`` seam; this
module decides no state change itself and routes nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Mapping
from typing import Any

from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.core.fleet import ReplicaState
from shipit.core.urls import redact_url
from shipit.policy import health
from shipit.policy.health import HealthDecision, HealthSnapshot, HealthState, ProbeOutcome
from shipit.services.kv_feed_vllm import KvUpdate, ZmqKvFeed, endpoint_for
from shipit.services.router import RouterService
from shipit.services.upstream import Upstream, UpstreamError

logger = logging.getLogger("shipit.gateway.monitor")
PROBE_TIMEOUT_S = 2.0


def parse_vllm_metrics(text: str) -> dict[str, float]:
    """Sums of the few vLLM gauges the router reads, by metric name (labels ignored)."""
    wanted = ("vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:num_requests_running")
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            try:
                out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            except (ValueError, IndexError):
                continue
    return out


_GPU_BLOCKS = re.compile(r'^vllm:cache_config_info\{[^}]*num_gpu_blocks="(\d+)"', re.MULTILINE)


def kv_capacity_blocks(text: str) -> int | None:
    """``num_gpu_blocks`` of ``vllm:cache_config_info`` (vLLM and shipit replicas publish it),
    or None when the replica does not."""
    m = _GPU_BLOCKS.search(text)
    return int(m.group(1)) if m else None


class ReplicaMonitor:
    def __init__(
        self,
        router: RouterService,
        upstream: Upstream,
        *,
        log: DecisionLog = NO_LOG,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.router = router
        self.upstream = upstream
        self._headers = dict(headers) if headers else None  # upstream_auth, when configured
        self.config = router.deployment.health
        self.log = log
        self.state = HealthState()
        self._kv_after: dict[str, int] = {}
        self.feeds: dict[str, tuple[ZmqKvFeed | None, asyncio.Task[None]]] = {}

    async def tick(self) -> None:
        ids = self.router.registry.ids()
        self.state = health.forget(self.state, ids)  # replicas gone since the last tick
        for gone in [rid for rid in self.feeds if rid not in ids]:
            self.feeds.pop(gone)[1].cancel()
            self._kv_after.pop(gone, None)
        await asyncio.gather(*(self._probe(rid) for rid in ids))
        self.router.dispatch()  # ejections may have ended; replicas may have become ready

    async def run(self) -> None:
        interval = self.router.deployment.health_interval_s
        try:
            while True:
                try:
                    await self.tick()
                except Exception:  # a probe bug must not stop health checking
                    logger.exception("replica monitor tick failed")
                await asyncio.sleep(interval)
        finally:
            await self.stop_feeds()

    async def stop_feeds(self) -> None:
        tasks = [task for _, task in self.feeds.values()]
        self.feeds.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _probe(self, replica_id: str) -> None:
        record = self.router.registry.get(replica_id)
        if record is None or not health.probe_wanted(record):
            return
        url = record.url
        outcome = await self._check(url)
        if health.resync_wanted(record, outcome, self.state):
            await self._refresh_adapters(replica_id, url)  # before it takes traffic again
        record = self.router.registry.get(replica_id)  # it may have changed while we waited
        if record is None:
            return
        snapshot = HealthSnapshot(self.router.clock.now(), record, outcome)
        state_in = self.state
        decision, self.state = health.decide(self.config, snapshot, state_in)
        self.log.record("health", self.router.deployment.name, snapshot, state_in, decision)
        self._apply(decision)
        current = self.router.registry.get(replica_id)
        if outcome.ok and current is not None and current.state is ReplicaState.READY:
            await self._refresh_load(replica_id, url)
            if self.router.deployment.routing.prefix_cache.source == "kv_events":
                self._ensure_feed(replica_id, url)

    async def _get(self, url: str) -> tuple[int, bytes]:
        if self._headers is None:
            return await self.upstream.get(url, timeout_s=PROBE_TIMEOUT_S)
        return await self.upstream.get(url, timeout_s=PROBE_TIMEOUT_S, headers=self._headers)

    async def _check(self, url: str) -> ProbeOutcome:
        try:
            status, _ = await self._get(url + "/health")
        except UpstreamError as exc:
            return ProbeOutcome(False, None, exc.message)
        return ProbeOutcome(status == 200, status)

    def _apply(self, decision: HealthDecision) -> None:
        if decision.target is None:
            return
        logger.info(
            "replica %s -> %s (%s)", decision.replica_id, decision.target.value, decision.reason
        )
        self.router.set_state(decision.replica_id, decision.target)

    async def _refresh_load(self, replica_id: str, url: str) -> None:
        try:
            status, body = await self._get(url + "/metrics")
        except UpstreamError:
            return
        if status == 200:
            text = body.decode("utf-8", "replace")
            m = parse_vllm_metrics(text)
            blocks = kv_capacity_blocks(text)
            if blocks is not None:
                self.router.set_kv_capacity(replica_id, blocks)
            self.router.registry.update_load(
                replica_id,
                queue_depth=int(m.get("vllm:num_requests_waiting", 0)),
                kv_usage=m.get("vllm:kv_cache_usage_perc", 0.0),
            )

    async def _refresh_adapters(self, replica_id: str, url: str) -> None:
        try:
            status, body = await self._get(url + "/v1/models")
            data: list[dict[str, Any]] = json.loads(body).get("data", []) if status == 200 else []
        except (UpstreamError, ValueError, AttributeError):
            return
        self.router.registry.set_adapters(
            replica_id, [str(m["id"]) for m in data if m.get("parent")]
        )

    def _ensure_feed(self, replica_id: str, url: str) -> None:
        """A ready replica's KV-event feed, unless one runs: its ``/v1/kv_events`` polled every
        ``kv_event_poll_s`` (shipit replicas), or a subscriber to vLLM's publisher. Either
        outlives unhealthy spells (sequence numbers say what was missed) and ends when the
        replica leaves the registry."""
        running = self.feeds.get(replica_id)
        if running is not None and not running[1].done():
            return
        pc = self.router.deployment.routing.prefix_cache
        if pc.kv_events_feed == "http":
            poll = asyncio.create_task(self._poll_kv(replica_id), name=f"kv-feed-{replica_id}")
            poll.add_done_callback(_log_feed_end)
            self.feeds[replica_id] = (None, poll)
            return
        replay = pc.kv_events_replay_endpoint

        def apply(update: KvUpdate, rid: str = replica_id) -> None:
            self.router.apply_kv_events(
                rid, stored=list(update.stored), evicted=list(update.evicted), reset=update.reset
            )

        feed = ZmqKvFeed(
            replica_id,
            endpoint=endpoint_for(pc.kv_events_endpoint, url),
            replay_endpoint=endpoint_for(replay, url) if replay else None,
            topic=pc.kv_events_topic,
            apply=apply,
            block_size=pc.block_size_tokens,
            max_entries=2 * max(self.router.prefix_index.capacity(replica_id), 1),
        )
        task = asyncio.create_task(feed.run(), name=f"kv-feed-{replica_id}")
        task.add_done_callback(_log_feed_end)
        self.feeds[replica_id] = (feed, task)

    async def _poll_kv(self, replica_id: str) -> None:
        interval_s = self.router.deployment.routing.prefix_cache.kv_event_poll_s
        while self.router.registry.get(replica_id) is not None:
            await self.pull_kv_events(replica_id)
            await asyncio.sleep(interval_s)

    async def pull_kv_events(self, replica_id: str) -> None:
        """Read a replica's KV-event feed from where we left off into the prefix index."""
        record = self.router.registry.get(replica_id)
        if record is None:
            return
        after = self._kv_after.get(replica_id, -1)
        url = f"{record.url}/v1/kv_events?after={after}&limit=10000"
        try:
            status, body = await self._get(url)
            page = json.loads(body) if status == 200 else None
        except (UpstreamError, ValueError):
            return
        if not isinstance(page, dict):
            return
        events = page.get("events", [])
        stored = [int(e["block_hash"]) for e in events if e.get("kind") == "stored"]
        evicted = [int(e["block_hash"]) for e in events if e.get("kind") == "evicted"]
        reset = bool(page.get("truncated"))
        self.router.apply_kv_events(replica_id, stored=stored, evicted=evicted, reset=reset)
        self._kv_after[replica_id] = int(page.get("next_after", after))


def _log_feed_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.warning("kv event feed %s stopped: %r", task.get_name(), task.exception())


class AdapterLoader:
    """Loads adapters through replicas' ``/v1/load_lora_adapter``; one call per (replica,
    adapter) at a time, shared by every request waiting for it. Nothing is remembered once a
    load ends: which replica holds which adapter is the router's ``ReplicaRecord.adapters``
    (reset from ``/v1/models`` when a replica comes back, so a restarted one is loaded again)."""

    def __init__(self, upstream: Upstream, paths: dict[str, str]) -> None:
        self.upstream = upstream
        self.paths = paths
        self._loads: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def ensure(
        self, replica_id: str, url: str, adapter: str, headers: Mapping[str, str] | None = None
    ) -> None:
        """Raise ``UpstreamError`` when the adapter cannot be loaded there; ``headers``: the
        deployment's upstream credentials."""
        key = (replica_id, adapter)
        pending = self._loads.get(key)
        if pending is None:
            pending = self._loads[key] = asyncio.ensure_future(self._load(url, adapter, headers))
            pending.add_done_callback(lambda _: self._loads.pop(key, None))
        await asyncio.shield(pending)

    async def _load(self, url: str, adapter: str, headers: Mapping[str, str] | None) -> None:
        path = self.paths.get(adapter)
        if path is None:
            raise UpstreamError(
                "adapter",
                f"adapter {adapter!r} has no path: add it under routing.lora_affinity.adapters",
            )
        payload = {"lora_name": adapter, "lora_path": path}
        load = url + "/v1/load_lora_adapter"
        if headers:
            status, body = await self.upstream.post_json(
                load, payload, timeout_s=60.0, headers=headers
            )
        else:
            status, body = await self.upstream.post_json(load, payload, timeout_s=60.0)
        if status != 200:
            text = body.decode("utf-8", "replace")[:300]
            raise UpstreamError("adapter", f"loading {adapter!r} failed ({status}): {text}")
        logger.info("loaded adapter %s on %s", adapter, redact_url(url))
