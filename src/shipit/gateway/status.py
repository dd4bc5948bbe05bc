"""``/shipit/status``: what ``shipit up`` prints and operators read, as JSON: when the gateway
started, which event loop serves, every deployment (policy, queue, autoscaler, routing
decisions) and replica (state, load, ejection, adapters), the active alerts."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from shipit.core.urls import redact_url
from shipit.gateway.observability import event_loop_name

if TYPE_CHECKING:
    from shipit.gateway.app import Gateway


def fleet_status(gw: Gateway, window_s: float | None = None) -> dict[str, Any]:
    """Every deployment and replica; with ``window_s`` (``?window_s=10``), the request
    figures over that window too."""
    now = gw.clock.now()
    out: dict[str, Any] = {
        "started_at_s": round(gw.started_at_s, 3),
        "uptime_s": round(now - gw.started_clock_s, 3),
        "event_loop": event_loop_name(),
        "pid": os.getpid(),  # which gateway process answered, under gateway.workers > 1
        "deployments": [],
    }
    for name, router in gw.routers.items():
        out["deployments"].append(
            {
                "name": name,
                "model": gw.deployments[name].model_name,
                "policy": router.default_policy,
                "queue_depth": router.queued(),
                "autoscaling": a.status() if (a := gw.autoscalers.get(name)) else None,
                "decisions": {
                    f"{p}/{r}": n for (p, r), n in sorted(router.decisions_by_reason.items())
                },
                "replicas": [
                    {
                        "id": v.replica_id,
                        "url": redact_url(v.url),
                        "version": v.version,
                        "state": v.state.value,
                        "pool": v.pool.value,
                        "in_flight": v.in_flight,
                        "state_for_s": round(now - v.state_since_s, 3),
                        "ejected_until_s": v.ejected_until_s
                        if v.ejected_until_s is not None and v.ejected_until_s > now
                        else None,
                        "adapters": sorted(v.adapters),
                    }
                    for v in router.views()
                ],
            }
        )
    out["alerts"] = gw.alerts.active() if gw.alerts is not None else []
    if gw.jobs.runner is not None:  # the job worker runs (a jobs call was made)
        out["jobs"] = gw.jobs.status()
    if gw.pools is not None:  # a plane of a live fleet
        out["pools"] = gw.pools.status()
    if window_s is not None:
        out["window"] = gw.history.window(window_s)
    return out
