"""Least outstanding work: the default preset weighs the prompt tokens a replica still has to
compute, not only its request count.

With 12,000-token prompts a replica holding one request whose prompt is still prefilling reads
as less loaded than one holding two decoding requests, and a request sent there waits that
whole prefill for its first token (the production-trace replay's misses). Figures: a configured
pace of 100 us a token (``prefill_us_per_token``'s default), slots of 16.
"""

from __future__ import annotations

import pytest

from shipit.config.gateway import DeploymentConfig, RoutingConfig
from shipit.core.fleet import ReplicaRecord
from shipit.core.views import RequestView
from shipit.policy.routing import (
    PaceBook,
    ReplicaPace,
    RouteSnapshot,
    RoutingState,
    decide,
    plan_for,
)
from shipit.sim import drivers


def rep(rid: str, in_flight: int) -> ReplicaRecord:
    return ReplicaRecord(rid, f"http://{rid}", in_flight=in_flight, max_concurrency=16)


def req(prompt: int = 1000, hashes: tuple[int, ...] = ()) -> RequestView:
    return RequestView(
        request_id="q",
        deployment="d",
        model="m",
        prompt_tokens_estimate=prompt,
        prefix_hashes=hashes,
    )


def route(
    policy: str,
    fleet: list[ReplicaRecord],
    paces: tuple[ReplicaPace, ...],
    *,
    request: RequestView | None = None,
    hits: tuple[tuple[str, int], ...] = (),
    config: RoutingConfig | None = None,
) -> tuple[str | None, str, str]:
    cfg = config or RoutingConfig(policy=policy)  # type: ignore[arg-type]
    snapshot = RouteSnapshot(0.0, request or req(), tuple(fleet), hits, paces=paces)
    d, _ = decide(plan_for(cfg.policy, cfg), snapshot, RoutingState())
    return d.replica_id, d.reason_code, d.reason


def test_the_default_preset_avoids_a_replica_with_a_long_prompt_still_to_compute() -> None:
    # a holds one request whose 12,000-token prompt is still prefilling (1.2 s at 100 us a
    # token); b holds two decoding ones. Counting requests, a looked idler.
    fleet = [rep("a", 1), rep("b", 2)]
    paces = (ReplicaPace("a", pending_tokens=12_000), ReplicaPace("b"))
    rid, code, why = route("least_outstanding", fleet, paces)
    assert (rid, code) == ("b", "least_loaded")
    assert why == "least outstanding: 2/16 in flight, 0 prompt tokens to compute"


def test_with_equal_backlogs_the_request_count_decides() -> None:
    fleet = [rep("a", 3), rep("b", 2)]
    paces = (ReplicaPace("a", pending_tokens=500), ReplicaPace("b", pending_tokens=500))
    assert route("least_outstanding", fleet, paces)[0] == "b"


def test_a_slower_measured_pace_counts_against_a_replica() -> None:
    # The same 4,000 tokens to compute: 0.8 s at a's measured 200 us a token, 0.4 s on b.
    fleet = [rep("a", 1), rep("b", 1)]
    paces = (
        ReplicaPace("a", pending_tokens=4000, prefill_s_per_token=200e-6),
        ReplicaPace("b", pending_tokens=4000),
    )
    assert route("least_outstanding", fleet, paces)[0] == "b"


def test_without_measured_paces_it_is_fewest_in_flight() -> None:
    rid, code, why = route("least_outstanding", [rep("a", 1), rep("b", 2)], ())
    assert (rid, code) == ("a", "least_loaded")
    assert why == "least outstanding: 1/16 in flight, 0 prompt tokens to compute"


def test_the_prefill_scorer_counts_only_the_uncached_part_of_the_prompt() -> None:
    # a holds the prompt's 500 leading blocks (8,000 of 10,000 tokens) and 3,000 tokens of
    # backlog: 5,000 to compute; b has no backlog but would compute all 10,000.
    config = RoutingConfig.model_validate(
        {"policy": "custom", "scorers": [{"name": "prefill", "weight": 1.0}]}
    )
    fleet = [rep("a", 1), rep("b", 1)]
    paces = (ReplicaPace("a", pending_tokens=3000), ReplicaPace("b"))
    request = req(10_000, hashes=tuple(range(625)))
    rid, code, _ = route("custom", fleet, paces, request=request, hits=(("a", 500),), config=config)
    assert (rid, code) == ("a", "best_score")


@pytest.mark.parametrize(
    ("policy", "reads"),
    [
        ("least_outstanding", True),
        ("prefix_cache", True),
        ("round_robin", False),
        ("power_of_two", False),
        ("session_affinity", False),
    ],
)
def test_which_presets_read_the_pace_book(policy: str, reads: bool) -> None:
    assert plan_for(policy, RoutingConfig()).uses("paces") is reads


def test_the_simulators_driver_gives_the_default_preset_its_paces() -> None:
    # As the live router: the pace book, fed with what was placed, is read into the snapshot.
    book = PaceBook(prefill_s_per_token=100e-6)
    book.placed("a", "q0", 12_000, now_s=0.0)
    policy = drivers.routing_policy(DeploymentConfig(name="d", replicas=0))
    fleet = [rep("a", 1), rep("b", 2)]
    d = drivers.place(
        policy, req(), fleet, avoid=frozenset(), now_s=0.1, deployment="d", paces=book
    )
    assert d.replica_id == "b"
