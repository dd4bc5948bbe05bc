"""Wires the gateway's own metrics to the baseline-alert loop, the cost gauges and alert sinks.

Owns building one ``services.alerts.AlertService`` for a gateway from ``shipit.yaml``'s
``alerts:`` block: it reads the gateway's registry, prices each deployment's replicas from the
planner's data (``services.cost``; simulated GPUs only, CPU replicas cost 0), and sends changes
through the gateway's upstream HTTP client to the configured webhook and/or Alertmanager. The
client exists only once the lifespan has started, hence the lazy ``Poster``. It must not run
anything itself: the gateway's lifespan starts ``AlertService.run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Mapping, Sequence

from prometheus_client.samples import Sample

from shipit.config.gateway import ShipitConfig
from shipit.gateway.metrics import GatewayMetrics
from shipit.services.alert_sinks import AlertmanagerSink, AlertSink, Poster, WebhookSink
from shipit.services.alerts import AlertService, CostInputs
from shipit.services.cost import replica_usd_per_hour
from shipit.services.router import RouterService


class LazyPoster:
    """``post_json`` through whatever client ``get()`` returns at call time."""

    def __init__(self, get: Callable[[], Poster]) -> None:
        self._get = get

    async def post_json(self, url: str, payload: object, *, timeout_s: float) -> tuple[int, bytes]:
        return await self._get().post_json(url, payload, timeout_s=timeout_s)


def build_alert_service(
    config: ShipitConfig,
    metrics: GatewayMetrics,
    routers: Mapping[str, RouterService],
    poster: Callable[[], Poster],
) -> AlertService | None:
    """The gateway's alert loop, or ``None`` when ``alerts.enabled`` is false."""
    a = config.alerts
    if not a.enabled:
        return None
    http = LazyPoster(poster)
    sinks: list[AlertSink] = []
    if a.webhook_url:
        sinks.append(WebhookSink(http, a.webhook_url, timeout_s=a.delivery_timeout_s))
    if a.alertmanager_url:
        sinks.append(
            AlertmanagerSink(
                http,
                a.alertmanager_url,
                timeout_s=a.delivery_timeout_s,
                resend_s=a.sample_interval_s,
            )
        )

    def read() -> Iterator[Sample]:
        for family in metrics.registry.collect():
            yield from family.samples

    def states() -> dict[str, Sequence[str]]:
        return {n: [r.state.value for r in rt.registry.records()] for n, rt in routers.items()}

    prices = {d.name: replica_usd_per_hour(d.simulate) for d in config.deployments}
    return AlertService(
        config=a,
        read=read,
        metrics=metrics.alerts,
        sinks=sinks,
        cost=(metrics.cost, CostInputs(prices, states)),
    )


def event_loop_name() -> str:
    """The running event loop's implementation ("uvloop" or "asyncio"), for operators checking
    that the fast loop is the one serving (``/shipit/status``)."""
    try:
        module = type(asyncio.get_running_loop()).__module__
    except RuntimeError:
        return "none"
    return module.split(".")[0]
