"""Where baseline-deviation alerts go: a JSON webhook, or Alertmanager's ``/api/v2/alerts``.

Owns the alert record (the JSON shape ``/shipit/status`` shows and the webhook receives), the
``AlertSink`` protocol, and two sinks over one HTTP seam (``Poster``: the gateway's upstream
client's ``post_json``, or a fake in tests). The webhook gets a POST only when an alert fires or
clears; Alertmanager gets every active alert at each tick (it forgets alerts not re-sent
within their ``endsAt``, as Prometheus does) and each cleared one with ``endsAt`` = now. It
must not decide anything about alerts, only shape and send them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from shipit.telemetry.baseline import BaselineDecision

ALERT_NAME = "ShipitBaselineDeviation"


class Poster(Protocol):
    async def post_json(
        self, url: str, payload: object, *, timeout_s: float
    ) -> tuple[int, bytes]: ...


@dataclass(frozen=True, slots=True)
class AlertChange:
    status: Literal["firing", "resolved"]
    alert: dict[str, Any]


class AlertSink(Protocol):
    async def send(
        self, changes: list[AlertChange], active: list[dict[str, Any]], *, now_s: float
    ) -> None: ...


def alert_record(
    deployment: str, metric: str, d: BaselineDecision, *, since_s: float
) -> dict[str, Any]:
    """One alert as JSON: what, how far off, since when (Unix seconds), and why."""
    base = d.baseline
    return {
        "alert": ALERT_NAME,
        "deployment": deployment,
        "metric": metric,
        "state": d.state.value,
        "value": d.value,
        "baseline": base.median if base else None,
        "baseline_mode": base.mode.value if base else None,
        "score": d.score,
        "since_s": since_s,
        "reason": d.reason,
    }


def iso_utc(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, tz=UTC).isoformat().replace("+00:00", "Z")


class HttpError(Exception):
    """A sink's endpoint answered with an error status."""


async def _post(poster: Poster, url: str, payload: object, timeout_s: float) -> None:
    status, body = await poster.post_json(url, payload, timeout_s=timeout_s)
    if status >= 300:
        raise HttpError(f"POST {url} answered {status}: {body[:200]!r}")


class WebhookSink:
    """``{"source": "shipit", "changes": [{"status", ...alert}], "active": [...]}`` on change."""

    def __init__(self, poster: Poster, url: str, *, timeout_s: float) -> None:
        self._poster, self.url, self._timeout_s = poster, url, timeout_s

    async def send(
        self, changes: list[AlertChange], active: list[dict[str, Any]], *, now_s: float
    ) -> None:
        if not changes:
            return
        payload = {
            "source": "shipit",
            "sent_at": iso_utc(now_s),
            "changes": [{"status": c.status, **c.alert} for c in changes],
            "active": active,
        }
        await _post(self._poster, self.url, payload, self._timeout_s)


def alertmanager_alert(alert: dict[str, Any], *, ends_at_s: float) -> dict[str, Any]:
    """One alert in Alertmanager's API v2 shape (``postableAlert``)."""
    return {
        "labels": {
            "alertname": ALERT_NAME,
            "deployment": alert["deployment"],
            "metric": alert["metric"],
            "severity": "ticket",
            "source": "shipit",
        },
        "annotations": {
            "summary": f"{alert['deployment']}: {alert['metric']} deviates from its baseline",
            "description": alert["reason"],
        },
        "startsAt": iso_utc(alert["since_s"]),
        "endsAt": iso_utc(ends_at_s),
    }


class AlertmanagerSink:
    """POSTs to ``<base>/api/v2/alerts``; active alerts stay alive for ``4 x resend_s``."""

    def __init__(self, poster: Poster, base_url: str, *, timeout_s: float, resend_s: float):
        self._poster, self._timeout_s, self._resend_s = poster, timeout_s, resend_s
        self.url = base_url.rstrip("/") + "/api/v2/alerts"

    async def send(
        self, changes: list[AlertChange], active: list[dict[str, Any]], *, now_s: float
    ) -> None:
        alerts = [alertmanager_alert(a, ends_at_s=now_s + 4 * self._resend_s) for a in active]
        alerts += [
            alertmanager_alert(c.alert, ends_at_s=now_s) for c in changes if c.status == "resolved"
        ]
        if alerts:
            await _post(self._poster, self.url, alerts, self._timeout_s)
