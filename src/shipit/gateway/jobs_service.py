"""Async jobs inside the gateway: the store, the worker, and how a job line runs.

``JobsService`` owns the store (``jobs.store.SqliteJobStore``, opened on the first jobs call or
at start when its file already exists, so a gateway that never sees a job writes nothing), the
worker (``jobs.runner.JobRunner``) and the webhook sender. A line runs through the same
``RequestCore`` as an interactive request (admission, routing, retries), with the priority
of ``jobs.priority`` (the lowest by default) and never streamed; how many run at once is
``policy.jobs.job_slots`` over every deployment's routable slots. An admission refusal (queue
full, shed, timeout) gives the line back without counting an attempt.

With API keys on, a line is its tenant's like any request: it starts only while the tenant's
token budget is not spent (else it is answered 429 ``insufficient_quota`` into the error file:
a budget never refills by itself, so waiting would only hold the batch until it expires) and
its tokens-per-minute bucket is above zero (else it waits, given back without counting an
attempt); once answered, its tokens (the replica's usage, else an estimate) are charged to the
tenant's budget and tokens per minute, kept across restarts like an HTTP request's. Lines do not
take from ``requests_per_min``: that limit paces requests that reach the gateway, and the batch
or async request that brought the lines was one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from contextlib import aclosing
from pathlib import Path
from typing import TYPE_CHECKING

from shipit.config.gateway import DeploymentConfig, ShipitConfig
from shipit.config.paths import shipit_home
from shipit.core import openai_errors as oe
from shipit.core.clock import Clock
from shipit.core.errors import ShipitError
from shipit.core.views import RequestView
from shipit.gateway.errors import error_json, kind_of
from shipit.gateway.metrics import GatewayMetrics
from shipit.gateway.parse import parse_request_async
from shipit.gateway.prompt_tokens import PromptTokenizer
from shipit.gateway.request_core import (
    BrokenMidStream,
    Failed,
    Finished,
    Rejected,
    RequestCore,
    Started,
)
from shipit.jobs.formats import WorkItem
from shipit.jobs.runner import AsyncJobStore, JobRunner, Outcome
from shipit.jobs.store import open_store
from shipit.jobs.webhooks import WebhookSender
from shipit.policy.jobs import (
    JobSlotsDecision,
    JobSlotsSnapshot,
    JobSlotsState,
    TtftSample,
    job_demand,
    job_slots,
)
from shipit.policy.ratelimit import RateLimits, charge_tokens, decide_tokens
from shipit.services.router import Lease, RouterService

if TYPE_CHECKING:
    from shipit.gateway.auth import Security

log = logging.getLogger("shipit.gateway.jobs")

MAX_SAMPLES = 1000  # TTFT samples kept between two job-slot decisions
JOB_REQUEST_PREFIX = "job-"  # request ids of job lines: told apart from interactive requests
LINE_EWMA_ALPHA = 0.1  # weight of the newest line in the line-time mean


def default_store_path(config: ShipitConfig) -> Path:
    if config.jobs.store_path:
        return Path(config.jobs.store_path).expanduser()
    return shipit_home() / f"jobs-{config.gateway.port}.sqlite3"


class JobsService:
    def __init__(
        self,
        config: ShipitConfig,
        routers: Mapping[str, RouterService],
        core: RequestCore,
        metrics: GatewayMetrics,
        clock: Clock,
    ) -> None:
        self.config = config.jobs
        self.path = default_store_path(config)
        self.url: str | None = None
        self.routers = routers
        self.deployments: dict[str, DeploymentConfig] = {d.name: d for d in config.deployments}
        self.tokenizers: Mapping[str, PromptTokenizer] = {}  # set by the gateway (prefix hashing)
        self.core = core
        self.metrics = metrics
        self.clock = clock
        self.wall = time.time  # unix time: stored, and shared between gateways
        self.jobs: AsyncJobStore | None = None
        self.runner: JobRunner | None = None
        self._task: asyncio.Task[None] | None = None
        self.slots_state = JobSlotsState()
        # Interactive streams' TTFTs since the last slots decision, for the TTFT guard; a sample
        # is clean when no job request ran from its arrival on (jobs quiet since before it).
        self._samples: list[TtftSample] = []
        self._jobs_quiet_since: float | None = 0.0
        self._last_reason = ""  # the job-slot decision's reason code, logged when it changes
        self.line_s: float | None = None  # seconds a job line holds a slot (EWMA), for pacing
        self._last: JobSlotsDecision | None = None  # the latest job-slot decision
        # When an interactive request last finished: a job worker started (or woken) in a
        # lull between two requests must not take the fleet for idle.
        self._interactive_seen_s: float | None = None
        for router in routers.values():
            router.answer_listeners.append(self._on_answer)
        self._deployment_of: dict[str, str] = {}  # running job line -> its deployment
        self.yielded = 0  # job lines stopped so that a waiting interactive request got a slot
        if self.config.yield_to_interactive:
            for router in routers.values():
                router.wait_listeners.append(self._on_wait)
        self.security: Security | None = None  # set by the gateway: tenants' limits and usage
        secret_env = self.config.webhook.secret_env
        secret = os.environ.get(secret_env, "") if secret_env else ""
        self.webhooks = WebhookSender(self.config.webhook, secret.encode()) if secret else None

    # ----- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Resume the work of a store left by an earlier run (or another gateway)."""
        url_env = self.config.store_url_env
        if url_env:
            self.url = os.environ.get(url_env)
            if not self.url:
                raise ShipitError(
                    f"jobs.store_url_env names {url_env}, which is not set; set it to a "
                    "postgresql:// URL, or drop store_url_env to use the SQLite store",
                    field="jobs.store_url_env",
                )
        if self.url or self.path.exists():
            self.open()

    def open(self) -> AsyncJobStore:
        """The store, opened (and the worker started) on first use."""
        if self.jobs is None:
            self.jobs = AsyncJobStore(open_store(self.path, self.url))
            self.runner = JobRunner(
                self.jobs,
                self.execute,
                self.slots,
                self.config,
                wall=self.wall,
                webhooks=self.webhooks,
            )
            self._task = asyncio.create_task(self.runner.run())
            log.info("job store %s open", "(PostgreSQL)" if self.url else self.path)
        return self.jobs

    async def stop(self) -> None:
        if self._task is not None and self.runner is not None:
            self.runner.shutdown()
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 30.0)
            except TimeoutError:
                log.warning("the job worker did not stop within 30 s; cancelling it")
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.jobs is not None:
            await self.jobs.close()
        self.jobs, self.runner, self._task = None, None, None  # a restart opens it again

    def wake(self) -> None:
        if self.runner is not None:
            self.runner.wake()

    def queued_work(self) -> int:
        """Job lines waiting to run (as of the worker's last look), for the autoscaler: while
        pacing holds jobs below the share, only those their windows need now."""
        if self.runner is None:
            return 0
        running = len(self.runner.running)
        waiting = self.runner.pending - running
        need = job_demand(self.config, self.runner.backlog, self.line_s)
        if need is not None:
            waiting = min(waiting, need - running)
        return max(0, waiting)

    def status(self) -> dict[str, object]:
        """``/shipit/status``'s ``jobs``: how many job lines may run and why, what is left."""
        runner = self.runner
        d = self._last
        return {
            "running": len(runner.running) if runner is not None else 0,
            "left": runner.pending if runner is not None else 0,
            "slots": None if d is None else d.limit,
            "reason_code": None if d is None else d.reason_code,
            "reason": None if d is None else d.reason,
            "line_s": None if self.line_s is None else round(self.line_s, 4),
            "autoscaler_demand": self.queued_work(),
            "yielded": self.yielded,
        }

    # ----- scheduling ----------------------------------------------------------------------
    def slots(self, jobs_in_flight: int) -> int:
        now = self.clock.now()
        capacity = in_flight = queued = 0
        for router in self.routers.values():
            for r in router.registry.records():
                if r.routable(now):
                    capacity += r.max_concurrency
                    in_flight += r.in_flight
            queued += router.queued()
        samples, self._samples = tuple(self._samples), []
        backlog = self.runner.backlog if self.runner is not None else ()
        snapshot = JobSlotsSnapshot(
            now,
            capacity,
            in_flight,
            queued,
            jobs_in_flight,
            samples,
            backlog,
            self.line_s,
            self._interactive_seen_s,
        )
        decision, self.slots_state = job_slots(self.config, snapshot, self.slots_state)
        self._last = decision
        if decision.reason_code != self._last_reason:
            self._last_reason = decision.reason_code
            log.info(
                "job slots: %d (%s): %s", decision.limit, decision.reason_code, decision.reason
            )
        if jobs_in_flight or (decision.limit > 0 and self.queued_work() > 0):
            self._jobs_quiet_since = None  # jobs run, or may start now
        elif self._jobs_quiet_since is None:
            self._jobs_quiet_since = now
        return decision.limit

    def _on_wait(self, request: RequestView) -> None:
        """An interactive request waits for a slot: the youngest job line of its deployment
        gives its slot up (the line goes back to the queue, no attempt counted)."""
        if self.runner is None or request.request_id.startswith(JOB_REQUEST_PREFIX):
            return
        mine = [i for i, d in self._deployment_of.items() if d == request.deployment]
        line = self.runner.yield_line(mine) if mine else None
        if line is not None:
            self.yielded += 1
            log.debug("job line %s yields its slot to %s", line, request.request_id)

    def _on_answer(
        self, lease: Lease, ttft_s: float | None, tpot_s: float | None, slo_met: bool
    ) -> None:
        view = lease.request
        if view.request_id.startswith(JOB_REQUEST_PREFIX):
            return
        self._interactive_seen_s = self.clock.now()
        if ttft_s is None or self.config.ttft_tolerance is None:
            return
        if self.runner is None or len(self._samples) >= MAX_SAMPLES:
            return  # no job worker takes them in (no jobs yet), or it is far behind
        quiet = self._jobs_quiet_since
        self._samples.append(
            TtftSample(ttft_s, clean=quiet is not None and quiet <= view.arrived_s)
        )

    def _limits(self, tenant: str) -> RateLimits | None:
        """The tenant's limits when keys are on and it has any; else None (nothing to charge)."""
        sec = self.security
        if sec is None or sec.keys is None:
            return None
        t = sec.keys.file.tenants.get(tenant)
        if t is None or (t.tokens_per_min is None and t.token_budget is None):
            return None
        return RateLimits(t.requests_per_min, t.tokens_per_min, t.token_budget)

    def _quota_refusal(self, item: WorkItem, limits: RateLimits) -> Outcome | None:
        """Why the line may not start now (its tenant's budget or tokens per minute), if so."""
        assert self.security is not None
        sec = self.security
        decision, sec.rate[item.tenant] = decide_tokens(limits, sec.now(), sec.state(item.tenant))
        if decision.allowed:
            return None
        if decision.reason_code == "budget":
            msg = (
                f"tenant {item.tenant!r} has used its token budget of {limits.token_budget} "
                "tokens; this line was not run. An admin may raise the budget "
                f"(`shipit keys tenant {item.tenant} --token-budget N`); then submit the "
                "line again"
            )
            return Outcome(oe.INSUFFICIENT_QUOTA.status, error_json(oe.INSUFFICIENT_QUOTA, msg))
        return Outcome(retry=True, count_attempt=False, why="tenant tokens_per_min")

    def _charge(self, tenant: str, limits: RateLimits, tokens: int) -> None:
        assert self.security is not None
        sec = self.security
        now_s = sec.now()
        sec.rate[tenant] = state = charge_tokens(limits, sec.state(tenant), tokens, now_s)
        if sec.usage is not None:
            sec.usage.note(tenant, state.spent_tokens, now_s)

    async def execute(self, item: WorkItem) -> Outcome:
        """One line through the request core; the answer, or why to try it again later."""
        limits = self._limits(item.tenant)
        if limits is not None:
            refused = self._quota_refusal(item, limits)
            if refused is not None:
                return refused
        adapters: dict[str, set[str]] = {}
        for name, router in self.routers.items():
            adapters[name] = set().union(*(r.adapters for r in router.registry.records()))
        try:
            view = await parse_request_async(
                request_id=f"{JOB_REQUEST_PREFIX}{item.id}-{item.attempts}",
                path=item.url,
                headers={},
                body=item.body,
                deployments=self.deployments,
                adapters=adapters,
                now_s=self.clock.now(),
                tokenizers=self.tokenizers,
            )
        except ShipitError as exc:
            kind = kind_of(exc)
            return Outcome(kind.status, error_json(kind, exc.message, exc.field))
        view = dataclasses.replace(view, priority=self.config.priority, stream=False)
        self._deployment_of[item.id] = view.deployment
        started = self.clock.now()
        try:
            outcome = await self._run_line(item, view, limits)
        finally:
            self._deployment_of.pop(item.id, None)
        if not outcome.retry:  # an answer: how long a line holds a slot, for pacing
            held = self.clock.now() - started
            last = self.line_s
            self.line_s = held if last is None else last + LINE_EWMA_ALPHA * (held - last)
        return outcome

    async def _run_line(
        self, item: WorkItem, view: RequestView, limits: RateLimits | None
    ) -> Outcome:
        router = self.routers[view.deployment]
        router.on_request(view.prompt_tokens_estimate)
        status, chunks = 0, []
        outcome: Outcome | None = None
        used: int | None = None
        async with aclosing(self.core.run(view, item.body, router)) as events:
            async for event in events:
                if isinstance(event, bytes):
                    chunks.append(event)
                elif isinstance(event, Started):
                    status = event.status
                elif isinstance(event, Rejected):
                    outcome = Outcome(retry=True, count_attempt=False, why=event.reason_code)
                elif isinstance(event, Failed):
                    outcome = Outcome(event.status, event.body, retry=event.status >= 500)
                elif isinstance(event, BrokenMidStream):
                    outcome = Outcome(502, event.body, retry=True, why=event.why)
                elif isinstance(event, Finished):
                    self.metrics.request_done(view.deployment, event.status, event.policy)
                    if event.prompt_tokens is not None or event.output_tokens is not None:
                        used = (event.prompt_tokens or 0) + (event.output_tokens or 0)
        if limits is not None and outcome is None and 200 <= status < 300:
            self._charge(item.tenant, limits, used if used else len(item.body) // 4)
        if outcome is not None:
            return outcome
        body = b"".join(chunks)
        retry = status >= 500 or status == 429
        return Outcome(status, body, retry=retry, why=f"HTTP {status}" if retry else "")
