"""The metric catalog: every metric shipit exposes, defined once as data.

Owns names, kinds, help texts, label names (and the values a label may take where that set is
closed), units and histogram buckets, grouped by the component that exports them. Collectors
(``telemetry.instruments``), alert rules (``telemetry.rules``), dashboards
(``telemetry.dashboards``) and docs are all derived from this table, so a metric renamed here is
renamed everywhere. This module holds data only: it must not create collectors, touch a registry
or read anything at import time.

Naming: gateway and control-plane metrics are ``shipit_*`` and follow Prometheus conventions
(base units, ``_seconds``/``_bytes``/``_total`` suffixes); replica metrics keep vLLM's exact names
so one dashboard reads the embedded engine and vLLM alike.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator

from shipit.telemetry.metric_spec import Component, MetricKind, MetricSpec, Update, _spec

# Re-exported: the catalog is where users of a metric look its kind and component up.
__all__ = ["Component", "MetricKind", "MetricSpec", "Update"]


# Histogram buckets, in seconds. Each SLO threshold the rules use must be a boundary here
# (``rules.py`` checks it), because a burn rate reads ``_bucket{le="<threshold>"}``.
TTFT_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
    1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0,
)  # fmt: skip
TPOT_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.06, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
E2E_BUCKETS_S: tuple[float, ...] = (
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0,
    45.0, 60.0, 90.0, 120.0, 180.0, 300.0, 600.0,
)  # fmt: skip
QUEUE_WAIT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
)  # fmt: skip
COLD_START_BUCKETS_S: tuple[float, ...] = (
    1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
    180.0, 300.0, 600.0, 900.0, 1800.0,
)  # fmt: skip
# vLLM's own buckets (vllm/v1/metrics/loggers.py), so both engines' histograms aggregate.
VLLM_TTFT_BUCKETS_S: tuple[float, ...] = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
VLLM_ITL_BUCKETS_S: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0,
    2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
VLLM_E2E_BUCKETS_S: tuple[float, ...] = (
    0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
    50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
)  # fmt: skip


_C, _G, _H = MetricKind.COUNTER, MetricKind.GAUGE, MetricKind.HISTOGRAM
_GW, _CP, _REP = Component.GATEWAY, Component.CONTROL_PLANE, Component.REPLICA
_SNAP = Update.SNAPSHOT

# --- gateway -----------------------------------------------------------------------------------
REQUESTS = _spec(
    "shipit_requests_total", _C, _GW, "requests",
    "Answered requests by HTTP status code sent (429: refused at admission; 499: client went "
    "away; a stream that fails after its headers counts as 502) and routing policy.",
    ("deployment", "status", "policy"),
)  # fmt: skip
ADMISSION_REJECTIONS = _spec(
    "shipit_admission_rejections_total", _C, _GW, "requests",
    "Requests refused at admission (queue full, deadline), by reason.", ("deployment", "reason"),
)  # fmt: skip
MIDSTREAM_ERRORS = _spec(
    "shipit_midstream_errors_total", _C, _GW, "requests",
    "Streams ended with an SSE error event after the upstream failed mid-response.",
)  # fmt: skip
GOOD_REQUESTS = _spec(
    "shipit_requests_slo_met_total", _C, _GW, "requests",
    "Requests that completed and met every SLO of their deployment (goodput numerator).",
)  # fmt: skip
TTFT = _spec(
    "shipit_time_to_first_token_seconds", _H, _GW, "seconds",
    "Request received to first content token sent to the client.", buckets_s=TTFT_BUCKETS_S,
)  # fmt: skip
TPOT = _spec(
    "shipit_time_per_output_token_seconds", _H, _GW, "seconds",
    "Per request: (E2E - TTFT) / (output tokens - 1).", buckets_s=TPOT_BUCKETS_S,
)  # fmt: skip
ITL = _spec(
    "shipit_inter_token_latency_seconds", _H, _GW, "seconds",
    "Every gap between streamed chunks, pooled across requests.", buckets_s=TPOT_BUCKETS_S,
)  # fmt: skip
E2E = _spec(
    "shipit_e2e_request_latency_seconds", _H, _GW, "seconds",
    "Request received to last byte sent.", buckets_s=E2E_BUCKETS_S,
)  # fmt: skip
PROMPT_TOKENS = _spec(
    "shipit_prompt_tokens_total", _C, _GW, "tokens", "Prompt tokens of finished requests."
)
OUTPUT_TOKENS = _spec(
    "shipit_output_tokens_total", _C, _GW, "tokens", "Output tokens streamed to clients."
)
QUEUE_DEPTH = _spec(
    "shipit_queue_depth", _G, _GW, "requests",
    "Requests waiting in the admission queue.", update=_SNAP,
)  # fmt: skip
QUEUE_WAIT = _spec(
    "shipit_queue_wait_seconds", _H, _GW, "seconds",
    "Time a request spent in the admission queue before routing.",
    buckets_s=QUEUE_WAIT_BUCKETS_S,
)  # fmt: skip
REPLICA_IN_FLIGHT = _spec(
    "shipit_replica_in_flight", _G, _GW, "requests",
    "Requests the gateway has outstanding on one replica.", ("deployment", "replica"),
    update=_SNAP,
)  # fmt: skip
REPLICA_STATE = _spec(
    "shipit_replica_state", _G, _GW, "boolean",
    "1 for the state each replica is in, as the gateway's router sees it.",
    ("deployment", "replica", "state"), update=_SNAP,
)  # fmt: skip
RETRIES = _spec(
    "shipit_retries_total", _C, _GW, "retries",
    "Retries before the first byte, by cause.", ("deployment", "reason"),
)  # fmt: skip
EJECTIONS = _spec(
    "shipit_outlier_ejections_total", _C, _GW, "ejections",
    "Replicas ejected by passive outlier detection.", ("deployment", "replica"),
    update=_SNAP,
)  # fmt: skip
ROUTING_DECISIONS = _spec(
    "shipit_routing_decisions_total", _C, _GW, "decisions",
    "Routing decisions by policy and the reason the policy gave (prefix_hit, least_loaded, ...).",
    ("deployment", "policy", "reason"),
)  # fmt: skip
# Prefix-cache routing checked against the replicas: what the index predicted for the replica a
# request went to vs the cached prompt tokens that replica reported (usage.prompt_tokens_details).
_HASHING = ("hashing", ("token", "text"))
PREFIX_PREDICTIONS = _spec(
    "shipit_prefix_cache_predictions_total", _C, _GW, "requests",
    "Answers whose replica reported cached tokens, by hashing mode and whether the index's "
    "predicted hit was exact, over or under the replica's (in KV blocks).",
    ("deployment", "hashing", "outcome"),
    label_values=(_HASHING, ("outcome", ("exact", "over", "under"))),
)  # fmt: skip
PREFIX_BLOCKS = _spec(
    "shipit_prefix_cache_blocks_total", _C, _GW, "blocks",
    "Prompt KV blocks cached on the chosen replica: predicted by the index at routing time, "
    "reported by the replica (cached tokens / block size).", ("deployment", "hashing", "source"),
    label_values=(_HASHING, ("source", ("predicted", "reported"))),
)  # fmt: skip
PREFIX_MISPREDICTED = _spec(
    "shipit_prefix_cache_mispredicted_blocks_total", _C, _GW, "blocks",
    "Sum over answers of |predicted - reported| cached blocks.", ("deployment", "hashing"),
    label_values=(_HASHING,),
)  # fmt: skip

# --- control plane -----------------------------------------------------------------------------
_REPLICA_STATES = ("starting", "ready", "draining", "cordoned", "failed")
REPLICAS = _spec(
    "shipit_replicas", _G, _CP, "replicas",
    "Replicas of a deployment by lifecycle state.", ("deployment", "state"),
    label_values=(("state", _REPLICA_STATES),),
)  # fmt: skip
REPLICAS_DESIRED = _spec(
    "shipit_replicas_desired", _G, _CP, "replicas", "Replicas the autoscaler currently wants."
)
SCALE_EVENTS = _spec(
    "shipit_scale_events_total", _C, _CP, "events",
    "Autoscaler decisions that changed the desired replica count.", ("deployment", "direction"),
    label_values=(("direction", ("up", "down")),),
)  # fmt: skip
COLD_START = _spec(
    "shipit_cold_start_seconds", _H, _CP, "seconds",
    "Replica start requested to replica ready (all phases).", buckets_s=COLD_START_BUCKETS_S,
)  # fmt: skip
COLD_START_PHASE = _spec(
    "shipit_cold_start_phase_seconds", _H, _CP, "seconds",
    "Duration of one phase of a replica's cold start.", ("deployment", "phase"),
    buckets_s=COLD_START_BUCKETS_S,
    label_values=(
        (
            "phase",
            (
                "schedule", "pull", "container_start", "process_start", "imports",
                "load_weights", "warmup", "health",
            ),
        ),
    ),
)  # fmt: skip
NODE_CORDONS = _spec(
    "shipit_node_cordons_total", _C, _CP, "nodes",
    "Kubernetes nodes shipit cordoned after replica failures on them.", ("deployment", "reason"),
    label_values=(("reason", ("hardware_error", "repeated_failures")),),
)  # fmt: skip
REQUESTS_HELD = _spec(
    "shipit_requests_held", _G, _CP, "requests",
    "Requests held (not failed) while a deployment scales from zero.",
)  # fmt: skip

# --- replica (vLLM names; label model_name) ----------------------------------------------------
_MODEL = ("model_name",)
VLLM_RUNNING = _spec(
    "vllm:num_requests_running", _G, _REP, "requests",
    "Requests in model execution batches.", _MODEL, update=_SNAP,
)  # fmt: skip
VLLM_WAITING = _spec(
    "vllm:num_requests_waiting", _G, _REP, "requests",
    "Requests waiting to be processed.", _MODEL, update=_SNAP,
)  # fmt: skip
VLLM_KV_USAGE = _spec(
    "vllm:kv_cache_usage_perc", _G, _REP, "ratio",
    "KV-cache usage; 1 means 100 percent.", _MODEL, update=_SNAP,
)  # fmt: skip
VLLM_PREFIX_QUERIES = _spec(
    "vllm:prefix_cache_queries_total", _C, _REP, "tokens",
    "Prefix-cache queries, in tokens.", _MODEL, update=_SNAP,
)  # fmt: skip
VLLM_PREFIX_HITS = _spec(
    "vllm:prefix_cache_hits_total", _C, _REP, "tokens",
    "Prefix-cache hits, in tokens.", _MODEL, update=_SNAP,
)  # fmt: skip
VLLM_PREEMPTIONS = _spec(
    "vllm:num_preemptions_total", _C, _REP, "preemptions",
    "Cumulative number of preemptions.", _MODEL, update=_SNAP,
)  # fmt: skip
VLLM_PROMPT_TOKENS = _spec(
    "vllm:prompt_tokens_total", _C, _REP, "tokens",
    "Prefill tokens processed.", _MODEL, update=_SNAP,
)  # fmt: skip
VLLM_GENERATION_TOKENS = _spec(
    "vllm:generation_tokens_total", _C, _REP, "tokens",
    "Generation tokens processed.", _MODEL, update=_SNAP,
)  # fmt: skip
VLLM_TTFT = _spec(
    "vllm:time_to_first_token_seconds", _H, _REP, "seconds",
    "Time to first token, in seconds.", _MODEL, buckets_s=VLLM_TTFT_BUCKETS_S,
)  # fmt: skip
VLLM_ITL = _spec(
    "vllm:inter_token_latency_seconds", _H, _REP, "seconds",
    "Time between output tokens, in seconds.", _MODEL, buckets_s=VLLM_ITL_BUCKETS_S,
)  # fmt: skip
VLLM_E2E = _spec(
    "vllm:e2e_request_latency_seconds", _H, _REP, "seconds",
    "End-to-end request latency, in seconds.", _MODEL, buckets_s=VLLM_E2E_BUCKETS_S,
)  # fmt: skip
VLLM_REQUEST_SUCCESS = _spec(
    "vllm:request_success_total", _C, _REP, "requests",
    "Finished requests, by finish reason.", ("model_name", "finished_reason"),
)  # fmt: skip
VLLM_LORA_INFO = _spec(
    "vllm:lora_requests_info", _G, _REP, "info",
    "Running and waiting LoRA adapters; the value is the scrape time.",
    ("model_name", "max_lora", "running_lora_adapters", "waiting_lora_adapters"), update=_SNAP,
)  # fmt: skip
VLLM_CACHE_CONFIG = _spec(
    "vllm:cache_config_info", _G, _REP, "info",
    "The KV cache's configuration; the value is 1. num_gpu_blocks sizes the gateway's prefix "
    "index for this replica.",
    ("model_name", "block_size", "num_gpu_blocks"), update=_SNAP,
)  # fmt: skip
REPLICA_ERRORS = _spec(
    "shipit_replica_errors_total", _C, _REP, "responses",
    "Error responses a replica sent (4xx and 5xx), by HTTP status and error code: refused "
    "input, refused admin calls, and failures, which also close the connection.",
    ("model_name", "status", "code"),
)  # fmt: skip

# --- process and accelerator (scrape-time collectors in telemetry.process) ---------------------
_PROC = ("component",)
PROCESS_CPU = _spec(
    "shipit_process_cpu_seconds_total", _C, Component.PROCESS, "seconds",
    "User plus system CPU time of this process.", _PROC, update=_SNAP,
)  # fmt: skip
PROCESS_RSS = _spec(
    "shipit_process_resident_memory_bytes", _G, Component.PROCESS, "bytes",
    "Resident memory of this process.", _PROC, update=_SNAP,
)  # fmt: skip
_GPU = ("gpu", "gpu_name")
ACCEL_UTIL = _spec(
    "shipit_accelerator_utilization_ratio", _G, Component.ACCELERATOR, "ratio",
    "Fraction of the last sample period the GPU was busy (NVML), 0 to 1.", _GPU, update=_SNAP,
)  # fmt: skip
ACCEL_MEM_USED = _spec(
    "shipit_accelerator_memory_used_bytes", _G, Component.ACCELERATOR, "bytes",
    "GPU memory in use (NVML).", _GPU, update=_SNAP,
)  # fmt: skip
ACCEL_MEM_TOTAL = _spec(
    "shipit_accelerator_memory_total_bytes", _G, Component.ACCELERATOR, "bytes",
    "GPU memory installed (NVML).", _GPU, update=_SNAP,
)  # fmt: skip

# --- cost --------------------------------------------------------------------------------------
COST_PER_HOUR = _spec(
    "shipit_cost_per_hour_usd", _G, Component.COST, "usd",
    "Estimated spend of a deployment's running replicas, from the planner's price data.",
)  # fmt: skip
COST_PER_MTOK = _spec(
    "shipit_cost_per_million_tokens_usd", _G, Component.COST, "usd",
    "Estimated cost per million output tokens at the current throughput.",
)  # fmt: skip

# --- alerts ------------------------------------------------------------------------------------
ALERT_ACTIVE = _spec(
    "shipit_alert_active", _G, Component.ALERTS, "boolean",
    "1 while a baseline-deviation alert is firing, else 0.", ("deployment", "metric", "alert"),
)  # fmt: skip
BASELINE_SCORE = _spec(
    "shipit_baseline_deviation_score", _G, Component.ALERTS, "score",
    "Robust deviation of a metric from its learned baseline (MADs; positive is worse).",
    ("deployment", "metric"),
)  # fmt: skip


# --- rollouts (the rollout controller, on each decision) ----------------------------------------
# Versions are bounded: the controller keeps series only for the baseline and the candidate of
# each deployment's latest rollout.
ROLLOUT_PHASES = ("warming", "canary", "shadow", "kept", "complete", "rolled_back")
ROLLOUT_DECISIONS = (
    "warming", "shadow", "switch", "step", "bake", "hold", "promote", "rollback", "complete",
    "abort", "rolled_back",
)  # fmt: skip
ROLLOUT_REASONS = (
    "operator", "pass", "insufficient", "ttft", "tpot", "errors", "goodput", "warmup_timeout",
    "none",
)  # fmt: skip
ROLLOUT_TRAFFIC = _spec(
    "shipit_rollout_traffic_share_ratio", _G, Component.ROLLOUT, "ratio",
    "Share of a deployment's traffic the rollout sends to each version, 0 to 1.",
    ("deployment", "version"),
)  # fmt: skip
ROLLOUT_STEP = _spec(
    "shipit_rollout_step", _G, Component.ROLLOUT, "step",
    "Canary step the rollout is at, 1-based (0 before the first step or outside canary).",
)  # fmt: skip
ROLLOUT_STATE = _spec(
    "shipit_rollout_state", _G, Component.ROLLOUT, "boolean",
    "1 for the phase the deployment's latest rollout is in, 0 for the others.",
    ("deployment", "state"), label_values=(("state", ROLLOUT_PHASES),),
)  # fmt: skip
ROLLOUT_DECISIONS_TOTAL = _spec(
    "shipit_rollout_decisions_total", _C, Component.ROLLOUT, "decisions",
    "Rollout decisions that changed the split or judged the versions, by decision and a bounded "
    "reason (operator, the analysis verdict, the failed metric, warmup_timeout, none).",
    ("deployment", "decision", "reason"),
    label_values=(("decision", ROLLOUT_DECISIONS), ("reason", ROLLOUT_REASONS)),
)  # fmt: skip
ROLLOUT_WINDOW_MEDIAN = _spec(
    "shipit_rollout_window_median_seconds", _G, Component.ROLLOUT, "seconds",
    "Median TTFT or TPOT of each version's analysis window at the rollout's last look.",
    ("deployment", "version", "metric"), label_values=(("metric", ("ttft", "tpot")),),
)  # fmt: skip


# --- the global front door of a live multi-plane fleet (``shipit up --fleet``) ------------------
# Planes are bounded by fleet.yaml; reasons and changes are the policies' closed sets.
FRONT_DOOR_ROUTE_REASONS = ("nearest", "spilled", "queued_nearest", "all_full", "no_plane")
FRONT_DOOR_CHANGES = ("out", "back", "promoted", "returned_as_standby")
FRONT_DOOR_REQUESTS = _spec(
    "shipit_front_door_requests_total", _C, Component.FRONT_DOOR, "requests",
    "Requests the global front door answered, by the plane that served (none when no plane "
    "could), the global routing reason of its first choice and the HTTP status sent (499: the "
    "client went away; an answer cut by its plane midway counts as 502).",
    ("plane", "reason", "status"), label_values=(("reason", FRONT_DOOR_ROUTE_REASONS),),
)  # fmt: skip
FRONT_DOOR_RETRIES = _spec(
    "shipit_front_door_retries_total", _C, Component.FRONT_DOOR, "retries",
    "Requests sent on to the next plane because a plane failed before its first byte "
    "(connect, reset, 502/503), by the plane that failed and the cause.", ("plane", "cause"),
)  # fmt: skip
FRONT_DOOR_MIDSTREAM = _spec(
    "shipit_front_door_midstream_errors_total", _C, Component.FRONT_DOOR, "requests",
    "Answers cut because their plane failed after the first byte (reported to the client).",
    ("plane",),
)  # fmt: skip
FRONT_DOOR_FAILOVERS = _spec(
    "shipit_front_door_failovers_total", _C, Component.FRONT_DOOR, "changes",
    "Failover changes of a plane (out, back, promoted, returned_as_standby).",
    ("plane", "change"), label_values=(("change", FRONT_DOOR_CHANGES),),
)  # fmt: skip
FRONT_DOOR_PLANE_SERVING = _spec(
    "shipit_front_door_plane_serving", _G, Component.FRONT_DOOR, "boolean",
    "1 while the front door sends traffic to the plane (up and active), else 0.", ("plane",),
    update=_SNAP,
)  # fmt: skip


PLACEMENT_REASONS = ("placed", "spilled", "unplaced")
FRONT_DOOR_PLACEMENTS = _spec(
    "shipit_front_door_placements_total", _C, Component.FRONT_DOOR, "decisions",
    "Live placement decisions of the control plane (demand per client region onto the "
    "planes), by reason: placed, spilled (a plane's capacity ran out), unplaced.",
    ("reason",), label_values=(("reason", PLACEMENT_REASONS),),
)  # fmt: skip
FRONT_DOOR_PLANE_BOUNDS = _spec(
    "shipit_front_door_plane_bounds", _G, Component.FRONT_DOOR, "replicas",
    "The last placement's replicas for each plane: target, and the min and max its "
    "autoscalers were given (bound: target, min, max).",
    ("plane", "bound"), label_values=(("bound", ("target", "min", "max")),), update=_SNAP,
)  # fmt: skip
FRONT_DOOR_REGION_DEMAND = _spec(
    "shipit_front_door_region_demand_replicas", _G, Component.FRONT_DOOR, "replicas",
    "Demand of each client region at the last placement, in replicas (its mean concurrency "
    "over what one replica should carry).",
    ("region",), update=_SNAP,
)  # fmt: skip


POOL_NAMES = ("reserved", "on_demand", "spot")
SPOT_PREEMPTIONS = _spec(
    "shipit_spot_preemptions_total", _C, _CP, "notices",
    "Spot pre-emption notices in a live fleet plane, by deployment and cause (drawn at the "
    "pool's rate, or triggered through POST /shipit/pools/preempt).",
    ("deployment", "cause"), label_values=(("cause", ("drawn", "triggered")),),
)  # fmt: skip
GPU_FAILURES = _spec(
    "shipit_gpu_failures_total", _C, _CP, "failures",
    "GPU failures in a live fleet plane, by deployment and cause (drawn at the fleet's "
    "gpu_failures_per_hour, or triggered through POST /shipit/pools/fail): the replica is "
    "killed, its node cordoned, and it is stopped and replaced.",
    ("deployment", "cause"), label_values=(("cause", ("drawn", "triggered")),),
)  # fmt: skip
POOL_CHOICES = _spec(
    "shipit_pool_choices_total", _C, _CP, "decisions",
    "Capacity pool chosen for each replica a live fleet plane starts (pool none: no pool could "
    "supply one), by the pool choice policy's reason.",
    ("deployment", "pool", "reason"),
)  # fmt: skip
REPLICAS_BY_POOL = _spec(
    "shipit_replicas_by_pool", _G, _CP, "replicas",
    "Replicas holding a machine (starting, ready or draining) in a live fleet plane, by "
    "capacity pool.",
    ("deployment", "pool"), label_values=(("pool", POOL_NAMES),), update=_SNAP,
)  # fmt: skip


def _collect_specs() -> tuple[MetricSpec, ...]:
    return tuple(v for v in globals().values() if isinstance(v, MetricSpec))


CATALOG: tuple[MetricSpec, ...] = _collect_specs()


def group(component: Component) -> tuple[MetricSpec, ...]:
    """The metrics one component exports, in definition order."""
    return tuple(s for s in CATALOG if s.component is component)


def by_name(name: str) -> MetricSpec:
    """The spec of an exposed metric name; raises ``KeyError`` naming close matches."""
    for spec in CATALOG:
        if spec.name == name:
            return spec
    near = difflib.get_close_matches(name, [s.name for s in CATALOG], n=3)
    raise KeyError(f"no metric {name!r} in the catalog; did you mean one of {near}?")


def series_names() -> Iterator[str]:
    """Every series name PromQL may select from shipit's exposition (histogram parts included)."""
    for spec in CATALOG:
        yield from spec.series_names()
