"""The fleet simulator times prefill as the engine's scheduler batches it: 16 concurrent long
prompts take the time of the chunked prefill steps, matching a ``--simulate`` replica (the real
engine over the simulated executor, run in-process on a fake clock) on the same arrivals.

No sleeps: the engine's executor "sleeps" by advancing a fake clock; the simulator's time is
simulated.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import pytest

from shipit.config.gateway import DeploymentConfig, QueueingConfig
from shipit.engine.engine import EngineConfig
from shipit.engine.sampling import SamplingParams
from shipit.engine.sim_timing import ReplicaModel, StepShape
from shipit.engine.simulated import build_simulated_engine
from shipit.sim.fleet import FleetSim
from shipit.sim.policies import FixedFleet
from shipit.sim.results import SimRequest

GPU, MODEL = "H100", "llama-3.1-8b"
PROMPT, OUTPUT = 7_000, 4


@dataclass(frozen=True)
class Timings:
    ttft_s: dict[int, float]  # request index -> arrival to first token
    e2e_s: dict[int, float]  # request index -> arrival to last token


def run_replica(trace: list[SimRequest], config: EngineConfig) -> Timings:
    """A ``--simulate`` replica's engine loop (as ``AsyncEngine._loop``): requests that arrived
    are added between steps; each step advances the clock by the executor's modelled time."""
    clock = [0.0]

    def sleep(seconds: float) -> None:
        clock[0] += seconds

    engine = build_simulated_engine(f"{GPU}:{MODEL}", config, sleep=sleep)
    pending = sorted(enumerate(trace), key=lambda p: p[1].arrival_s)
    first: dict[int, float] = {}
    done: dict[int, float] = {}
    while pending or engine.has_unfinished_requests():
        while pending and pending[0][1].arrival_s <= clock[0]:
            i, req = pending.pop(0)
            # Distinct leading tokens: no two prompts share a cached block.
            tokens = [3 + (i * 7_001 + j) % 1_000 for j in range(req.prompt_tokens)]
            params = SamplingParams(max_tokens=req.output_tokens, temperature=0)
            engine.add_request(f"q{i}", tokens, params)
        if not engine.has_unfinished_requests():
            clock[0] = pending[0][1].arrival_s
            continue
        for out in engine.step():
            i = int(out.request_id[1:])
            first.setdefault(i, clock[0] - trace[i].arrival_s)
            if out.finished:
                done[i] = clock[0] - trace[i].arrival_s
    return Timings(first, done)


def run_sim(trace: list[SimRequest], config: EngineConfig) -> Timings:
    deployment = DeploymentConfig(
        name="sim", replicas=0, queueing=QueueingConfig(max_concurrency=len(trace))
    )
    replica = ReplicaModel(gpu=GPU, model=MODEL, engine=config)
    result = FleetSim(FixedFleet(1), replica, deployment, initial_replicas=1).run(trace, 60.0)
    assert {r.status for r in result.requests} == {200}
    ttft = {int(r.request_id[1:]): r.ttft_s for r in result.requests}
    e2e = {int(r.request_id[1:]): r.e2e_s for r in result.requests}
    return Timings(
        {i: t for i, t in ttft.items() if t is not None},
        {i: t for i, t in e2e.items() if t is not None},
    )


def assert_within(sim: dict[int, float], replica: dict[int, float], rel: float) -> None:
    assert sim.keys() == replica.keys()
    for i in replica:
        assert sim[i] == pytest.approx(replica[i], rel=rel), f"request {i}"


@pytest.mark.parametrize("spacing_s", [0.0, 0.15])
def test_sixteen_long_prompts_match_a_simulate_replica(spacing_s: float) -> None:
    trace = [SimRequest(i * spacing_s, PROMPT, OUTPUT) for i in range(16)]
    config = EngineConfig()
    replica = run_replica(trace, config)
    sim = run_sim(trace, config)
    assert len(replica.e2e_s) == 16
    assert_within(sim.ttft_s, replica.ttft_s, rel=0.10)
    assert_within(sim.e2e_s, replica.e2e_s, rel=0.10)
    # The whole burst: the last answer lands when the replica's does.
    assert max(sim.e2e_s.values()) == pytest.approx(max(replica.e2e_s.values()), rel=0.10)


def test_concurrent_prompts_queue_behind_each_others_prefill() -> None:
    """The old simulator timed each prompt's prefill as if it ran alone (16 prompts: every
    TTFT ~ one prefill). Batched, the prompts share one token budget per step: the last TTFT
    is ~16 prefills, and the TTFTs step up by about one prefill each."""
    config = EngineConfig()
    alone = run_sim([SimRequest(0.0, PROMPT, OUTPUT)], config).ttft_s[0]
    burst = run_sim([SimRequest(0.0, PROMPT, OUTPUT) for _ in range(16)], config).ttft_s
    ttfts = sorted(burst.values())
    assert ttfts[0] == pytest.approx(alone, rel=0.05)
    assert 14 * alone < ttfts[-1] < 18 * alone
    gaps = [b - a for a, b in itertools.pairwise(ttfts)]
    assert all(0.8 * alone < g < 1.2 * alone for g in gaps)
    # One prompt alone is the sum of its 512-token chunks, not one 7,000-token step.
    step_time = ReplicaModel(gpu=GPU, model=MODEL, engine=config).resolve().step_time
    one_step = step_time(StepShape.of_spans([(0, PROMPT)]))
    assert alone > one_step
