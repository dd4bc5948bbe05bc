"""The hot path, transport-neutral: one OpenAI request through admission, a replica and back.

``RequestCore.run(view, body, router)`` is an async iterator of events; a front door (the
HTTP/SSE writer in ``gateway.proxy``, or any other) turns them into its own messages. Per
request it owns: admission and a lease from the router service (``Held`` while a streaming
request waits with no replica ready, ``Rejected`` when admission refuses), loading a LoRA
adapter when the decision says so, opening the upstream request with the deployment's upstream
credentials, retrying on another replica for connect errors, 5xx and timeouts before the first
byte (bounded by ``max_attempts`` and the retry budget, never for a replica's 4xx: that is the
client's fault, relayed as is), ``Started`` with the status and headers chosen, every body
chunk as raw ``bytes`` exactly as it arrived, ``BrokenMidStream`` when the replica dies midway,
``Failed`` when nothing usable came back, and ``Finished`` last (the outcome and accounting).
Closing the iterator (``aclose``, or the consumer being cancelled) aborts the upstream and gives
the replica slot back. With prefix hashing, an answer whose usage reports cached tokens is
checked against the prefix hit its routing decision predicted (``GatewayMetrics.prefix_check``).
It must not decide where requests go (the policies do), parse the answer
(``accounting.Tally``) or know the wire format of any front door.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from shipit.config.upstream_auth import UpstreamHeaders
from shipit.core import openai_errors as oe
from shipit.core.frozen import fast_init
from shipit.core.views import RequestView
from shipit.gateway.accounting import Tally, prefix_blocks
from shipit.gateway.errors import admission_kind, error_json, upstream_kind
from shipit.gateway.metrics import GatewayMetrics
from shipit.policy.reliability import classify_status
from shipit.services.monitor import AdapterLoader
from shipit.services.router import AdmissionError, Lease, RouterService
from shipit.services.upstream import (
    MidStreamError,
    Upstream,
    UpstreamError,
    UpstreamResponse,
    relay,
)

Headers = tuple[tuple[bytes, bytes], ...]


class BodySink(Protocol):
    """Where a front door wants body chunks written directly, instead of yielded."""

    def ready(self) -> bool:
        """Asked once the front door took ``Started``: whether ``write`` may be used."""
        ...

    def write(self, chunk: bytes) -> bool:
        """One chunk, without blocking; True when the client is behind."""
        ...

    async def drain(self) -> None:
        """Until the client caught up."""
        ...

    def end(self) -> None:
        """The whole body was written: end the response now, before the request's own
        bookkeeping (slot, accounting, metrics) runs."""
        ...


# ----- events -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Held:
    """No replica is ready yet (cold start); one per ``cold_start_keepalive_s`` of waiting."""

    reason: str = "cold-start"


HELD = Held()


@dataclass(frozen=True, slots=True)
class Rejected:
    """Admission refused the request: ``status`` 429, 503 or 504, an OpenAI error ``body``."""

    status: int
    body: bytes
    reason_code: str
    retry_after_s: int | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Started:
    """The answer begins: the replica's status and the headers chosen for the client (content
    type, replica, route, request id, and the upstream status when it is an error)."""

    status: int
    headers: Headers
    replica_id: str
    policy: str


@dataclass(frozen=True, slots=True)
class Failed:
    """Nothing usable before the first byte: ``body`` is the error to give the client (an
    OpenAI error, or the replica's own error answer when the request was held)."""

    status: int
    body: bytes
    replica_id: str | None = None


@dataclass(frozen=True, slots=True)
class BrokenMidStream:
    """The replica failed after the answer started; ``body`` is an OpenAI error (code 502)."""

    replica_id: str
    why: str
    body: bytes


@fast_init
@dataclass(frozen=True, slots=True)
class Finished:
    """The last event of every run: what the client got and what the replica did."""

    status: int
    policy: str = "-"
    replica_id: str | None = None
    outcome: str = "ok"  # "ok", "failed", "client_error", "rejected"
    attempts: int = 0
    prompt_tokens: int | None = None
    output_tokens: int | None = None


Event = Held | Rejected | Started | Failed | BrokenMidStream | Finished | bytes


@dataclass(frozen=True, slots=True)
class Begun:
    """A first placement made before ``run`` (``RequestCore.begin``): the lease (None: no slot
    was free at once, and ``run`` waits for one) and its upstream request, to await."""

    lease: Lease | None
    opening: Awaitable[UpstreamResponse] | None


class RequestCore:
    def __init__(
        self,
        *,
        metrics: GatewayMetrics,
        upstream: Callable[[], Upstream],
        adapters: Callable[[], AdapterLoader],
        now: Callable[[], float],
        upstream_headers: Mapping[str, UpstreamHeaders] | None = None,
    ) -> None:
        self.metrics = metrics
        self._upstream = upstream
        self._adapters = adapters
        self.now = now
        self._auth = {name: h for name, h in (upstream_headers or {}).items() if h}

    async def run(
        self,
        view: RequestView,
        body: bytes,
        router: RouterService,
        sink: BodySink | None = None,
        begun: Begun | None = None,
    ) -> AsyncGenerator[Event, None]:
        """The events of one request, ``Finished`` last. Close it to abort (``aclose``). With
        a ``sink`` that is ready once ``Started`` was taken, the body goes to ``sink.write``
        instead of being yielded, chunk by chunk from the upstream's read callback where the
        upstream allows it (``services.upstream.relay``). ``begun``: the caller made the
        first attempt's placement already; the attempt goes on from there."""
        attempt = 0
        held = False
        exclude: set[str] = set()
        dep = router.deployment
        # What relaying the answer needs is made now, while the replica works on the request,
        # rather than after its first byte came back: none of it is on the time to first token.
        tally = Tally(arrived_s=view.arrived_s, stream=view.stream)
        first_s: list[float] = []  # when the first token came, until the router is told
        now = self.now
        capture = router.captures.get(view.request_id)  # mirrored to a shadow version
        lease: Lease | None = None

        def told() -> None:
            if first_s and lease is not None and not lease.prefilled:
                router.first_token(lease, first_s[0])

        def account(chunk: bytes) -> None:
            at = now()
            tally.chunk(chunk, at)
            if not first_s and tally.ttft_s is not None:
                # The router learns it in a callback queued after this token's flush, so
                # its pace book is not between the token and the client; before the slot
                # goes back at the latest (``told``).
                first_s.append(at)
                asyncio.get_running_loop().call_soon(told)
            if capture is not None:
                capture.append(chunk)

        deliver: Callable[[bytes], bool] | None = None
        if sink is not None:
            write = sink.write

            def deliver(chunk: bytes) -> bool:
                behind = write(chunk)  # the bytes first (a lone token: at once) ...
                account(chunk)  # ... then the books, off the token's time
                return behind

        while True:
            attempt += 1
            avoid = frozenset(exclude)
            try:
                if begun is None:
                    placed = router.place_now(view, exclude=avoid)
                    opening = None
                else:
                    placed, opening, begun = begun.lease, begun.opening, None
                if placed is not None:
                    lease = placed
                elif not view.stream or held or not router.cold():
                    lease = await router.wait_for_slot(view, exclude=avoid)
                else:
                    # Held while no replica is ready: a Held every cold_start_keepalive_s so
                    # that the front door can keep its client's connection open.
                    task = asyncio.ensure_future(router.wait_for_slot(view, exclude=avoid))
                    interval_s = dep.queueing.cold_start_keepalive_s
                    try:
                        while True:
                            done, _ = await asyncio.wait({task}, timeout=interval_s)
                            if done:
                                lease = task.result()
                                break
                            held = True
                            yield HELD
                    except BaseException:
                        if task.done() and not task.cancelled() and task.exception() is None:
                            router.release(task.result(), outcome="aborted")  # granted meanwhile
                        task.cancel()  # the router forgets the waiter ...
                        await asyncio.wait({task})  # ... before the iterator is closed
                        raise
            except AdmissionError as exc:
                self.metrics.rejections.labels(dep.name, exc.reason_code).inc()
                err = error_json(admission_kind(exc.status), exc.reason)
                yield Rejected(exc.status, err, exc.reason_code, exc.retry_after_s or None)
                yield Finished(exc.status, outcome="rejected", attempts=attempt)
                return
            d = lease.decision
            self.metrics.decision(dep.name, d.policy, d.reason_code)
            if lease.queue_wait_s:
                self.metrics.per_request(dep.name).queue_wait.observe(lease.queue_wait_s)
            try:
                if opening is None:
                    opening = self._open(view, body, lease, router)
                resp = await opening
            except UpstreamError as exc:
                # An adapter that cannot be loaded is no fault of the replica: no ejection, and
                # another replica would fail the same way.
                adapter = exc.kind == "adapter"
                router.release(lease, outcome="aborted" if adapter else "failed", why=exc.message)
                if not adapter and router.may_retry(attempt):
                    exclude.add(lease.replica_id)
                    self.metrics.retries.labels(dep.name, exc.kind).inc()
                    continue
                status = 504 if exc.kind == "timeout" else 502
                msg = f"replica {lease.replica_id} failed after {attempt} attempt(s): {exc.message}"
                err = error_json(upstream_kind(status), msg)
                yield Failed(status, err, lease.replica_id)
                yield Finished(status, d.policy, lease.replica_id, "failed", attempt)
                return
            except BaseException:
                router.release(lease, outcome="aborted")
                raise
            if resp.status >= 400 and router.may_retry(attempt, status=resp.status):
                resp.close()
                router.release(lease, outcome="failed", why=f"HTTP {resp.status}")
                exclude.add(lease.replica_id)
                self.metrics.retries.labels(dep.name, f"http_{resp.status}").inc()
                continue
            break
        # The answer: relayed byte for byte; the lease goes back however this ends.
        outcome = "aborted"
        try:
            if held and resp.status >= 400:
                # The front door already answered 200 to keep the client waiting: the error
                # answer goes whole, as a failure it can still deliver.
                answer = b"".join([chunk async for chunk in resp.chunks()])
                resp.release()
                outcome = classify_status(resp.status)
                yield Failed(resp.status, answer, lease.replica_id)
                yield Finished(resp.status, d.policy, lease.replica_id, outcome, attempt)
                return
            yield Started(resp.status, self._headers(view, resp, lease), lease.replica_id, d.policy)
            try:
                if deliver is not None and sink is not None and sink.ready():
                    await relay(resp, deliver, sink.drain)
                    sink.end()
                else:
                    async for chunk in resp.chunks():
                        account(chunk)
                        yield chunk
            except MidStreamError as exc:
                resp.close()
                outcome = "failed"
                told()  # a first token that came before the break still took its prompt off
                router.release(lease, outcome="failed", why=f"mid-stream: {exc}")
                self.metrics.midstream_errors.labels(dep.name).inc()
                why = str(exc)
                msg = (
                    f"replica {lease.replica_id} failed mid-stream ({why}); "
                    "the answer is incomplete"
                )
                err = error_json(oe.UPSTREAM_ERROR, msg)
                yield BrokenMidStream(lease.replica_id, why, err)
                yield Finished(502, d.policy, lease.replica_id, "failed", attempt)
                return
            resp.release()
            outcome = classify_status(resp.status)
        finally:
            if outcome == "aborted":
                resp.close()  # the client went away: the replica sees its connection drop
            why = f"HTTP {resp.status}" if outcome == "client_error" else ""
            told()
            router.release(lease, outcome=outcome, why=why)
        prompt, output = tally.finish(
            self.metrics.per_request(dep.name),
            now_s=self.now(),
            status=resp.status,
            chat=view.path.endswith("chat/completions"),
            slo=dep.slo,
        )
        if 200 <= resp.status < 300:
            ttft_s = tally.ttft_s if view.stream else None
            router.answered(lease, ttft_s=ttft_s, tpot_s=tally.tpot_s, slo_met=tally.slo_met)
            if view.prefix_hashes and view.prefix_hashing and tally.cached_tokens is not None:
                block = dep.routing.prefix_cache.block_size_tokens
                hit = d.prefix_hit_blocks
                predicted, reported = prefix_blocks(hit, tally.cached_tokens, prompt, block)
                self.metrics.prefix_check(dep.name, view.prefix_hashing, predicted, reported)
        yield Finished(resp.status, d.policy, lease.replica_id, outcome, attempt, prompt, output)

    def _headers(self, view: RequestView, resp: UpstreamResponse, lease: Lease) -> Headers:
        d = lease.decision
        content_type = resp.headers.get("content-type", "application/json").encode()
        route = f"{d.policy}/{d.reason_code}".encode()
        if resp.status < 400:
            return (
                (b"content-type", content_type),
                (b"x-shipit-replica", lease.replica_id.encode()),
                (b"x-shipit-route", route),
                (b"x-shipit-request-id", view.forward_id.encode()),
            )
        return (
            (b"content-type", content_type),
            (b"x-shipit-replica", lease.replica_id.encode()),
            (b"x-shipit-route", route),
            (b"x-shipit-request-id", view.forward_id.encode()),
            (b"x-shipit-upstream-status", str(resp.status).encode()),
        )

    def begin(self, view: RequestView, body: bytes, router: RouterService) -> Begun:
        """The first attempt's placement, made now by the caller rather than by ``run`` (pass
        it to ``run``): a slot at once, if one is free, and its upstream request, which an
        upstream that can write it without waiting (a pooled connection is idle) writes now,
        in the caller's callback."""
        lease = router.place_now(view)
        if lease is None:
            return Begun(None, None)
        try:
            opening = self._open(view, body, lease, router)
        except Exception:  # ``run`` opens it again and meets the error where it handles errors
            opening = None
        return Begun(lease, opening)

    def _open(
        self, view: RequestView, body: bytes, lease: Lease, router: RouterService
    ) -> Awaitable[UpstreamResponse]:
        """The upstream request, to await: the upstream's own coroutine when no adapter has to
        be loaded first (no frame of this one stays between the request and its wait)."""
        adapter = lease.decision.load_adapter
        if adapter is not None:
            return self._open_after_loading(view, body, lease, router, adapter)
        return self._request(view, body, lease, router)

    async def _open_after_loading(
        self, view: RequestView, body: bytes, lease: Lease, router: RouterService, adapter: str
    ) -> UpstreamResponse:
        auth = self._auth.get(router.deployment.name)
        creds = auth.headers if auth is not None else None
        try:
            await self._adapters().ensure(lease.replica_id, lease.url, adapter, creds)
        except UpstreamError:
            router.adapter_failed(lease.replica_id, adapter)
            raise
        return await self._request(view, body, lease, router)

    def _request(
        self, view: RequestView, body: bytes, lease: Lease, router: RouterService
    ) -> Awaitable[UpstreamResponse]:
        auth = self._auth.get(router.deployment.name)
        headers = {"content-type": "application/json", "x-request-id": view.forward_id}
        if auth is not None:
            headers = {**auth.headers, **headers}
        return self._upstream().open(
            lease.url + view.path,
            body,
            headers,
            first_byte_timeout_s=router.deployment.retries.response_timeout_s(stream=view.stream),
        )
