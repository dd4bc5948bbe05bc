"""Routing policies: tables of fleets and requests, decisions checked by replica and reason."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipit.config.gateway import (
    LoraAffinityConfig,
    PrefixCacheConfig,
    RoutingConfig,
    SessionAffinityConfig,
)
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.core.views import RequestView
from shipit.policy.routing import (
    ROUTING_POLICIES,
    LeastOutstanding,
    LoraAffinity,
    PowerOfTwo,
    PrefixCache,
    RoundRobin,
    SessionAffinity,
    build_policy,
    text_block_hashes,
)


def rep(rid: str, in_flight: int = 0, **kw: object) -> ReplicaRecord:
    return ReplicaRecord(rid, f"http://{rid}", in_flight=in_flight, max_concurrency=4, **kw)  # type: ignore[arg-type]


def req(**kw: object) -> RequestView:
    return RequestView(request_id="r", deployment="d", model="m", **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ROUTING_POLICIES)
def test_every_policy_waits_when_nothing_can_take_the_request(name: str) -> None:
    policy = build_policy(name, RoutingConfig())
    busy = [rep("a", 4), rep("b", 4)]
    assert policy.decide(req(), busy, 0.0).reason_code == "all_busy"
    down = [rep("a", state=ReplicaState.STARTING), rep("b", ejected_until_s=5.0)]
    decision = policy.decide(req(), down, 1.0)
    assert (decision.replica_id, decision.reason_code) == (None, "no_ready_replica")
    assert policy.decide(req(), down, 6.0).replica_id == "b"  # ejection over


@pytest.mark.parametrize("name", ROUTING_POLICIES)
@given(loads=st.lists(st.integers(0, 4), min_size=1, max_size=6))
def test_every_policy_only_picks_a_replica_with_a_free_slot(name: str, loads: list[int]) -> None:
    policy = build_policy(name, RoutingConfig())
    fleet = [rep(f"r{i}", n) for i, n in enumerate(loads)]
    d = policy.decide(req(session_key="s", adapter="x"), fleet, 0.0)
    free = {r.replica_id for r in fleet if r.in_flight < 4}
    assert (d.replica_id in free) if free else d.replica_id is None
    assert d.reason


def test_build_policy_names_the_choices() -> None:
    with pytest.raises(ValueError, match="round_robin"):
        build_policy("random", RoutingConfig())


def test_round_robin_cycles_and_skips_full() -> None:
    p = RoundRobin()
    fleet = [rep("a"), rep("b"), rep("c")]
    seen = []
    for _ in range(4):
        d = p.decide(req(), fleet, 0.0)
        p.observe(req(), d)
        seen.append(d.replica_id)
    assert seen == ["a", "b", "c", "a"]
    d = p.decide(req(), [rep("a"), rep("b", 4), rep("c")], 0.0)
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
    d = LeastOutstanding().decide(req(), [rep(k, v) for k, v in loads.items()], 0.0)
    assert (d.replica_id, d.reason_code) == (expected, "least_loaded")


def test_least_outstanding_spreads_ties() -> None:
    p = LeastOutstanding()
    fleet = [rep("a"), rep("b")]
    picks = set()
    for _ in range(2):
        d = p.decide(req(), fleet, 0.0)
        p.observe(req(), d)
        picks.add(d.replica_id)
    assert picks == {"a", "b"}


def test_power_of_two_never_picks_the_most_loaded_of_three_and_replays() -> None:
    fleet = [rep("a", 0), rep("b", 1), rep("c", 3)]
    first = [PowerOfTwo(seed=7).decide(req(), fleet, 0.0).replica_id for _ in range(1)]
    p, q = PowerOfTwo(seed=7), PowerOfTwo(seed=7)
    runs = [
        (p.decide(req(), fleet, 0.0).replica_id, q.decide(req(), fleet, 0.0).replica_id)
        for _ in range(50)
    ]
    assert all(x == y for x, y in runs)
    assert "c" not in {x for x, _ in runs} and first


def test_prefix_cache_follows_the_prefix_then_guards_the_load() -> None:
    p = PrefixCache(PrefixCacheConfig(imbalance_ratio=1.5, imbalance_abs_requests=2))
    hashes = text_block_hashes("system prompt " * 40, block_chars=64)
    r = req(prefix_hashes=hashes)
    first = p.decide(r, [rep("a"), rep("b")], 0.0)
    assert first.reason_code == "no_prefix_match"
    p.observe(r, first)
    home = first.replica_id
    other = "b" if home == "a" else "a"
    again = p.decide(r, [rep(home, 1), rep(other, 0)], 0.0)
    assert (again.replica_id, again.reason_code) == (home, "prefix_hit")
    assert again.prefix_hit_blocks == len(hashes)
    guarded = p.decide(r, [rep(home, 3), rep(other, 0)], 0.0)
    assert (guarded.replica_id, guarded.reason_code) == (other, "imbalance_guard")


def test_prefix_cache_precise_mode_uses_events_not_routing() -> None:
    p = PrefixCache(PrefixCacheConfig(source="kv_events"))
    r = req(prefix_hashes=(1, 2, 3))
    d = p.decide(r, [rep("a"), rep("b")], 0.0)
    p.observe(r, d)
    assert p.index.size(d.replica_id or "") == 0
    p.apply_events("b", stored=[1, 2], evicted=[])
    d = p.decide(r, [rep("a"), rep("b")], 0.0)
    assert (d.replica_id, d.prefix_hit_blocks) == ("b", 2)
    p.apply_events("b", stored=[], evicted=[1])
    assert p.decide(r, [rep("a"), rep("b")], 0.0).reason_code == "no_prefix_match"


def test_text_block_hashes_are_chained() -> None:
    a = text_block_hashes("x" * 10 + "y" * 10, block_chars=10)
    b = text_block_hashes("z" * 10 + "y" * 10, block_chars=10)
    assert len(a) == 2 and a[1] != b[1]
    assert text_block_hashes("short", block_chars=10) == ()


def test_lora_affinity_prefers_holders_then_loads_on_a_free_slot() -> None:
    p = LoraAffinity(LoraAffinityConfig())
    fleet = [
        rep("a", 0, adapters=frozenset({"x", "y"}), max_adapters=2),
        rep("b", 1, adapters=frozenset({"sql"})),
        rep("c", 2),
    ]
    d = p.decide(req(adapter="sql"), fleet, 0.0)
    assert (d.replica_id, d.reason_code, d.load_adapter) == ("b", "adapter_resident", None)
    d = p.decide(req(adapter="new"), fleet, 0.0)
    # a is least loaded but has no free adapter slot: b has room and is lighter than c
    assert (d.replica_id, d.reason_code, d.load_adapter) == ("b", "adapter_load", "new")
    assert p.decide(req(), fleet, 0.0).reason_code == "base_model"


def test_session_affinity_is_sticky_and_bounded() -> None:
    p = SessionAffinity(SessionAffinityConfig(load_bound=1.25))
    fleet = [rep(x) for x in "abcd"]
    homes = {}
    for i in range(40):
        d = p.decide(req(session_key=f"user{i}"), fleet, 0.0)
        assert d.reason_code == "session_home"
        homes[i] = d.replica_id
        assert p.decide(req(session_key=f"user{i}"), fleet, 0.0).replica_id == homes[i]
    assert len(set(homes.values())) == 4  # keys spread over the ring
    home = homes[0]
    loaded = [rep(x, 3 if x == home else 0) for x in "abcd"]
    d = p.decide(req(session_key="user0"), loaded, 0.0)
    assert d.replica_id != home and d.reason_code == "session_spill"
    # removing a replica only moves its own sessions
    fewer = [r for r in fleet if r.replica_id != "d"]
    moved = Counter(
        homes[i] != p.decide(req(session_key=f"user{i}"), fewer, 0.0).replica_id for i in range(40)
    )
    assert moved[True] == sum(1 for h in homes.values() if h == "d")
