"""Keeps the router's picture of its replicas current: health, load, adapters and KV events.

Owns ``ReplicaMonitor``: one ``tick`` probes every replica once (``GET /health`` sets the state;
``GET /metrics`` reads vLLM's ``num_requests_waiting`` and ``kv_cache_usage_perc``;
``GET /v1/models`` lists loaded adapters; with precise prefix routing, ``GET /v1/kv_events``
feeds the prefix index), and ``run`` ticks forever at the deployment's interval. It also owns
``AdapterLoader``, which loads a LoRA adapter through a replica's admin API once, however many
requests wait for it. Probing goes through the ``Upstream`` seam; routing stays in the router.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.services.router import RouterService
from shipit.services.upstream import Upstream, UpstreamError

log = logging.getLogger("shipit.gateway.monitor")
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


class ReplicaMonitor:
    def __init__(self, router: RouterService, upstream: Upstream) -> None:
        self.router = router
        self.upstream = upstream
        self._kv_after: dict[str, int] = {}

    async def tick(self) -> None:
        await asyncio.gather(*(self._probe(rid) for rid in self.router.registry.ids()))
        self.router.dispatch()  # ejections may have ended; replicas may have become ready

    async def run(self) -> None:
        interval = self.router.deployment.health_interval_s
        while True:
            try:
                await self.tick()
            except Exception:  # a probe bug must not stop health checking
                log.exception("replica monitor tick failed")
            await asyncio.sleep(interval)

    async def _probe(self, replica_id: str) -> None:
        record = self._probeable(replica_id)
        if record is None:
            return
        url = record.url
        try:
            status, _ = await self.upstream.get(url + "/health", timeout_s=PROBE_TIMEOUT_S)
            why = f"/health answered {status}"
        except UpstreamError as exc:
            status, why = 0, exc.message
        record = self._probeable(replica_id)  # it may have been cordoned while we waited
        if record is None:
            return
        if status != 200:
            if record.state is not ReplicaState.STARTING:
                self._set(replica_id, ReplicaState.UNHEALTHY, why)
            return
        if record.state is not ReplicaState.READY:
            await self._refresh_adapters(replica_id, url)
            if self._probeable(replica_id) is None:
                return
        self._set(replica_id, ReplicaState.READY, why)
        await self._refresh_load(replica_id, url)
        if self.router.deployment.routing.prefix_cache.source == "kv_events":
            await self.pull_kv_events(replica_id)

    def _probeable(self, replica_id: str) -> ReplicaRecord | None:
        """The replica's record, or None when it is gone or cordoned (draining, stopped): a
        healthy answer must not make a cordoned replica routable again."""
        record = self.router.registry.get(replica_id)
        if record is None or record.state in (ReplicaState.STOPPED, ReplicaState.DRAINING):
            return None
        return record

    def _set(self, replica_id: str, state: ReplicaState, why: str) -> None:
        record = self.router.registry.get(replica_id)
        if record is not None and record.state is not state:
            log.info("replica %s: %s -> %s (%s)", replica_id, record.state.value, state.value, why)
            self.router.set_state(replica_id, state)

    async def _refresh_load(self, replica_id: str, url: str) -> None:
        try:
            status, body = await self.upstream.get(url + "/metrics", timeout_s=PROBE_TIMEOUT_S)
        except UpstreamError:
            return
        if status == 200:
            m = parse_vllm_metrics(body.decode("utf-8", "replace"))
            self.router.registry.update_load(
                replica_id,
                queue_depth=int(m.get("vllm:num_requests_waiting", 0)),
                kv_usage=m.get("vllm:kv_cache_usage_perc", 0.0),
            )

    async def _refresh_adapters(self, replica_id: str, url: str) -> None:
        try:
            status, body = await self.upstream.get(url + "/v1/models", timeout_s=PROBE_TIMEOUT_S)
            data: list[dict[str, Any]] = json.loads(body).get("data", []) if status == 200 else []
        except (UpstreamError, ValueError, AttributeError):
            return
        self.router.registry.set_adapters(
            replica_id, [str(m["id"]) for m in data if m.get("parent")]
        )

    async def pull_kv_events(self, replica_id: str) -> None:
        """Read a replica's KV-event feed from where we left off into the prefix index."""
        record = self.router.registry.get(replica_id)
        if record is None:
            return
        after = self._kv_after.get(replica_id, -1)
        url = f"{record.url}/v1/kv_events?after={after}&limit=10000"
        try:
            status, body = await self.upstream.get(url, timeout_s=PROBE_TIMEOUT_S)
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


class AdapterLoader:
    """Loads adapters through replicas' ``/v1/load_lora_adapter``; one call per (replica,
    adapter) at a time, shared by every request waiting for it. Nothing is remembered once a
    load ends: which replica holds which adapter is the router's ``ReplicaRecord.adapters``
    (reset from ``/v1/models`` when a replica comes back, so a restarted one is loaded again)."""

    def __init__(self, upstream: Upstream, paths: dict[str, str]) -> None:
        self.upstream = upstream
        self.paths = paths
        self._loads: dict[tuple[str, str], asyncio.Future[None]] = {}

    async def ensure(self, replica_id: str, url: str, adapter: str) -> None:
        """Raise ``UpstreamError`` when the adapter cannot be loaded there."""
        key = (replica_id, adapter)
        pending = self._loads.get(key)
        if pending is None:
            pending = self._loads[key] = asyncio.ensure_future(self._load(url, adapter))
            pending.add_done_callback(lambda _: self._loads.pop(key, None))
        await asyncio.shield(pending)

    async def _load(self, url: str, adapter: str) -> None:
        path = self.paths.get(adapter)
        if path is None:
            raise UpstreamError(
                "adapter",
                f"adapter {adapter!r} has no path: add it under routing.lora_affinity.adapters",
            )
        payload = {"lora_name": adapter, "lora_path": path}
        status, body = await self.upstream.post_json(
            url + "/v1/load_lora_adapter", payload, timeout_s=60.0
        )
        if status != 200:
            text = body.decode("utf-8", "replace")[:300]
            raise UpstreamError("adapter", f"loading {adapter!r} failed ({status}): {text}")
        log.info("loaded adapter %s on %s", adapter, url)
