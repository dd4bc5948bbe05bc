"""``ReplicaRecord.evolve``: a copy with the named fields changed, every other field kept."""

from __future__ import annotations

import pytest

from shipit.core.fleet import CapacityPool, ReplicaRecord, ReplicaState


def test_evolve_changes_only_the_named_fields_and_leaves_the_record_alone() -> None:
    rec = ReplicaRecord(
        "r1",
        "http://10.0.0.1:8000",
        deployment="chat",
        version="v2",
        pool=CapacityPool.SPOT,
        state=ReplicaState.DRAINING,
        in_flight=3,
        adapters=frozenset({"sql"}),
        ejected_until_s=12.5,
    )
    out = rec.evolve(in_flight=4, kv_usage=0.25)
    assert (out.in_flight, out.kv_usage) == (4, 0.25)
    assert (out.replica_id, out.url, out.deployment, out.version) == (
        "r1",
        "http://10.0.0.1:8000",
        "chat",
        "v2",
    )
    assert (out.pool, out.state, out.adapters, out.ejected_until_s) == (
        CapacityPool.SPOT,
        ReplicaState.DRAINING,
        frozenset({"sql"}),
        12.5,
    )
    assert rec.in_flight == 3 and rec.kv_usage == 0.0
    assert rec.evolve() == rec


def test_evolve_refuses_a_field_the_record_does_not_have() -> None:
    with pytest.raises(TypeError, match="no field 'inflight'"):
        ReplicaRecord("r1", "u").evolve(inflight=1)
