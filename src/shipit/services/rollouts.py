"""The rollout controller: the live driver of ``policy.rollout``, one rollout per deployment.

``start`` sets the deployment's traffic split to the baseline alone (so the candidate's replicas
get nothing while they come up), asks the ``VersionPool`` (``backends.Fleet``) to start the
candidate's replicas, and from then on ``tick`` (every ``tick_s``) warms each candidate replica
that the health monitor marked ready with one request of its own (``/v1/completions``, one
token) before it may count, reads the clock once, builds the ``RolloutSnapshot`` from the
registry and the per-version windows, calls ``decide``, hands the decision to the
``DecisionLog`` and applies it in one place: the router's version weights, window resets, and
draining and stopping a version's replicas. Windows are fed by the router's listeners: every
attempt's outcome (ok / failed) and every streamed answer's TTFT, TPOT and SLO verdict, by the
version of the replica that served it.

Every change is persisted as JSON under ``home`` (``<deployment>.json``, and ``history.jsonl``
once a rollout ends), so a gateway that restarts resumes a rollout at its step, with the time
it had baked (its replicas are started again; traffic stays on the baseline until they are
warm), and starts a deployment that a finished rollout moved to its new version as that
version. ``promote`` and ``abort`` are commands the next tick applies. It must not do HTTP
beyond the warm-up request and must not import a web framework.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shipit.config.rollout import RolloutSettings, RolloutSpec, VersionConfig, spec_for
from shipit.core.clock import Clock
from shipit.core.decisions import NO_LOG, DecisionLog
from shipit.core.errors import ShipitError
from shipit.core.fleet import ReplicaState
from shipit.core.views import RequestView
from shipit.policy import rollout
from shipit.policy.rollout import Command, Phase, RolloutDecision, RolloutSnapshot, RolloutState
from shipit.policy.shadow import MirrorConfig
from shipit.services.rollout_metrics import RolloutPublisher
from shipit.services.rollout_records import (
    Windows,
    analysis_dict,
    shadow_dict,
    state_dict,
    state_from,
)
from shipit.services.router import Lease, RouterService
from shipit.services.shadow import ShadowMirror
from shipit.services.upstream import Upstream
from shipit.telemetry.instruments import RolloutMetrics

log = logging.getLogger("shipit.rollouts")


class RolloutError(ShipitError):
    """A rollout request that cannot be honoured (unknown deployment or version, one running)."""


class VersionPool(Protocol):
    """Where a version's replicas start and stop (``backends.Fleet``)."""

    async def start_version(self, deployment: str, version: VersionConfig) -> list[str]:
        """Start ``version.replicas`` replicas of ``version``, registered as ``starting``."""
        ...

    async def stop_replica(self, deployment: str, replica_id: str) -> None: ...

    def adopt_version(self, deployment: str, version: VersionConfig) -> None:
        """From now on, the deployment's replicas (autoscaled ones too) run ``version``."""
        ...


@dataclass(slots=True)
class Active:
    """One deployment's rollout as the controller drives it."""

    spec: RolloutSpec
    state: RolloutState
    started_at: float  # wall clock, for people
    windows: Windows = field(default_factory=Windows)
    warm: set[str] = field(default_factory=set)
    warming: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    command: Command | None = None
    last: RolloutDecision | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    stopping: set[str] = field(default_factory=set)
    launched: bool = False  # the candidate's replicas were asked for
    shadow: ShadowMirror | None = None  # strategy shadow: the mirror and its pairs


class RolloutController:
    def __init__(
        self,
        routers: Mapping[str, RouterService],
        pool: VersionPool,
        *,
        upstream: Callable[[], Upstream],
        clock: Clock,
        home: Path | None = None,
        tick_s: float = 1.0,
        decisions: DecisionLog = NO_LOG,
        wall: Callable[[], float] = time.time,
        metrics: RolloutMetrics | None = None,
    ) -> None:
        self.routers = dict(routers)
        self.pool = pool
        self._upstream = upstream
        self.clock = clock
        self.home = home
        self.tick_s = tick_s
        self.decisions = decisions
        self.wall = wall
        self.publisher = RolloutPublisher(metrics) if metrics is not None else None
        self.active: dict[str, Active] = {}
        self.current: dict[str, str] = {}
        self.settings: dict[str, RolloutSettings] = {}
        self._adopted: dict[str, VersionConfig] = {}
        # A finished rollout's losing version, found in ``home`` at start: replicas of it that
        # a previous gateway left running (pods) get no traffic and are stopped.
        self._leftovers: dict[str, str] = {}
        self._reaping: set[str] = set()
        for name, router in self.routers.items():
            self.settings[name] = router.deployment.rollout
            self.current[name] = router.registry.version
            router.outcome_listeners.append(self._outcome_listener(name))
            router.answer_listeners.append(self._answer_listener(name))

    # ----- the router's listeners -----------------------------------------------------------
    def _version(self, deployment: str, lease: Lease) -> str | None:
        record = self.routers[deployment].registry.get(lease.replica_id)
        return record.version if record is not None else None

    def _outcome_listener(self, deployment: str) -> Callable[[Lease, str], None]:
        def listener(lease: Lease, outcome: str) -> None:
            active = self.active.get(deployment)
            if active is None or outcome not in ("ok", "failed"):
                return
            version = self._version(deployment, lease)
            if version is not None:
                active.windows.outcome(version, outcome == "ok")

        return listener

    def _answer_listener(
        self, deployment: str
    ) -> Callable[[Lease, float | None, float | None, bool], None]:
        def listener(lease: Lease, ttft_s: float | None, tpot_s: float | None, met: bool) -> None:
            active = self.active.get(deployment)
            version = self._version(deployment, lease) if active is not None else None
            if active is not None and version is not None:
                active.windows.answer(version, ttft_s, tpot_s, met)
                if active.shadow is not None:
                    active.shadow.on_answer(lease, ttft_s, tpot_s)

        return listener

    # ----- commands -------------------------------------------------------------------------
    def _router(self, deployment: str | None) -> tuple[str, RouterService]:
        name = deployment or next(iter(self.routers))
        router = self.routers.get(name)
        if router is None:
            raise RolloutError(
                f"no deployment named {name!r}; deployments: {', '.join(self.routers)}",
                field="deployment",
            )
        return name, router

    def candidate(self, deployment: str, request: Mapping[str, Any]) -> VersionConfig:
        """The version a start request names: one of the ``rollout.versions`` of
        ``shipit.yaml`` (its fields overridden by the request's), or a new one."""
        name = request.get("version")
        if not isinstance(name, str) or not name:
            raise RolloutError("a rollout needs the new version's name (version)", field="version")
        known = {v.name: v for v in self.settings[deployment].versions}
        data: dict[str, Any] = known[name].model_dump() if name in known else {"name": name}
        for key in ("model", "simulate", "replica_args", "replicas"):
            if request.get(key) is not None:
                data[key] = request[key]
        try:
            return VersionConfig.model_validate(data)
        except ValueError as exc:
            raise RolloutError(f"version {name!r}: {exc}", field="version") from None

    async def start(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Begin a rollout from a start request (``shipit rollout start``'s JSON)."""
        name, router = self._router(request.get("deployment"))
        running = self.active.get(name)
        if running is not None and not running.state.phase.done:
            raise RolloutError(
                f"deployment {name!r} is already rolling out {running.spec.candidate.name} "
                f"({running.state.phase.value}); promote or abort it first",
                field="deployment",
            )
        version = self.candidate(name, request)
        settings = self.settings[name].model_copy(update={"version": self.current[name]})
        if version.replicas is None:
            version = version.model_copy(update={"replicas": router.deployment.replicas or 1})
        overrides = {
            k: request.get(k)
            for k in (
                "strategy",
                "steps_percent",
                "bake_s",
                "keep_old_s",
                "auto_promote",
                "shadow_percent",
            )
        }
        try:
            spec = spec_for(settings, name, version, **overrides)
        except ValueError as exc:
            raise RolloutError(f"rollout of {name!r}: {exc}", field="rollout") from None
        now = self.clock.now()
        active = Active(spec, rollout.start(spec, now), self.wall())
        self.active[name] = active
        self._leftovers.pop(name, None)
        router.set_version_weights(dict(rollout.weights(spec, 0.0)))
        if self.publisher is not None:
            self.publisher.begin(name, active.state, (spec.baseline, version.name))
        await self._launch(name, active)
        self._note(name, active, "start", f"rollout of {version.name} over {spec.baseline}")
        self._save(name, active, now)
        return self.describe(name, active)

    async def _launch(self, name: str, active: Active) -> None:
        active.launched = True
        ids = await self.pool.start_version(name, active.spec.candidate)
        log.info("rollout of %s: started %s", active.spec.candidate.name, ", ".join(ids))

    def offer(self, view: RequestView, body: bytes) -> None:
        """The request path: a shadow rollout may mirror this request (never waits)."""
        active = self.active.get(view.deployment)
        if active is not None and active.shadow is not None and active.state.phase is Phase.SHADOW:
            active.shadow.offer(view, body)

    def command(self, deployment: str | None, command: Command) -> dict[str, Any]:
        name, _ = self._router(deployment)
        active = self.active.get(name)
        if active is None or active.state.phase.done:
            raise RolloutError(
                f"deployment {name!r} has no rollout in progress to {command.value}",
                field="deployment",
            )
        active.command = command
        return self.describe(name, active)

    # ----- the loop -------------------------------------------------------------------------
    async def run(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("rollout tick failed")
            await asyncio.sleep(self.tick_s)

    async def tick(self) -> None:
        for name, version in self._leftovers.items():
            self._reap(name, version)
        for name, active in list(self.active.items()):
            if active.state.phase.done:
                continue
            if not active.launched:
                await self._launch(name, active)
            self._warm_up(name, active)
            await self._step(name, active)

    def _warm_up(self, name: str, active: Active) -> None:
        router = self.routers[name]
        for record in router.registry.records():
            rid = record.replica_id
            if record.version != active.spec.candidate.name or rid in active.warm:
                continue
            if record.state is ReplicaState.READY and rid not in active.warming:
                task = asyncio.create_task(self._warm_one(name, active, rid, record.url))
                active.warming[rid] = task

    async def _warm_one(self, name: str, active: Active, rid: str, url: str) -> None:
        payload = {"model": self.routers[name].deployment.model_name, "prompt": "Hello",
                   "max_tokens": 1, "temperature": 0}  # fmt: skip
        try:
            status, _ = await self._upstream().post_json(
                url + "/v1/completions", payload, timeout_s=60.0
            )
        except Exception as exc:
            status = 0
            log.warning("warm-up of %s failed: %s", rid, exc)
        finally:
            active.warming.pop(rid, None)
        if status == 200:
            active.warm.add(rid)

    def _ready(self, name: str, version: str, warm: set[str] | None) -> int:
        count = 0
        for r in self.routers[name].registry.records():
            if r.version == version and r.state is ReplicaState.READY:
                count += warm is None or r.replica_id in warm
        return count

    async def _step(self, name: str, active: Active) -> None:
        spec, router = active.spec, self.routers[name]
        now = self.clock.now()
        cand = spec.candidate.name
        snapshot = RolloutSnapshot(
            now,
            self._ready(name, spec.baseline, None),
            self._ready(name, cand, active.warm),
            active.windows.view(spec.baseline),
            active.windows.view(cand),
            active.command,
        )
        active.command = None
        decision, state = rollout.decide(spec, snapshot, active.state)
        changed = active.last is None or (
            decision.reason_code,
            decision.weights,
        ) != (active.last.reason_code, active.last.weights)
        if changed or decision.analysis is not None:
            # Only the ticks that judged or changed something: a snapshot holds the windows'
            # samples, and a bake tick in between decides nothing new.
            self.decisions.record("rollout", name, snapshot, active.state, decision)
            if self.publisher is not None:
                versions = (spec.baseline, cand)
                self.publisher.decided(name, decision, snapshot.command, versions)
        active.state, active.last = state, decision
        split = dict(decision.weights)
        if snapshot.candidate_ready == 0 and not state.phase.done:
            split = dict(rollout.weights(spec, 0.0))  # resumed: the candidate is not warm yet
        router.set_version_weights(split)
        if self.publisher is not None:
            self.publisher.show(name, state, tuple(split.items()))
        for version in decision.reset:
            active.windows.reset(version)
        if decision.stop_version is not None:
            self._stop_version(name, active, decision.stop_version)
        if state.phase is Phase.SHADOW and active.shadow is None:
            config = MirrorConfig(spec.shadow_percent, spec.shadow_max_in_flight)
            active.shadow = ShadowMirror(
                router, cand, config, upstream=self._upstream, clock=self.clock, warm=active.warm
            )
        if state.phase is Phase.COMPLETE:
            self.current[name] = cand
            router.registry.version = cand
            self.pool.adopt_version(name, spec.candidate)
            self._adopted[name] = spec.candidate
        if changed:
            self._note(name, active, decision.reason_code, decision.reason)
            log.info("rollout %s: %s: %s", name, decision.reason_code, decision.reason)
            self._save(name, active, now)

    def _stop_version(self, name: str, active: Active, version: str) -> None:
        for record in self.routers[name].registry.records():
            rid = record.replica_id
            if record.version == version and rid not in active.stopping:
                active.stopping.add(rid)
                # Traffic is already off it: drain, then stop, in the background.
                asyncio.get_running_loop().create_task(self.pool.stop_replica(name, rid))

    def _reap(self, name: str, version: str) -> None:
        for record in self.routers[name].registry.records():
            rid = record.replica_id
            if record.version == version and rid not in self._reaping:
                self._reaping.add(rid)
                log.info("stopping %s: left running by a finished rollout (%s)", rid, version)
                asyncio.get_running_loop().create_task(self.pool.stop_replica(name, rid))

    # ----- reading --------------------------------------------------------------------------
    def _note(self, name: str, active: Active, code: str, reason: str) -> None:
        active.history.append(
            {
                "at": round(self.wall(), 3),
                "code": code,
                "reason": reason,
                "phase": active.state.phase.value,
                "candidate_percent": active.state.candidate_percent,
            }
        )

    def describe(self, name: str, active: Active) -> dict[str, Any]:
        last = active.last
        return {
            "deployment": name,
            "baseline": active.spec.baseline,
            "candidate": active.spec.candidate.model_dump(),
            "strategy": active.spec.strategy,
            "phase": active.state.phase.value,
            "step": active.state.step + 1,
            "steps_percent": active.spec.steps_percent,
            "candidate_percent": active.state.candidate_percent,
            "warm_replicas": sorted(active.warm),
            "started_at": active.started_at,
            "reason_code": last.reason_code if last else "start",
            "reason": last.reason if last else "starting the candidate's replicas",
            "analysis": analysis_dict(last),
            "shadow": shadow_dict(active.shadow.report(), active.shadow.decisions)
            if active.shadow is not None
            else None,
            "events": active.history[-50:],
        }

    def status(self) -> list[dict[str, Any]]:
        return [self.describe(n, a) for n, a in self.active.items()]

    def history(self) -> list[dict[str, Any]]:
        """Finished rollouts (newest last), from ``history.jsonl``, then the ones in memory."""
        out: list[dict[str, Any]] = []
        if self.home is not None and (self.home / "history.jsonl").is_file():
            for line in (self.home / "history.jsonl").read_text(encoding="utf-8").splitlines():
                if line.strip():
                    out.append(json.loads(line))
        return out

    # ----- persistence ----------------------------------------------------------------------
    def _save(self, name: str, active: Active, now_s: float) -> None:
        if self.home is None:
            return
        self.home.mkdir(parents=True, exist_ok=True)
        doc = {
            "spec": active.spec.model_dump(mode="json"),
            "state": state_dict(active.state, now_s),
            "started_at": active.started_at,
            "history": active.history,
            "current_version": self.current[name],
            "adopted": self._adopted[name].model_dump() if name in self._adopted else None,
        }
        path = self.home / f"{name}.json"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(doc, indent=1), encoding="utf-8")
        tmp.replace(path)
        if active.state.phase.done:
            summary = {**self.describe(name, active), "ended_at": self.wall()}
            with (self.home / "history.jsonl").open("a", encoding="utf-8") as f:
                f.write(json.dumps(summary) + "\n")

    def load(self) -> None:
        """Bring back what a previous gateway left in ``home``; call before replicas start."""
        if self.home is None or not self.home.is_dir():
            return
        now = self.clock.now()
        for name, router in self.routers.items():
            path = self.home / f"{name}.json"
            if not path.is_file():
                continue
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("adopted"):
                version = VersionConfig.model_validate(doc["adopted"])
                self.pool.adopt_version(name, version)
                self._adopted[name] = version
            self.current[name] = doc.get("current_version") or self.current[name]
            router.registry.version = self.current[name]
            spec = RolloutSpec.model_validate(doc["spec"])
            state = state_from(doc["state"], now)
            if state.phase.done:
                # The gateway may have exited before the losing version's replicas stopped.
                done = state.phase is Phase.ROLLED_BACK
                loser = spec.candidate.name if done else spec.baseline
                router.set_version_weights({self.current[name]: 100.0, loser: 0.0})
                self._leftovers[name] = loser
                continue
            active = Active(spec, state, float(doc["started_at"]), history=list(doc["history"]))
            self.active[name] = active
            router.set_version_weights(dict(rollout.weights(spec, 0.0)))
            if self.publisher is not None:
                self.publisher.begin(name, state, (spec.baseline, spec.candidate.name))
            self._note(
                name, active, "resume", f"resumed at {state.phase.value}, step {state.step + 1}"
            )
            log.info("rollout %s resumed at %s", name, state.phase.value)

    async def close(self) -> None:
        for active in self.active.values():
            for task in active.warming.values():
                task.cancel()
            if active.shadow is not None:
                await active.shadow.close()
        now = self.clock.now()
        for name, active in self.active.items():
            if not active.state.phase.done:
                self._save(name, active, now)
