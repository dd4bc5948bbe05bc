"""``POST /tokenize`` and ``/detokenize`` at the gateway: forwarded to a replica of the model
the body names (vLLM's endpoints; a replica answers them with the model's tokenizer).

Owns the small, unstreamed forward: a slot from the deployment's router (so a cold start is
waited out and a busy fleet queues as for generation), loading the adapter the routing
decision asks for, one upstream request with the deployment's upstream credentials, a retry
on another replica for a failure before the answer or a 5xx (within ``max_attempts`` and the
retry budget; never for a 4xx, the client's error), and the answer relayed as it came
(status, body, ``content-type``) with ``x-shipit-replica``. Not counted in the generation
metrics (no tokens, no TTFT). It must not tokenize anything itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from shipit.core.views import RequestView
from shipit.gateway.errors import admission_kind, error_json, upstream_kind
from shipit.gateway.proxy import Send, send_json
from shipit.policy.reliability import classify_status
from shipit.services.monitor import AdapterLoader
from shipit.services.router import AdmissionError, RouterService
from shipit.services.upstream import MidStreamError, Upstream, UpstreamError

TOKEN_PATHS = frozenset({"/tokenize", "/detokenize"})


async def forward_tokens(
    view: RequestView,
    body: bytes,
    router: RouterService,
    send: Send,
    *,
    upstream: Upstream,
    adapters: Callable[[], AdapterLoader],
    credentials: Mapping[str, str] | None = None,
) -> int:
    """Relay one tokenizer request (with the deployment's upstream ``credentials``, if any);
    returns the status sent."""
    exclude: set[str] = set()
    attempt = 0
    while True:
        attempt += 1
        try:
            lease = await router.acquire(view, exclude=frozenset(exclude))
        except AdmissionError as exc:
            retry = [(b"retry-after", str(exc.retry_after_s).encode())] if exc.retry_after_s else []
            err = error_json(admission_kind(exc.status), exc.reason)
            await send_json(send, exc.status, err, retry)
            return exc.status
        adapter = lease.decision.load_adapter
        try:
            if adapter is not None:
                try:
                    await adapters().ensure(lease.replica_id, lease.url, adapter, credentials)
                except UpstreamError:
                    router.adapter_failed(lease.replica_id, adapter)
                    raise
            headers = {"content-type": "application/json", "x-request-id": view.forward_id}
            resp = await upstream.open(
                lease.url + view.path,
                body,
                {**(credentials or {}), **headers},
                first_byte_timeout_s=router.deployment.retries.response_timeout_s(
                    stream=view.stream
                ),
            )
            try:
                answer = b"".join([chunk async for chunk in resp.chunks()])
            except MidStreamError as exc:
                resp.close()
                raise UpstreamError("protocol", str(exc)) from None
            resp.release()
        except UpstreamError as exc:
            failed = exc.kind != "adapter"  # a failed adapter load: no ejection, no retry
            router.release(lease, outcome="failed" if failed else "aborted", why=exc.message)
            if failed and router.may_retry(attempt):
                exclude.add(lease.replica_id)
                continue
            status = 504 if exc.kind == "timeout" else 502
            msg = f"replica {lease.replica_id} failed after {attempt} attempt(s): {exc.message}"
            await send_json(send, status, error_json(upstream_kind(status), msg))
            return status
        except BaseException:
            router.release(lease, outcome="aborted")
            raise
        outcome = classify_status(resp.status)
        router.release(lease, outcome=outcome, why=f"HTTP {resp.status}")
        if outcome == "failed" and router.may_retry(attempt, status=resp.status):
            exclude.add(lease.replica_id)
            continue
        content_type = resp.headers.get("content-type", "application/json")
        relay = [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(answer)).encode()),
            (b"x-shipit-replica", lease.replica_id.encode()),
            (b"x-shipit-request-id", view.forward_id.encode()),
        ]
        await send({"type": "http.response.start", "status": resp.status, "headers": relay})
        await send({"type": "http.response.body", "body": answer, "more_body": False})
        return resp.status
