"""``routing.fused``: least outstanding work in one pass decides exactly as the composed plan.

Random snapshots (ready, starting and ejected replicas, full ones, caps of 0, replica queues,
paces for some replicas and not others, measured and configured prefill paces, prefix hits,
any turn) go through ``decide_work`` and through the composed filters, scorers and picker;
the decision (replica, codes, reason, hits) and the next state must be equal.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from shipit.config.gateway import RoutingConfig
from shipit.core.fleet import ReplicaRecord, ReplicaState
from shipit.core.views import RequestView
from shipit.policy import routing
from shipit.policy.routing.base import ReplicaPace, RouteSnapshot, RoutingState
from shipit.policy.routing.fused import decide_work
from shipit.policy.routing.pipeline import decide_composed

_STATES = [ReplicaState.READY, ReplicaState.READY, ReplicaState.READY, ReplicaState.STARTING]


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[RouteSnapshot, RoutingState]:
    n = draw(st.integers(0, 6))
    replicas = []
    alike = draw(st.booleans())  # an idle fleet of equal replicas: ties, rotated by the turn
    for i in range(n):
        if alike:
            replicas.append(ReplicaRecord(f"r{i}", f"http://r{i}", max_concurrency=8))
            continue
        replicas.append(
            ReplicaRecord(
                f"r{i}",
                f"http://r{i}",
                state=draw(st.sampled_from(_STATES)),
                in_flight=draw(st.integers(0, 9)),
                max_concurrency=draw(st.sampled_from([0, 1, 2, 4, 8])),
                queue_depth=draw(st.integers(0, 3)),
                ejected_until_s=draw(st.sampled_from([None, None, 5.0, 15.0])),
            )
        )
    ids = [r.replica_id for r in replicas]
    paces = tuple(
        ReplicaPace(
            rid,
            service_s=draw(st.sampled_from([0.0, 0.4])),
            pending_tokens=draw(st.sampled_from([0, 7, 300, 5000])),
            prefill_s_per_token=draw(st.sampled_from([0.0, 1e-4, 3e-4])),
        )
        for rid in ids
        if draw(st.booleans())
    )
    if paces and draw(st.booleans()):
        paces = (ReplicaPace(paces[0].replica_id, pending_tokens=11), *paces)  # first one wins
    hits = tuple((rid, draw(st.integers(0, 40))) for rid in ids if draw(st.booleans()))
    request = RequestView(
        request_id="q",
        deployment="default",
        model="m",
        prompt_text="hello",
        prompt_tokens_estimate=draw(st.sampled_from([0, 5, 700, 9000])),
        prefix_hashes=tuple(range(draw(st.integers(0, 30)))),
        stream=True,
        path="/v1/chat/completions",
    )
    snapshot = RouteSnapshot(
        10.0, request, tuple(replicas), hits if draw(st.booleans()) else (), (), paces
    )
    state = RoutingState(turn=draw(st.integers(0, 50)), draws=draw(st.integers(0, 3)))
    return snapshot, state


_CONFIG = RoutingConfig()
_PLAN = routing.plan_for("least_outstanding", _CONFIG)


@settings(max_examples=600, deadline=None)
@given(snapshots())
def test_one_pass_decides_as_the_composed_plan(case: tuple[RouteSnapshot, RoutingState]) -> None:
    snapshot, state = case
    assert decide_work(_PLAN.name, _CONFIG, snapshot, state) == decide_composed(
        _PLAN, snapshot, state
    )


def test_plans_of_that_composition_take_the_one_pass() -> None:
    assert _PLAN.fused
    custom = RoutingConfig.model_validate(
        {"policy": "custom", "scorers": [{"name": "prefill"}, {"name": "load"}]}
    )
    assert routing.plan_for("custom", custom).fused
    for other in ("round_robin", "power_of_two", "prefix_cache", "lora_affinity"):
        assert not routing.plan_for(other, _CONFIG).fused
    weighted = RoutingConfig.model_validate(
        {"policy": "custom", "scorers": [{"name": "prefill", "weight": 2}, {"name": "load"}]}
    )
    assert not routing.plan_for("custom", weighted).fused


def test_version_weights_take_the_composed_path() -> None:
    """A rollout's weights are the version filter's: the one pass does not apply them."""
    replicas = (
        ReplicaRecord("a", "http://a", version="v1"),
        ReplicaRecord("b", "http://b", version="v2"),
    )
    request = RequestView(
        request_id="q", deployment="default", model="m", prompt_text="x", path="/v1/completions"
    )
    snapshot = RouteSnapshot(1.0, request, replicas, (), (("v2", 1.0),))
    decision, _ = routing.decide(_PLAN, snapshot, RoutingState())
    assert decision.replica_id == "b"
    assert "version v2" in decision.reason
