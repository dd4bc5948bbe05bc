"""Routing as configuration: custom compositions of filters, weighted scorers and a picker;
the version/weight filter; the registries; and the errors a composition can raise."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from shipit.config.gateway import ConfigError, RoutingConfig, parse_config
from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView
from shipit.policy.routing import (
    SCORERS,
    RouteContext,
    RouteDecision,
    RouteSnapshot,
    RoutingState,
    decide,
    plan_for,
    uses,
)
from shipit.policy.routing.base import draw


def rep(rid: str, in_flight: int = 0, **kw: Any) -> ReplicaRecord:
    return ReplicaRecord(rid, f"http://{rid}", in_flight=in_flight, max_concurrency=4, **kw)


def req(rid: str = "r", **kw: Any) -> RequestView:
    return RequestView(request_id=rid, deployment="d", model="m", **kw)


def custom(**routing: Any) -> RoutingConfig:
    return RoutingConfig.model_validate({"policy": "custom", **routing})


def route(
    config: RoutingConfig,
    request: RequestView,
    fleet: list[ReplicaRecord],
    *,
    hits: tuple[tuple[str, int], ...] = (),
    weights: tuple[tuple[str, float], ...] = (),
    state: RoutingState | None = None,
) -> tuple[RouteDecision, RoutingState]:
    snapshot = RouteSnapshot(0.0, request, tuple(fleet), hits, weights)
    return decide(plan_for(config.policy, config), snapshot, state or RoutingState())


def test_the_default_custom_composition_is_least_loaded() -> None:
    plan = plan_for("custom", custom())
    assert (plan.filters, plan.scorers, plan.picker) == (
        ("routable", "free_slot", "version_weight"),
        (("load", 1.0),),
        "best",
    )
    d, _ = route(custom(), req(), [rep("a", 2), rep("b", 1)])
    assert (d.replica_id, d.policy, d.reason_code) == ("b", "custom", "least_loaded")


def test_routable_and_free_slot_always_run_first() -> None:
    plan = plan_for("custom", custom(filters=["version_weight", "free_slot"]))
    assert plan.filters == ("routable", "free_slot", "version_weight")


@pytest.mark.parametrize(
    ("prefix_weight", "holder_in_flight", "expected"),
    [
        (2.0, 3, "a"),  # 2 x 1.0 - 0.75 beats an idle replica's 0
        (0.5, 3, "b"),  # 0.5 x 1.0 - 0.75 loses to it
        (0.5, 1, "a"),  # 0.5 - 0.25 still wins
        (0.0, 1, "b"),  # prefix ignored: least loaded
    ],
)
def test_scorers_combine_by_weight(
    prefix_weight: float, holder_in_flight: int, expected: str
) -> None:
    config = custom(scorers=[{"name": "prefix_cache", "weight": prefix_weight}, {"name": "load"}])
    request = req(prefix_hashes=(1, 2, 3, 4))
    fleet = [rep("a", holder_in_flight), rep("b", 0)]
    d, _ = route(config, request, fleet, hits=(("a", 4),))
    assert (d.replica_id, d.reason_code) == (expected, "best_score")
    assert d.prefix_hit_blocks == (4 if expected == "a" else 0)


def test_prefix_scorer_ignores_matches_below_min_hit_blocks() -> None:
    config = custom(
        scorers=[{"name": "prefix_cache", "weight": 5}, {"name": "load"}],
        prefix_cache={"min_hit_blocks": 3},
    )
    d, _ = route(config, req(prefix_hashes=(1, 2, 3, 4)), [rep("a", 2), rep("b")], hits=(("a", 2),))
    assert d.replica_id == "b"


@pytest.mark.parametrize(
    ("adapters_a", "adapters_b", "expected", "load_adapter"),
    [
        (frozenset({"sql"}), frozenset(), "a", None),  # resident beats a lighter replica
        (frozenset(), frozenset({"x", "y", "z", "w"}), "a", "sql"),  # room beats a full one
    ],
)
def test_lora_scorer_prefers_residents_and_loads_where_missing(
    adapters_a: frozenset[str], adapters_b: frozenset[str], expected: str, load_adapter: str | None
) -> None:
    config = custom(scorers=[{"name": "lora", "weight": 2}, {"name": "load"}])
    fleet = [rep("a", 2, adapters=adapters_a), rep("b", 0, adapters=adapters_b)]
    d, _ = route(config, req(adapter="sql"), fleet)
    assert (d.replica_id, d.load_adapter) == (expected, load_adapter)


def test_kv_cache_scorer_prefers_free_cache() -> None:
    config = custom(scorers=[{"name": "kv_cache"}])
    d, _ = route(config, req(), [rep("a", kv_usage=0.9), rep("b", kv_usage=0.2)])
    assert d.replica_id == "b"


def test_session_scorer_keeps_a_key_on_one_replica_and_carries_the_ring() -> None:
    config = custom(scorers=[{"name": "session", "weight": 3}, {"name": "load"}])
    fleet = [rep(x) for x in "abcd"]
    state = RoutingState()
    seen = set()
    for i in range(5):
        d, state = route(config, req(f"q{i}", session_key="user7"), fleet, state=state)
        seen.add(d.replica_id)
    assert len(seen) == 1 and state.ring.ids == frozenset("abcd")


def test_affinity_picker_in_a_custom_composition() -> None:
    config = custom(picker="prefix_affinity", scorers=[{"name": "kv_cache"}])
    fleet = [rep("a", kv_usage=0.1), rep("b", kv_usage=0.5), rep("c", kv_usage=0.9)]
    d, _ = route(config, req(prefix_hashes=(1, 2)), fleet, hits=(("b", 2), ("c", 2)))
    assert (d.replica_id, d.reason_code) == ("b", "prefix_hit")  # of the holders, more free KV


# ----- version weights ------------------------------------------------------------------------

V_FLEET = [rep("a1", version="v1"), rep("a2", version="v1"), rep("b1", version="v2")]


def shares(weights: tuple[tuple[str, float], ...], n: int = 2000) -> Counter[str]:
    config = RoutingConfig()
    versions = {r.replica_id: r.version for r in V_FLEET}
    out: Counter[str] = Counter()
    for i in range(n):
        d, _ = route(config, req(f"req-{i}"), V_FLEET, weights=weights)
        out[versions[d.replica_id or ""]] += 1
    return out


def test_version_weights_split_traffic_in_proportion() -> None:
    split = shares((("v1", 3.0), ("v2", 1.0)))
    assert 0.2 < split["v2"] / 2000 < 0.3
    assert shares((("v1", 1.0), ("v2", 0.0)), n=200) == Counter({"v1": 200})


def test_version_weights_are_sticky_by_session() -> None:
    config = RoutingConfig()
    weights = (("v1", 1.0), ("v2", 1.0))
    versions = {r.replica_id: r.version for r in V_FLEET}
    for key in ("alice", "bob", "carol"):
        chosen = {
            versions[
                route(config, req(f"q{i}", session_key=key), V_FLEET, weights=weights)[0].replica_id
                or ""
            ]
            for i in range(30)
        }
        assert len(chosen) == 1


@pytest.mark.parametrize(
    ("fleet", "weights", "code"),
    [
        # the only weighted version has no ready replica
        ([rep("a1", version="v1")], (("v3", 1.0),), "no_weighted_version"),
        # v2 drawn (weight 1 of 1) but its replica is full: wait for it
        (
            [rep("a1", version="v1"), rep("b1", 4, version="v2")],
            (("v2", 1.0), ("v1", 0.0)),
            "version_busy",
        ),
    ],
)
def test_version_filter_says_why_nothing_fits(
    fleet: list[ReplicaRecord], weights: tuple[tuple[str, float], ...], code: str
) -> None:
    d, _ = route(RoutingConfig(), req(), fleet, weights=weights)
    assert (d.replica_id, d.reason_code) == (None, code)


def test_versions_without_a_ready_replica_give_their_share_away() -> None:
    fleet = [rep("a1", version="v1")]
    d, _ = route(RoutingConfig(), req(), fleet, weights=(("v1", 1.0), ("v2", 9.0)))
    assert d.replica_id == "a1" and "version v1" in d.reason


# ----- registries and errors --------------------------------------------------------------------


def test_adding_a_scorer_is_one_registration(monkeypatch: pytest.MonkeyPatch) -> None:
    def prefer_b(ctx: RouteContext, candidates: tuple[ReplicaRecord, ...]) -> tuple[float, ...]:
        return tuple(1.0 if r.replica_id == "b" else 0.0 for r in candidates)

    monkeypatch.setitem(SCORERS, "prefer_b", prefer_b)
    d, _ = route(custom(scorers=[{"name": "prefer_b"}]), req(), [rep("a"), rep("b", 3)])
    assert (d.replica_id, d.reason_code) == ("b", "best_score")


@pytest.mark.parametrize(
    ("routing", "field", "words"),
    [
        ({"filters": ["routable", "gpu_type"]}, "routing.filters.1", "version_weight"),
        (
            {"scorers": [{"name": "load"}, {"name": "latency"}]},
            "routing.scorers.1.name",
            "prefix_cache",
        ),
        (
            {"scorers": [{"name": "load"}, {"name": "load", "weight": 2}]},
            "routing.scorers",
            "twice",
        ),
        ({"picker": "random"}, "routing.picker", "power_of_two"),
    ],
)
def test_composition_errors_name_the_field(routing: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        plan_for("custom", custom(**routing))
    assert info.value.field == field and words in info.value.message


@pytest.mark.parametrize(
    ("routing", "words"),
    [
        ({"policy": "prefix_cache", "scorers": [{"name": "load"}]}, "policy: custom"),
        ({"version_weights": {"v1": 0, "v2": 0}}, "positive weight"),
        ({"version_weights": {"v1": -1}}, ">= 0"),
        (
            {"policy": "custom", "scorers": [{"name": "load", "weight": -1}]},
            "greater than or equal",
        ),
    ],
)
def test_routing_config_errors(routing: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"deployments": [{"routing": routing}]})
    assert words in info.value.message and (info.value.field or "").startswith(
        "deployments.0.routing"
    )


@pytest.mark.parametrize(
    ("routing", "override", "part", "expected"),
    [
        ({"policy": "prefix_cache"}, None, "prefix_cache", True),
        ({"policy": "least_outstanding"}, "prefix_cache", "prefix_cache", True),
        ({"policy": "prefix_cache"}, "round_robin", "prefix_cache", False),
        ({"policy": "custom", "scorers": [{"name": "prefix_cache"}]}, None, "prefix_cache", True),
        ({"policy": "custom", "picker": "lora_affinity"}, None, "lora", True),
        ({"policy": "custom"}, None, "lora", False),
    ],
)
def test_uses_tells_the_gateway_what_to_compute(
    routing: dict[str, Any], override: str | None, part: str, expected: bool
) -> None:
    assert uses(RoutingConfig.model_validate(routing), part, override) is expected


def test_the_generator_is_a_pure_function_of_seed_and_position() -> None:
    assert draw(3, 10) == draw(3, 10)
    assert len({draw(0, k) for k in range(1000)}) == 1000
    assert draw(0, 0) != draw(1, 0)
