"""User-facing observability settings: per-deployment SLOs and baseline-alert delivery.

Owns the pydantic models of a deployment's ``slo:`` block (the thresholds a request must meet to
count towards goodput, ``shipit_requests_slo_met_total``) and of the top-level ``alerts:`` block
(how often the gateway samples its own metrics for the baseline-deviation detector, and where
firing alerts are sent). ``extra="forbid"`` and units in every name, like the rest of
``shipit.yaml``. It must not open sockets or start anything; ``services.alerts`` acts on it.

Example::

    alerts: {sample_interval_s: 10, alertmanager_url: http://127.0.0.1:9093}
    deployments:
      - name: chat
        slo: {ttft_p99_ms: 500, tpot_p99_ms: 50}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SloConfig(_Strict):
    """Per-request thresholds; a 2xx request within all of them counts as good (goodput).

    A non-streamed request's first token reaches the client with the whole body, so its TTFT
    is its end-to-end latency and it has no TPOT.
    """

    ttft_p99_ms: float | None = Field(None, gt=0, description="time to first token, ms")
    tpot_p99_ms: float | None = Field(None, gt=0, description="time per output token, ms")


class AlertsConfig(_Strict):
    """Baseline-deviation alerts computed by the gateway from its own metrics."""

    enabled: bool = True
    sample_interval_s: float = Field(
        10.0, gt=0, description="how often latency, error rate and throughput are sampled"
    )
    min_requests_per_sample: int = Field(
        5, ge=1, description="fewer requests in an interval: latency samples are skipped"
    )
    webhook_url: str | None = Field(None, description="POST JSON here when an alert changes")
    alertmanager_url: str | None = Field(
        None, description="Alertmanager base URL; alerts go to /api/v2/alerts"
    )
    delivery_timeout_s: float = Field(5.0, gt=0)

    @field_validator("webhook_url", "alertmanager_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
        return value
