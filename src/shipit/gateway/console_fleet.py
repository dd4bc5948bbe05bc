"""What the console's fleet page shows, read from a running gateway (``/ui/api/fleet``).

One JSON snapshot per poll: per deployment its replicas (state, version, backend, capacity
pool, region, KV-cache use, in flight, the replica's own queue), the gateway's queue depth,
the request figures over the last ``window_s`` and a series of ``step_s`` steps over
``span_s`` (TTFT and TPOT P50/P99, goodput as SLO attainment, req/s; ``gateway.history``), the
autoscaler's state with its recent decisions and reasons and its cold starts in phases, and the
SLO the deployment is held to; then the rollouts in progress with their analysis and the active
alerts. It reads the same records ``/shipit/status`` does and decides nothing. ``console_app``
builds the console a gateway serves under ``/ui`` (``create_gateway(console=True)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shipit.console import ConsoleApp, api
from shipit.core.urls import redact_url

if TYPE_CHECKING:
    from shipit.gateway.app import Gateway

DEFAULTS = {"window_s": 30.0, "span_s": 300.0, "step_s": 5.0}
LIMITS = {"window_s": (1.0, 900.0), "span_s": (10.0, 900.0), "step_s": (1.0, 300.0)}


def _param(query: Mapping[str, str], name: str) -> float:
    raw = query.get(name)
    if raw is None or raw == "":
        return DEFAULTS[name]
    lo, hi = LIMITS[name]
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not lo <= value <= hi:
        raise api.ConsoleError(f"{name} must be seconds from {lo:g} to {hi:g}, got {raw!r}", name)
    return value


def console_app(gw: Gateway) -> ConsoleApp:
    """The web console with this gateway's fleet behind its fleet page."""
    return ConsoleApp(lambda query: fleet_snapshot(gw, query))


def fleet_snapshot(gw: Gateway, query: Mapping[str, str]) -> dict[str, Any]:
    window_s, span_s, step_s = (_param(query, n) for n in ("window_s", "span_s", "step_s"))
    now = gw.clock.now()
    window = gw.history.window(window_s) or {}
    series = gw.history.series(span_s, step_s)
    deployments = []
    for name, router in gw.routers.items():
        config = gw.deployments[name]
        views = router.views()
        slo = config.slo
        deployments.append(
            {
                "name": name,
                "model": config.model_name,
                "policy": router.default_policy,
                "queue_depth": router.queued(),
                "in_flight": sum(v.in_flight for v in views),
                "slo": {"ttft_p99_ms": slo.ttft_p99_ms, "tpot_p99_ms": slo.tpot_p99_ms}
                if slo is not None
                else None,
                "window": window.get("deployments", {}).get(name),
                "series": series.get(name, []),
                "autoscaling": a.status() if (a := gw.autoscalers.get(name)) else None,
                "replicas": [
                    {
                        "id": v.replica_id,
                        "url": redact_url(v.url),
                        "state": v.state.value,
                        "state_for_s": round(now - v.state_since_s, 3),
                        "version": v.version,
                        "backend": v.backend,
                        "pool": v.pool.value,
                        "region": v.region,
                        "kv_usage": round(v.kv_usage, 4),
                        "in_flight": v.in_flight,
                        "max_concurrency": v.max_concurrency,
                        "queue_depth": v.queue_depth,
                        "ejected": v.ejected_until_s is not None and v.ejected_until_s > now,
                    }
                    for v in views
                ],
            }
        )
    return {
        "uptime_s": round(now - gw.started_clock_s, 3),
        "window_s": window.get("seconds"),
        "deployments": deployments,
        "rollouts": gw.rollouts.status() if gw.rollouts is not None else [],
        "alerts": gw.alerts.active() if gw.alerts is not None else [],
    }
