"""The gateway's checks for requests that do not come over HTTP (WebSocket, gRPC).

``admit`` gives one request the checks ``gateway.auth.Security`` gives an HTTP POST of the
same body to the same path (body size, API key, tenant, priority and deadline ranges, cache
salt, rate limits) and raises ``EdgeError`` when it refuses; ``settle`` charges the tenant
for the answer and audits it. Same rules, same state: it uses the gateway's ``Security``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shipit.core import openai_errors as oe
from shipit.gateway.auth import Scope, Security, tenant_limits
from shipit.gateway.edge import EdgeError
from shipit.policy.ratelimit import charge_tokens, decide
from shipit.services.keystore import Principal


@dataclass(slots=True)
class Admitted:
    """A request that passed ``admit``: the body and headers to serve it with."""

    principal: Principal | None
    body: bytes
    headers: dict[str, str]
    model: str
    data: dict[str, Any]  # the body, parsed once: hand it to ``parse_request``


def admit(
    sec: Security, path: str, headers: dict[str, str], body: bytes, *, client: str | None = None
) -> Admitted:
    if len(body) > sec.limits.max_body_bytes:
        raise EdgeError(
            oe.REQUEST_TOO_LARGE,
            f"the request body is {len(body)} bytes, over the gateway's limit of "
            f"{sec.limits.max_body_bytes} bytes (gateway.limits.max_body_bytes)",
            param="body",
        )
    scope: Scope = {"type": "http", "method": "POST", "path": path, "client": None}
    principal = sec.authenticate(scope, headers)
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    prep = sec.prepare(principal, raw, headers, body)
    if principal is not None:
        limits, tenant = tenant_limits(principal), principal.tenant.name
        decision, sec.rate[tenant] = decide(limits, sec.now(), sec.state(tenant))
        if not decision.allowed:
            sec.audit.record(
                "rate_limited",
                key_id=principal.key_id,
                tenant=tenant,
                reason=decision.reason_code,
                client=client,
            )
            raise sec.refusal(principal, decision.reason_code, decision.retry_after_s, [])
    return Admitted(principal, prep.body, prep.header_dict, prep.model, prep.data)


def settle(sec: Security, admitted: Admitted, path: str, status: int, tokens: int | None) -> None:
    """Charge an admitted request's tokens (its usage, else an estimate from the body) to its
    tenant, and audit it."""
    p = admitted.principal
    if p is None:
        return
    spent = 0
    if 200 <= status < 300:
        spent = tokens if tokens else len(admitted.body) // 4
    tenant = p.tenant.name
    if spent:
        now_s = sec.now()
        sec.rate[tenant] = state = charge_tokens(tenant_limits(p), sec.state(tenant), spent, now_s)
        if sec.usage is not None:
            sec.usage.note(tenant, state.spent_tokens, now_s)
    sec.audit.record(
        "request",
        key_id=p.key_id,
        tenant=tenant,
        path=path,
        model=admitted.model,
        status=status,
        tokens=spent,
    )
