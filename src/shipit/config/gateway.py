"""The user-facing ``shipit.yaml`` for the gateway: deployments, routing, queueing, reliability.

Owns the pydantic models (``extra="forbid"``, units in every name), their defaults, and
``load_config``/``apply_overrides`` (flags beat the file). Every error a user can hit names the
field and the allowed values. It must not open sockets or start anything; ``cli.up`` acts on it.
Autoscaling lives in its own section, ``autoscaling:`` (``config.autoscaling``); without it a
deployment is a fixed fleet of ``replicas``. With it, ``replicas`` (when given) is how many start
and must lie within ``[min_replicas, max_replicas]``; otherwise ``min_replicas`` start.

Example::

    gateway: {port: 8000}
    deployments:
      - name: default
        model: smollm2-135m-instruct
        replicas: 2
        routing: {policy: prefix_cache, prefix_cache: {imbalance_ratio: 1.5}}
        queueing: {max_queue: 512, max_concurrency: 8}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from shipit.config.autoscaling import AutoscalingConfig
from shipit.config.jobs import JobsConfig
from shipit.config.k8s_backend import KubernetesBackendConfig
from shipit.config.kubernetes import KubernetesConfig
from shipit.config.observability import AlertsConfig, SloConfig
from shipit.config.pools import LivePlaneConfig
from shipit.config.ray_backend import RayBackendConfig
from shipit.config.rollout import RolloutSettings
from shipit.config.security import AuthConfig, EdgeLimitsConfig, TlsConfig
from shipit.config.upstream_auth import UpstreamAuthConfig
from shipit.core.errors import ShipitError

RoutingPolicyName = Literal[
    "round_robin",
    "least_outstanding",
    "power_of_two",
    "prefix_cache",
    "lora_affinity",
    "session_affinity",
    "custom",
]
# The presets: named compositions of filters, scorers and a picker (``policy.routing``); what
# ``--routing`` and the ``x-shipit-routing`` header accept. ``custom`` composes the deployment's
# own ``filters`` / ``scorers`` / ``picker``.
ROUTING_PRESETS: tuple[str, ...] = tuple(
    p
    for p in RoutingPolicyName.__args__  # type: ignore[attr-defined]
    if p != "custom"
)
ROUTING_POLICIES: tuple[str, ...] = ROUTING_PRESETS
DEFAULT_MODEL = "smollm2-135m-instruct"  # the engine's default (engine.loader)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PrefixCacheConfig(_Strict):
    """``prefix_cache`` routing: follow cached prefixes unless that overloads a replica."""

    block_size_tokens: int = Field(16, ge=1, description="must match the replicas' KV block size")
    source: Literal["approximate", "kv_events"] = Field(
        "approximate",
        description="approximate: index what was routed; kv_events: the replicas' feeds",
    )
    # The guard: fall back to least-loaded when the best-hit replica carries more than
    # imbalance_ratio x the mean load and at least imbalance_abs_requests more than the least.
    imbalance_ratio: float = Field(1.3, ge=1.0)
    # 8, not 2: at a few requests per replica, Poisson bunching alone exceeds 2 (see
    # docs/gateway.md, "Routing benchmark"), and every diversion recomputes a whole prefix.
    imbalance_abs_requests: int = Field(8, ge=0)
    min_hit_blocks: int = Field(1, ge=1, description="a shorter match counts as no match")
    max_blocks_per_replica: int = Field(
        200_000,
        ge=1,
        description="index size per replica until the replica reports its KV capacity "
        "(vllm:cache_config_info num_gpu_blocks): then that capacity, so the index forgets "
        "what the replica evicted",
    )
    # Queue-aware affinity: when the replica holding the prefix is at its concurrency cap,
    # wait for it only while its expected first token stays within the slack of the best
    # alternative's, for max_affinity_wait_s; past that, only while it is still sooner.
    prefill_us_per_token: float = Field(
        100.0,
        gt=0,
        description="prefill time of one uncached prompt token on a replica, until the router "
        "has measured each replica's own",
    )
    # 8 s, not 2: on a saturated fleet (first tokens tens of seconds away everywhere) a 2 s
    # bound sent long conversations away from their holder and recomputed them; 8 and 16 gave
    # the same replays (docs/gateway.md, "The holder's slack and the wait decision").
    max_affinity_wait_s: float = Field(
        8.0,
        ge=0,
        description="how long a request waits for its full cache holder to save prefill; past "
        "it, it waits on only while the holder's first token is still expected sooner than "
        "elsewhere (0: never waits)",
    )
    # Measured in tokens to compute before a request's first token: the holder keeps it unless
    # it would take more than this x the best alternative (a recomputed prefix also costs the
    # fleet prefill capacity, so the holder gets this much slack). 3, not 2: on a saturated
    # fleet with long shared prompts, 2 sent follow-up turns away and recomputed their prefix
    # (docs/gateway.md, "A real trace").
    token_imbalance_ratio: float = Field(
        3.0, ge=1.0, description="holder vs best alternative, in tokens (or seconds) to compute"
    )
    chars_per_token: float = Field(
        4.0,
        gt=0,
        description="without a tokenizer, text prompts are hashed in chunks of this many "
        "chars per token",
    )
    tokenizer: str = Field(
        "auto",
        description="how the gateway tokenizes text and chat prompts to hash them exactly as "
        "the replicas do: auto (the deployment's model's tokenizer when the gateway can read "
        "it), none (always approximate by characters) or a path (a Hugging Face tokenizer "
        "directory or a .gguf file)",
    )
    kv_event_poll_s: float = Field(0.5, gt=0)
    kv_events_feed: Literal["http", "zmq"] = Field(
        "http",
        description="with source kv_events, where each replica's feed is read: http (shipit "
        "replicas' GET /v1/kv_events, polled) or zmq (vLLM's KV-event publisher, "
        "--kv-events-config with publisher zmq)",
    )
    kv_events_endpoint: str = Field(
        "tcp://{host}:5557",
        description="zmq feed: the publisher's address; {host} is the replica URL's host",
    )
    kv_events_replay_endpoint: str | None = Field(
        None,
        description="zmq feed: the publisher's replay address (vLLM's replay_endpoint, e.g. "
        "tcp://{host}:5558), to fetch missed batches; without it a gap rebuilds the "
        "replica's index from the feed",
    )
    kv_events_topic: str = Field("", description="zmq feed: the topic vLLM publishes under")

    @field_validator("kv_events_endpoint", "kv_events_replay_endpoint")
    @classmethod
    def _zmq_endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("tcp://", "ipc://")):
            raise ValueError(
                f"{value!r} is not a ZeroMQ address: give tcp://HOST:PORT (HOST may be {{host}}, "
                "the replica URL's host), e.g. tcp://{host}:5557, or ipc://PATH"
            )
        return value

    @field_validator("tokenizer", mode="before")
    @classmethod
    def _tokenizer_choice(cls, value: object) -> object:
        if not isinstance(value, str) or not value.strip():
            raise ValueError(
                f"routing.prefix_cache.tokenizer is {value!r}; give auto (the model's own "
                "tokenizer when the gateway can read it), none (hash text by characters) or "
                "the path of a Hugging Face tokenizer directory or a .gguf file"
            )
        value = value.strip()
        return value.lower() if value.lower() in ("auto", "none") else value


class SessionAffinityConfig(_Strict):
    header: str = "x-shipit-session"
    virtual_nodes: int = Field(64, ge=1)
    # Bounded load (Mirrokni et al.): a replica takes a session only below this x mean load.
    load_bound: float = Field(1.25, ge=1.0)


class LoraAffinityConfig(_Strict):
    adapters: dict[str, str] = Field(
        default_factory=dict, description="adapter name -> path on the replicas' filesystem"
    )
    # Send to a replica holding the adapter while its load is below this; else load it elsewhere.
    max_load_for_affinity: float = Field(1.0, gt=0)


class ScorerConfig(_Strict):
    """One weighted scorer of a ``custom`` routing composition."""

    name: str = Field(description="a scorer of policy.routing.SCORERS: load, prefix_cache, ...")
    weight: float = Field(1.0, ge=0, description="its share of a replica's total score")


class RoutingConfig(_Strict):
    """How a deployment picks a replica: a preset ``policy``, or ``custom`` with its own
    ``filters`` → weighted ``scorers`` → ``picker``. Names are checked against the registries
    of ``policy.routing`` when the router is built (they are open for registration)."""

    policy: RoutingPolicyName = "least_outstanding"
    filters: list[str] | None = Field(
        None, description="custom only; default [routable, free_slot, version_weight]"
    )
    scorers: list[ScorerConfig] | None = Field(
        None, description="custom only; default [{name: load, weight: 1}]"
    )
    picker: str | None = Field(None, description="custom only; default best")
    version_weights: dict[str, float] = Field(
        default_factory=dict,
        description="traffic share per ReplicaRecord.version (rollouts); empty: all alike",
    )
    allow_override: bool = Field(True, description="honour the x-shipit-routing header")
    seed: int = 0
    prefix_cache: PrefixCacheConfig = PrefixCacheConfig()
    session_affinity: SessionAffinityConfig = SessionAffinityConfig()
    lora_affinity: LoraAffinityConfig = LoraAffinityConfig()

    @model_validator(mode="after")
    def _composition_only_for_custom(self) -> Self:
        if self.policy != "custom":
            for name in ("filters", "scorers", "picker"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"routing.{name} is read only with policy: custom (policy is "
                        f"{self.policy!r}); set policy: custom to compose, or drop {name}"
                    )
        for version, weight in self.version_weights.items():
            if weight < 0:
                raise ValueError(
                    f"routing.version_weights[{version!r}] is {weight}; weights must be >= 0"
                )
        if self.version_weights and not any(self.version_weights.values()):
            raise ValueError(
                "routing.version_weights are all 0: no version would get traffic; give at "
                "least one version a positive weight, or drop version_weights"
            )
        return self


class QueueingConfig(_Strict):
    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data: object) -> object:
        if isinstance(data, dict) and "concurrency_target" in data:
            raise ValueError(
                "queueing.concurrency_target was renamed max_concurrency (the most requests "
                "in flight on one replica); the autoscaler's aim is "
                "autoscaling.target_concurrency"
            )
        return data

    max_queue: int = Field(1024, ge=0, description="requests waiting at the gateway; then 429")
    max_concurrency: int = Field(8, ge=1, description="most requests in flight per replica")
    queue_timeout_s: float = Field(60.0, gt=0, description="longest wait for a replica slot")
    default_priority: int = 0
    retry_after_s: int = Field(1, ge=0, description="the Retry-After a 429 carries")
    # Scale from zero / cold start: while no replica is ready, requests are held (not failed).
    cold_start_hold_s: float = Field(
        120.0, gt=0, description="longest hold while no replica is ready; then 503"
    )
    cold_start_keepalive_s: float = Field(
        3.0, gt=0, description="SSE comment interval for held streaming requests"
    )
    cold_start_retry_after_s: int = Field(
        5, ge=1, description="the Retry-After a 503 carries when the hold ran out"
    )


class RetryConfig(_Strict):
    max_attempts: int = Field(3, ge=1, description="tries per request, first one included")
    budget_ratio: float = Field(0.2, ge=0, description="retries allowed per request sent")
    budget_min_per_s: float = Field(10.0, ge=0, description="retries always allowed per second")
    connect_timeout_s: float = Field(2.0, gt=0)
    first_byte_timeout_s: float = Field(
        60.0, gt=0, description="streamed request sent -> response headers (its first byte)"
    )
    unary_timeout_s: float = Field(
        600.0,
        gt=0,
        description="non-streamed request sent -> response headers: a replica (shipit's, "
        "vLLM's) sends them with the body, when the whole answer is done",
    )
    read_timeout_s: float = Field(300.0, gt=0, description="longest gap between chunks")

    def response_timeout_s(self, *, stream: bool) -> float:
        """How long a request sent to a replica may wait for the response to start: the first
        byte of a stream, or the whole of a plain answer (its headers come with its body)."""
        return self.first_byte_timeout_s if stream else self.unary_timeout_s


class OutlierConfig(_Strict):
    consecutive_failures: int = Field(3, ge=1)
    base_ejection_s: float = Field(5.0, gt=0)
    max_ejection_s: float = Field(60.0, gt=0)
    max_ejected_fraction: float = Field(0.5, ge=0, le=1.0)


class HealthCheckConfig(_Strict):
    """Active health checks (``GET /health`` every ``health_interval_s``): how many probes in a
    row change a replica's state. One slow or refused probe is not an outage; several are."""

    unhealthy_threshold: int = Field(
        3, ge=1, description="failed probes in a row that take a ready replica out of routing"
    )
    healthy_threshold: int = Field(
        1,
        ge=1,
        description="ok probes in a row that bring an unhealthy replica back (a starting "
        "replica is ready at its first)",
    )


class DeploymentConfig(_Strict):
    name: str = "default"
    model: str = DEFAULT_MODEL
    served_model_name: str | None = Field(
        None, description="the name clients send as `model` (default: model)"
    )
    replicas: int = Field(2, ge=0, description="local replica processes to start")
    backend: Literal["local", "kubernetes", "ray"] = Field(
        "local",
        description="where shipit starts replicas: local processes, Kubernetes pods or Ray "
        "actors (the ray extra: pip install 'shipit[ray]')",
    )
    kubernetes_backend: KubernetesBackendConfig = Field(
        default_factory=KubernetesBackendConfig,
        description="backend: kubernetes: API access, headless Service, node health (namespace, "
        "image and node pool come from the top-level kubernetes: section)",
    )
    ray_backend: RayBackendConfig = Field(
        default_factory=RayBackendConfig,
        description="backend: ray: the cluster's address, what each replica reserves on its "
        "node (CPUs, GPUs, memory, custom resources, capacity pool) and placement",
    )
    replica_urls: list[str] = Field(default_factory=list, description="external replicas")
    upstream_auth: UpstreamAuthConfig | None = Field(
        None, description="credentials sent to every replica (config.upstream_auth)"
    )
    simulate: str | None = Field(None, description="GPU:MODEL, a simulated accelerator")
    replica_args: list[str] = Field(default_factory=list, description="extra replica flags")
    routing: RoutingConfig = RoutingConfig()
    queueing: QueueingConfig = QueueingConfig()
    retries: RetryConfig = RetryConfig()
    outlier: OutlierConfig = OutlierConfig()
    health_interval_s: float = Field(1.0, gt=0)
    health: HealthCheckConfig = HealthCheckConfig()
    startup_timeout_s: float = Field(300.0, gt=0)
    drain_timeout_s: float = Field(30.0, ge=0)
    autoscaling: AutoscalingConfig | None = Field(
        None, description="scale between min_replicas and max_replicas; absent: fixed fleet"
    )
    slo: SloConfig | None = Field(None, description="goodput thresholds (config.observability)")
    rollout: RolloutSettings = Field(
        default_factory=RolloutSettings, description="versions and rollouts (config.rollout)"
    )

    @model_validator(mode="after")
    def _replicas_within_bounds(self) -> Self:
        a = self.autoscaling
        given = a is not None and "replicas" in self.model_fields_set
        if given and a is not None and not a.min_replicas <= self.replicas <= a.max_replicas:
            raise ValueError(
                f"replicas ({self.replicas}) is how many start under autoscaling and must "
                f"lie between min_replicas ({a.min_replicas}) and max_replicas "
                f"({a.max_replicas}); drop replicas / --replicas, or change the bounds"
            )
        return self

    @property
    def model_name(self) -> str:
        """The base model's name in the API."""
        return self.served_model_name or self.model

    @property
    def initial_replicas(self) -> int:
        """Local replicas to start: ``replicas``, or ``min_replicas`` under autoscaling when
        ``replicas`` was not given."""
        a = self.autoscaling
        if a is not None and "replicas" not in self.model_fields_set:
            return a.min_replicas
        return self.replicas


class GatewayServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    graceful_shutdown_s: float = Field(30.0, ge=0)
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="gateway processes sharing the port (SO_REUSEPORT); the first owns the "
        "replicas, each has its own queue and prefix index, and a replica's max_concurrency "
        "is split between them",
    )
    auth: AuthConfig = AuthConfig()
    limits: EdgeLimitsConfig = EdgeLimitsConfig()
    tls: TlsConfig = TlsConfig()


class ShipitConfig(_Strict):
    gateway: GatewayServerConfig = GatewayServerConfig()
    deployments: list[DeploymentConfig] = Field(default_factory=lambda: [DeploymentConfig()])
    alerts: AlertsConfig = AlertsConfig()
    jobs: JobsConfig = JobsConfig()
    # read by `shipit render k8s`, and by `shipit up` for deployments with backend: kubernetes
    kubernetes: KubernetesConfig = KubernetesConfig()
    # written by `shipit up --fleet` into each plane's config: its pools and spot pre-emptions
    plane: LivePlaneConfig | None = None

    @field_validator("deployments")
    @classmethod
    def _unique_names(cls, deployments: list[DeploymentConfig]) -> list[DeploymentConfig]:
        names = [d.name for d in deployments]
        if len(set(names)) != len(names):
            raise ValueError(f"deployment names must be unique, got {names}")
        if not deployments:
            raise ValueError("at least one deployment is needed")
        return deployments


class ConfigError(ShipitError):
    """``shipit.yaml`` or a flag is invalid; the message names the field."""


def _explain(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    first_field = None
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        first_field = first_field or loc
        msg = err["msg"]
        if err["type"] == "literal_error":
            msg = f"{msg} (got {err.get('input')!r})"
        elif err["type"] == "extra_forbidden":
            msg = "unknown field; check the spelling against docs/gateway.md"
        lines.append(f"  {loc}: {msg}")
    return ConfigError(f"invalid {source}:\n" + "\n".join(lines), field=first_field)


def parse_config(data: dict[str, Any] | None, *, source: str = "config") -> ShipitConfig:
    try:
        return ShipitConfig.model_validate(data or {})
    except ValidationError as exc:
        raise _explain(exc, source) from None


def load_config(path: str | Path | None) -> ShipitConfig:
    """Read ``shipit.yaml``; ``None`` gives the defaults (one deployment of the default model)."""
    if path is None:
        return ShipitConfig()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist", field="config")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {exc}", field="config") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a mapping at the top level", field="config")
    return parse_config(data, source=str(p))


def apply_overrides(
    config: ShipitConfig,
    *,
    port: int | None = None,
    host: str | None = None,
    deployment: dict[str, Any] | None = None,
) -> ShipitConfig:
    """Flags beat the file: ``deployment`` overrides apply to the first deployment (dotted keys
    such as ``routing.policy`` reach nested sections)."""
    # exclude_unset keeps "given" apart from "defaulted" (``replicas`` under autoscaling).
    data = config.model_dump(exclude_unset=True)
    if port is not None:
        data.setdefault("gateway", {})["port"] = port
    if host is not None:
        data.setdefault("gateway", {})["host"] = host
    if deployment:
        deployments = data.setdefault("deployments", [{}])
        for key, value in deployment.items():
            target = deployments[0]
            *parents, leaf = key.split(".")
            for part in parents:
                if target.get(part) is None:
                    target[part] = {}
                target = target[part]
            target[leaf] = value
    return parse_config(data, source="flags")
