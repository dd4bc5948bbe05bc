"""Routing presets: tables of fleets and requests, decisions checked by replica and reason.

Every preset is a composition (filters → scorers → picker) driven through the pure
``decide(plan, snapshot, state)``; the tests thread the returned state as the router does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipit.config.gateway import ROUTING_PRESETS, ConfigError, RoutingConfig
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.core.views import RequestView
from shipit.policy.routing import (
    PRESETS,
    PrefixIndex,
    RouteDecision,
    RoutePlan,
    RouteSnapshot,
    RoutingState,
    apply_events,
    decide,
    observe,
    plan_for,
    prefix_hits,
    text_block_hashes,
)


def rep(rid: str, in_flight: int = 0, **kw: object) -> ReplicaRecord:
    return ReplicaRecord(rid, f"http://{rid}", in_flight=in_flight, max_concurrency=4, **kw)  # type: ignore[arg-type]


def req(**kw: object) -> RequestView:
    return RequestView(request_id="r", deployment="d", model="m", **kw)  # type: ignore[arg-type]


class Driver:
    """Threads one plan's state and prefix index through decisions, as the router does."""

    def __init__(self, name: str, config: RoutingConfig | None = None) -> None:
        self.plan: RoutePlan = plan_for(name, config or RoutingConfig())
        self.state = RoutingState()
        self.index = PrefixIndex(max_blocks_per_replica=1000)

    def decide(
        self, request: RequestView, fleet: Sequence[ReplicaRecord], now: float = 0.0
    ) -> RouteDecision:
        ids = [r.replica_id for r in fleet]
        hits = prefix_hits(self.index, request.prefix_hashes, ids)
        snapshot = RouteSnapshot(now, request, tuple(fleet), hits)
        decision, self.state = decide(self.plan, snapshot, self.state)
        if decision.replica_id is not None:
            observe(self.plan, request, decision, self.index)
        return decision


def test_the_presets_are_the_policy_names_of_the_config() -> None:
    assert tuple(PRESETS) == ROUTING_PRESETS


@pytest.mark.parametrize("name", ROUTING_PRESETS)
def test_every_policy_waits_when_nothing_can_take_the_request(name: str) -> None:
    policy = Driver(name)
    busy = [rep("a", 4), rep("b", 4)]
    assert policy.decide(req(), busy).reason_code == "all_busy"
    down = [rep("a", state=ReplicaState.STARTING), rep("b", ejected_until_s=5.0)]
    decision = policy.decide(req(), down, 1.0)
    assert (decision.replica_id, decision.reason_code) == (None, "no_ready_replica")
    assert policy.decide(req(), down, 6.0).replica_id == "b"  # ejection over


@pytest.mark.parametrize("name", ROUTING_PRESETS)
@given(loads=st.lists(st.integers(0, 4), min_size=1, max_size=6))
def test_every_policy_only_picks_a_replica_with_a_free_slot(name: str, loads: list[int]) -> None:
    policy = Driver(name)
    fleet = [rep(f"r{i}", n) for i, n in enumerate(loads)]
    d = policy.decide(req(session_key="s", adapter="x"), fleet)
    free = {r.replica_id for r in fleet if r.in_flight < 4}
    assert (d.replica_id in free) if free else d.replica_id is None
    assert d.reason


@pytest.mark.parametrize("name", ROUTING_PRESETS)
def test_decide_changes_nothing_outside_the_state_it_returns(name: str) -> None:
    plan = plan_for(name, RoutingConfig())
    snapshot = RouteSnapshot(0.0, req(session_key="s"), (rep("a"), rep("b", 1), rep("c")))
    first = decide(plan, snapshot, RoutingState())
    assert decide(plan, snapshot, RoutingState()) == first  # same inputs, same answer
    _, state = first
    assert state.turn == 1 and state.last_id == first[0].replica_id


def test_unknown_policy_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="round_robin") as info:
        plan_for("random", RoutingConfig())
    assert info.value.field == "routing.policy"


def test_round_robin_cycles_and_skips_full() -> None:
    p = Driver("round_robin")
    fleet = [rep("a"), rep("b"), rep("c")]
    seen = [p.decide(req(), fleet).replica_id for _ in range(4)]
    assert seen == ["a", "b", "c", "a"]
    d = p.decide(req(), [rep("a"), rep("b", 4), rep("c")])
    assert d.replica_id == "c"


@pytest.mark.parametrize(
    ("loads", "expected"),
    [
        ({"a": 3, "b": 1, "c": 2}, "b"),
        ({"a": 0, "b": 4, "c": 1}, "a"),
        ({"a": 2, "b": 2, "c": 0}, "c"),
    ],
)
def test_least_outstanding_table(loads: dict[str, int], expected: str) -> None:
    d = Driver("least_outstanding").decide(req(), [rep(k, v) for k, v in loads.items()])
    assert (d.replica_id, d.reason_code) == (expected, "least_loaded")


def test_least_outstanding_spreads_ties() -> None:
    p = Driver("least_outstanding")
    fleet = [rep("a"), rep("b")]
    assert {p.decide(req(), fleet).replica_id for _ in range(2)} == {"a", "b"}


def test_power_of_two_never_picks_the_most_loaded_of_three_and_replays() -> None:
    fleet = [rep("a", 0), rep("b", 1), rep("c", 3)]
    p, q = Driver("power_of_two"), Driver("power_of_two")
    runs = [
        (p.decide(req(), fleet).replica_id, q.decide(req(), fleet).replica_id) for _ in range(50)
    ]
    assert all(x == y for x, y in runs)
    picked = Counter(x for x, _ in runs)
    assert "c" not in picked and set(picked) == {"a", "b"}  # b wins when a is not sampled
    assert p.state.draws == 50


def test_power_of_two_draws_follow_the_seed() -> None:
    fleet = [rep(x) for x in "abcdefgh"]

    def picks(seed: int) -> list[str | None]:
        p = Driver("power_of_two", RoutingConfig(seed=seed))
        return [p.decide(req(), fleet).replica_id for _ in range(20)]

    assert picks(1) == picks(1) and picks(1) != picks(2)


def test_prefix_cache_follows_the_prefix_then_guards_the_load() -> None:
    config = RoutingConfig(
        policy="prefix_cache",
        prefix_cache={"imbalance_ratio": 1.5, "imbalance_abs_requests": 2},  # type: ignore[arg-type]
    )
    p = Driver("prefix_cache", config)
    hashes = text_block_hashes("system prompt " * 40, block_chars=64)
    r = req(prefix_hashes=hashes)
    first = p.decide(r, [rep("a"), rep("b")])
    assert first.reason_code == "no_prefix_match"
    home = first.replica_id
    assert home is not None
    other = "b" if home == "a" else "a"
    again = p.decide(r, [rep(home, 1), rep(other, 0)])
    assert (again.replica_id, again.reason_code) == (home, "prefix_hit")
    assert again.prefix_hit_blocks == len(hashes)
    guarded = p.decide(r, [rep(home, 3), rep(other, 0)])
    assert (guarded.replica_id, guarded.reason_code) == (other, "imbalance_guard")


def test_prefix_cache_precise_mode_uses_events_not_routing() -> None:
    p = Driver("prefix_cache", RoutingConfig(prefix_cache={"source": "kv_events"}))  # type: ignore[arg-type]
    r = req(prefix_hashes=(1, 2, 3))
    d = p.decide(r, [rep("a"), rep("b")])
    assert p.index.size(d.replica_id or "") == 0
    apply_events(p.index, "b", stored=[1, 2], evicted=[])
    d = p.decide(r, [rep("a"), rep("b")])
    assert (d.replica_id, d.prefix_hit_blocks) == ("b", 2)
    apply_events(p.index, "b", stored=[], evicted=[1])
    assert p.decide(r, [rep("a"), rep("b")]).reason_code == "no_prefix_match"


def test_decide_reads_prefix_hits_from_the_snapshot_only() -> None:
    plan = plan_for("prefix_cache", RoutingConfig())
    r = req(prefix_hashes=(7, 8, 9))
    fleet = (rep("a"), rep("b"))
    d, _ = decide(plan, RouteSnapshot(0.0, r, fleet, prefix_hits=(("b", 3),)), RoutingState())
    assert (d.replica_id, d.reason_code, d.prefix_hit_blocks) == ("b", "prefix_hit", 3)


def test_text_block_hashes_are_chained() -> None:
    a = text_block_hashes("x" * 10 + "y" * 10, block_chars=10)
    b = text_block_hashes("z" * 10 + "y" * 10, block_chars=10)
    assert len(a) == 2 and a[1] != b[1]
    assert text_block_hashes("short", block_chars=10) == ()


def test_lora_affinity_prefers_holders_then_loads_on_a_free_slot() -> None:
    p = Driver("lora_affinity")
    fleet = [
        rep("a", 0, adapters=frozenset({"x", "y"}), max_adapters=2),
        rep("b", 1, adapters=frozenset({"sql"})),
        rep("c", 2),
    ]
    d = p.decide(req(adapter="sql"), fleet)
    assert (d.replica_id, d.reason_code, d.load_adapter) == ("b", "adapter_resident", None)
    d = p.decide(req(adapter="new"), fleet)
    # a is least loaded but has no free adapter slot: b has room and is lighter than c
    assert (d.replica_id, d.reason_code, d.load_adapter) == ("b", "adapter_load", "new")
    assert p.decide(req(), fleet).reason_code == "base_model"


def test_session_affinity_is_sticky_and_bounded() -> None:
    p = Driver("session_affinity", RoutingConfig(session_affinity={"load_bound": 1.25}))  # type: ignore[arg-type]
    fleet = [rep(x) for x in "abcd"]
    homes = {}
    for i in range(40):
        d = p.decide(req(session_key=f"user{i}"), fleet)
        assert d.reason_code == "session_home"
        homes[i] = d.replica_id
        assert p.decide(req(session_key=f"user{i}"), fleet).replica_id == homes[i]
    assert len(set(homes.values())) == 4  # keys spread over the ring
    assert p.state.ring.ids == frozenset("abcd")  # the ring travels in the state
    home = homes[0]
    loaded = [rep(x, 3 if x == home else 0) for x in "abcd"]
    d = p.decide(req(session_key="user0"), loaded)
    assert d.replica_id != home and d.reason_code == "session_spill"
    # removing a replica only moves its own sessions
    fewer = [r for r in fleet if r.replica_id != "d"]
    moved = Counter(
        homes[i] != p.decide(req(session_key=f"user{i}"), fewer).replica_id for i in range(40)
    )
    assert moved[True] == sum(1 for h in homes.values() if h == "d")
