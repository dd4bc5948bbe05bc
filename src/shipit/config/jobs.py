"""User-facing settings of async jobs: the Files + Batches API and single async requests.

Owns the pydantic model of the top-level ``jobs:`` block of ``shipit.yaml``: where the durable
store lives, how job requests share the fleet with interactive traffic (lowest priority, a
bounded share of capacity while interactive requests are in flight), leases (how soon work
of a crashed gateway is taken over) and webhook delivery. ``extra="forbid"`` and units in
every name. It must not open files or sockets; ``gateway.jobs_service`` acts on it.

Example::

    jobs: {store_path: /var/lib/shipit/jobs.sqlite3, max_share: 0.3}
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Lower priorities run first (``x-shipit-priority``); job requests wait behind all of them.
LOWEST_PRIORITY = 1_000_000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WebhookConfig(_Strict):
    """Where async requests may ask to be called back, and how the call is signed and retried."""

    secret_env: str | None = Field(
        None,
        description="environment variable holding the HMAC-SHA256 signing key; "
        "unset: webhooks are refused",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list, description="hosts a webhook URL may name; empty: any host"
    )
    max_attempts: int = Field(8, ge=1, description="deliveries tried before giving up")
    backoff_base_s: float = Field(1.0, gt=0, description="first retry delay; doubles each time")
    backoff_max_s: float = Field(300.0, gt=0, description="longest delay between attempts")
    timeout_s: float = Field(10.0, gt=0, description="one delivery attempt's time limit")


class JobsConfig(_Strict):
    enabled: bool = Field(True, description="serve /v1/files, /v1/batches and /v1/async")
    store_path: str | None = Field(
        None,
        description="the SQLite file; default $SHIPIT_HOME/jobs-<gateway port>.sqlite3 "
        "(~/.cache/shipit without SHIPIT_HOME)",
    )
    store_url_env: str | None = Field(
        None,
        description="environment variable holding a postgresql:// URL: a server-backed store "
        "several gateways share (needs the postgres extra); unset: the SQLite file",
    )
    priority: int = Field(LOWEST_PRIORITY, description="admission priority of job requests")
    max_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="most of the fleet's slots jobs hold while interactive requests run or wait",
    )
    idle_share: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="most of the slots jobs hold with no interactive load; below 1 keeps "
        "slots free for the next interactive request",
    )
    idle_after_s: float = Field(
        5.0,
        ge=0.0,
        description="interactive quiet this long before jobs may take idle_share of the slots",
    )
    ttft_tolerance: float | None = Field(
        0.1,
        gt=0.0,
        description="jobs back off while interactive streams' time to first token runs more "
        "than this fraction above its level with no job running (measured by pausing new job "
        "requests briefly every calibrate_every_s); null: no guard, jobs keep to max_share",
    )
    finish_by: float | None = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="with interactive load, batch lines run only as many at once as it takes "
        "to finish each batch by this fraction of its completion window (0.5: a 24h batch "
        "within 12 h), from the measured time a line takes, earliest window first, within "
        "max_share; idle capacity is still taken whole. null: jobs take max_share whatever "
        "their window",
    )
    yield_to_interactive: bool = Field(
        True,
        description="an interactive request that has to wait for a slot stops the youngest job "
        "line of its deployment, which goes back to the queue (no attempt counted)",
    )
    calibrate_every_s: float = Field(
        60.0, gt=0.0, description="how often the TTFT guard re-measures TTFT without jobs"
    )
    lease_s: float = Field(
        30.0, gt=0, description="a claimed line is taken over by another gateway after this"
    )
    poll_interval_s: float = Field(0.2, gt=0, description="how often the worker looks for work")
    max_attempts: int = Field(5, ge=1, description="tries per line when replicas fail (5xx)")
    max_file_bytes: int = Field(200 * 1024 * 1024, ge=1, description="largest upload")
    scale_for_jobs: bool = Field(
        True,
        description="with one autoscaled deployment, queued job lines count as queued requests",
    )
    webhook: WebhookConfig = WebhookConfig()
