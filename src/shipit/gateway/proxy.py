"""The hot path: proxy one OpenAI request to a replica and stream the answer back unbuffered.

Owns, per request: admission and a lease from the router service, loading a LoRA adapter when
the decision says so, opening the upstream request, retrying on another replica for connect
errors, 5xx and timeouts before the first byte (bounded by ``max_attempts`` and the retry
budget), passing every body chunk through as it arrives, ending a stream that breaks midway
with an SSE error event, aborting the upstream when the client goes away (its disconnect
cancels the handler), SSE keep-alive comments for a streaming request held while no replica
is ready (scale from zero), and the per-request metrics. Raw ASGI on purpose: no framework on the
hot path. It must not decide where requests go (the policies do) nor parse the answer: what
the metrics need from the bytes (TTFT, ITL, usage, goodput) is ``accounting.Tally``'s job.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from shipit.core.views import RequestView
from shipit.gateway.accounting import Tally
from shipit.gateway.metrics import GatewayMetrics
from shipit.services.monitor import AdapterLoader
from shipit.services.router import AdmissionError, Lease, RouterService
from shipit.services.upstream import MidStreamError, Upstream, UpstreamError, UpstreamResponse

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DONE_TAIL = b"data: [DONE]\n\n"
KEEPALIVE = b": waiting for a replica to start\n\n"
_HELD = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-shipit-held", b"cold-start"),
]
_ERROR_TYPES = {429: "rate_limit_error", 503: "service_unavailable"}
_JSON = (b"content-type", b"application/json")


def error_body(message: str, *, type_: str, code: int | str, param: str | None = None) -> bytes:
    """OpenAI's error shape."""
    err = {"message": message, "type": type_, "param": param, "code": code}
    return json.dumps({"error": err}).encode()


async def send_json(
    send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    await send(
        {"type": "http.response.start", "status": status, "headers": headers + (extra or [])}
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


@dataclass(slots=True)
class Outcome:
    status: int
    policy: str = "-"


class Proxy:
    def __init__(
        self,
        *,
        metrics: GatewayMetrics,
        upstream: Callable[[], Upstream],
        adapters: Callable[[], AdapterLoader],
        now: Callable[[], float],
    ) -> None:
        self.metrics = metrics
        self._upstream = upstream
        self._adapters = adapters
        self.now = now

    async def forward(
        self, view: RequestView, body: bytes, router: RouterService, send: Send, guard: Guard
    ) -> Outcome:
        attempt = 0
        exclude: set[str] = set()
        dep = router.deployment
        while True:
            attempt += 1
            try:
                lease = await self._acquire(view, router, frozenset(exclude), send, guard)
            except AdmissionError as exc:
                self.metrics.rejections.labels(dep.name, exc.reason_code).inc()
                extra = (
                    [(b"retry-after", str(exc.retry_after_s).encode())] if exc.retry_after_s else []
                )
                type_ = _ERROR_TYPES.get(exc.status, "timeout")
                body = error_body(exc.reason, type_=type_, code=exc.status)
                await self._reply_error(send, guard, exc.status, body, extra)
                return Outcome(exc.status)
            d = lease.decision
            self.metrics.decision(dep.name, d.policy, d.reason_code)
            if lease.queue_wait_s:
                self.metrics.per_request(dep.name).queue_wait.observe(lease.queue_wait_s)
            try:
                resp = await self._open(view, body, lease, router)
            except UpstreamError as exc:
                # An adapter that cannot be loaded is no fault of the replica: no ejection, and
                # another replica would fail the same way.
                adapter = exc.kind == "adapter"
                why = exc.message
                router.release(lease, outcome="aborted" if adapter else "failed", why=why)
                if not adapter and router.may_retry(attempt):
                    exclude.add(lease.replica_id)
                    self.metrics.retries.labels(dep.name, exc.kind).inc()
                    continue
                status = 504 if exc.kind == "timeout" else 502
                msg = f"replica {lease.replica_id} failed after {attempt} attempt(s): {exc.message}"
                body = error_body(msg, type_="upstream_error", code=status)
                await self._reply_error(send, guard, status, body, [])
                return Outcome(status, d.policy)
            except BaseException:
                router.release(lease, outcome="aborted")
                raise
            if resp.status >= 500 and router.may_retry(attempt):
                resp.close()
                router.release(lease, outcome="failed", why=f"HTTP {resp.status}")
                exclude.add(lease.replica_id)
                self.metrics.retries.labels(dep.name, f"http_{resp.status}").inc()
                continue
            return await self._relay(view, resp, lease, router, send, guard)

    async def _acquire(
        self,
        view: RequestView,
        router: RouterService,
        exclude: frozenset[str],
        send: Send,
        guard: Guard,
    ) -> Lease:
        """A lease; a streaming request held while no replica is ready gets its response
        started and an SSE comment every ``cold_start_keepalive_s`` so that clients and
        proxies in between keep the connection open through a cold start."""
        if not view.stream or guard.started or not router.cold():
            return await router.acquire(view, exclude=exclude)
        task = asyncio.ensure_future(router.acquire(view, exclude=exclude))
        interval_s = router.deployment.queueing.cold_start_keepalive_s
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=interval_s)
                if done:
                    return task.result()
                if not guard.started:
                    guard.started = True
                    await send({"type": "http.response.start", "status": 200, "headers": _HELD})
                await send({"type": "http.response.body", "body": KEEPALIVE, "more_body": True})
        except BaseException:
            if task.done() and not task.cancelled() and task.exception() is None:
                router.release(task.result(), outcome="aborted")  # granted while we were sending
            task.cancel()  # the router forgets the waiter (and releases a lease granted meanwhile)
            raise

    async def _reply_error(
        self, send: Send, guard: Guard, status: int, body: bytes, extra: list[tuple[bytes, bytes]]
    ) -> None:
        """A JSON error, or an SSE error event when a held stream's 200 is already sent (a
        status cannot change after the headers); the event carries the status as its code."""
        if not guard.started:
            await send_json(send, status, body, extra)
            return
        guard.active = False
        event = b"data: " + body + b"\n\n" + DONE_TAIL
        await send({"type": "http.response.body", "body": event, "more_body": False})

    async def _open(
        self, view: RequestView, body: bytes, lease: Lease, router: RouterService
    ) -> UpstreamResponse:
        adapter = lease.decision.load_adapter
        if adapter is not None:
            try:
                await self._adapters().ensure(lease.replica_id, lease.url, adapter)
            except UpstreamError:
                router.adapter_failed(lease.replica_id, adapter)
                raise
        headers = {"content-type": "application/json", "x-request-id": view.forward_id}
        return await self._upstream().open(
            lease.url + view.path,
            body,
            headers,
            first_byte_timeout_s=router.deployment.retries.first_byte_timeout_s,
        )

    async def _relay(
        self,
        view: RequestView,
        resp: UpstreamResponse,
        lease: Lease,
        router: RouterService,
        send: Send,
        guard: Guard,
    ) -> Outcome:
        d = lease.decision
        headers = [
            (b"content-type", resp.headers.get("content-type", "application/json").encode()),
            (b"x-shipit-replica", lease.replica_id.encode()),
            (b"x-shipit-route", f"{d.policy}/{d.reason_code}".encode()),
            (b"x-shipit-request-id", view.forward_id.encode()),
        ]
        if resp.status >= 400:
            headers.append((b"x-shipit-upstream-status", str(resp.status).encode()))
        outcome = "aborted"
        tally = Tally(arrived_s=view.arrived_s, stream=view.stream)
        try:
            if guard.started and resp.status >= 400:
                answer = b"".join([chunk async for chunk in resp.chunks()])
                resp.release()
                outcome = "failed" if resp.status >= 500 else "ok"
                await self._reply_error(send, guard, resp.status, answer, [])
                return Outcome(resp.status, d.policy)
            if not guard.started:
                await send(
                    {"type": "http.response.start", "status": resp.status, "headers": headers}
                )
            ended = False
            try:
                async for chunk in resp.chunks():
                    tally.chunk(chunk, self.now())
                    if chunk.endswith(DONE_TAIL):
                        guard.active = False
                        await send(
                            {"type": "http.response.body", "body": chunk, "more_body": False}
                        )
                        ended = True
                    else:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                resp.release()
                outcome = "failed" if resp.status >= 500 else "ok"
            except MidStreamError as exc:
                resp.close()
                outcome = "failed"
                router.release(lease, outcome="failed", why=f"mid-stream: {exc}")
                self.metrics.midstream_errors.labels(router.deployment.name).inc()
                await self._end_broken(view, lease, send, guard, str(exc))
                return Outcome(502, d.policy)
            if not ended:
                guard.active = False
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if outcome == "aborted":
                resp.close()  # the client went away: the replica sees its connection drop
            router.release(lease, outcome=outcome)
        dep = router.deployment
        tally.finish(
            self.metrics.per_request(dep.name),
            now_s=self.now(),
            status=resp.status,
            chat=view.path.endswith("chat/completions"),
            slo=dep.slo,
        )
        if 200 <= resp.status < 300:
            ttft_s = tally.ttft_s if view.stream else None
            router.answered(lease, ttft_s=ttft_s, tpot_s=tally.tpot_s, slo_met=tally.slo_met)
        return Outcome(resp.status, d.policy)

    async def _end_broken(
        self, view: RequestView, lease: Lease, send: Send, guard: Guard, why: str
    ) -> None:
        guard.active = False
        if view.stream:
            msg = f"replica {lease.replica_id} failed mid-stream ({why}); the answer is incomplete"
            event = b"data: " + error_body(msg, type_="upstream_error", code=502) + b"\n\n"
            await send(
                {"type": "http.response.body", "body": event + DONE_TAIL, "more_body": False}
            )
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


@dataclass(slots=True)
class Guard:
    """Whether a client disconnect may still cancel the handler (off once the last byte is
    handed to the server, which then reports a disconnect of its own)."""

    active: bool = True
    started: bool = False  # response headers sent while held (scale from zero)
