"""The gateway's front door: an ASGI middleware for API keys, tenants, rate limits and limits.

Owns, per HTTP request and before the gateway's own handlers see it: the edge limits (body
size and time, JSON depth, huge integers; ``gateway.edge``), the API key (``Authorization:
Bearer`` or ``x-api-key``; 401 when missing or unknown, checked against ``services.keystore``),
what the key's tenant may do (models: 403; priority and deadline headers within its range: 400;
the routing override: 403 unless allowed; ``/shipit/*`` but ``/shipit/ready``, the console's
fleet API and, when so configured, ``/metrics`` need an admin key; the console's pages none),
the tenant's rate limits (``policy.ratelimit``; 429 with ``Retry-After`` and OpenAI's
``x-ratelimit-*`` headers on every keyed answer; tokens charged from the usage of the answer
once it finishes, and kept across restarts by ``services.usage``), per-tenant
prefix-cache isolation (the tenant's salt replaces any client salt in ``x-shipit-cache-salt``
and the body's ``cache_salt``, except for admin keys) and the audit log. With keys off (the
loopback default) only the edge limits and the priority/deadline checks apply. It must not
route, queue or proxy.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipit.config.gateway import ShipitConfig
from shipit.config.security import auth_required, is_loopback
from shipit.console import FLEET_PATH
from shipit.core import openai_errors as oe
from shipit.gateway.accounting import Tally
from shipit.gateway.direct import DIRECT_BODY
from shipit.gateway.edge import (
    HEADERS,
    NOT_MODEL_REQUESTS,
    PARSED_BODY,
    PRINCIPAL,
    EdgeError,
    check_whole,
    int_in_range,
    models_filter,
    parse_json,
    read_body,
    send_error,
)
from shipit.policy.ratelimit import RateLimits, RateState, charge_tokens, decide
from shipit.services.audit import NO_AUDIT, AuditLog
from shipit.services.keystore import KeyStore, Principal, default_keys_file
from shipit.services.usage import UsageStore

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger("shipit.gateway.auth")
SALT_HEADER = "x-shipit-cache-salt"
# Need no key even when keys are on: liveness and readiness probes carry no secret.
OPEN_PATHS = frozenset({"/health", "/shipit/ready"})
TOKENIZER_PATHS = frozenset({"/tokenize", "/detokenize"})
_NOT_MODEL_PREFIXES = (*NOT_MODEL_REQUESTS, "/v1/models")  # POST bodies that name no model


def _learned(scope: Scope, prepared: Prepared) -> bytes:
    """What the edge learned of a model request, written into its scope; its body to send on."""
    scope["headers"] = prepared.headers
    scope[PARSED_BODY] = prepared.data
    scope[HEADERS] = prepared.header_dict
    return prepared.body


def console_open(path: str) -> bool:
    """The console's pages, scripts and catalog hold no secret and need no key; its planner
    API needs a key and its fleet API an admin key, like ``/shipit/status``."""
    if path == "/ui" or path == "/ui/api/catalog":
        return True
    return path.startswith("/ui/") and not path.startswith("/ui/api/")


def tenant_limits(p: Principal) -> RateLimits:
    t = p.tenant
    return RateLimits(t.requests_per_min, t.tokens_per_min, t.token_budget)


def _reset(seconds: float) -> bytes:
    """OpenAI's duration format: ``0.5s``, ``6s``, ``1m30s``, ``2h0m5s``."""
    if seconds < 60:
        return f"{round(seconds, 3):g}s".encode()
    whole = math.ceil(seconds)
    h, rest = divmod(whole, 3600)
    m, sec = divmod(rest, 60)
    return (f"{h}h{m}m{sec}s" if h else f"{m}m{sec}s").encode()


@dataclass(slots=True)
class Prepared:
    body: bytes
    headers: list[tuple[bytes, bytes]]
    model: str
    stream: bool
    data: dict[str, Any]  # the parsed body, handed on so the gateway parses it once
    header_dict: dict[str, str]  # ``headers`` as text, handed on so it is decoded once


class Security:
    """Wraps the gateway's ASGI handler; ``keys`` is ``None`` when keys are off."""

    def __init__(
        self,
        inner: App,
        config: ShipitConfig,
        *,
        keys: KeyStore | None,
        now: Callable[[], float],
        audit: AuditLog = NO_AUDIT,
        on_refused: Callable[[int], None] | None = None,
        usage: UsageStore | None = None,
    ) -> None:
        self.inner = inner
        self.config = config
        deps = config.deployments[::-1]  # the first of a name wins, as a scan finds it
        self._priority = {d.model_name: d.queueing.default_priority for d in deps}
        self.auth = config.gateway.auth
        self.limits = config.gateway.limits
        self.required = auth_required(self.auth, config.gateway.host)
        if self.required and keys is None:
            raise ValueError("keys are required here but no key store was given")
        self.keys = keys if self.required else None
        host = config.gateway.host
        if not self.required and not is_loopback(host):
            log.warning(
                "API keys are OFF on %s: anyone who can reach this port can use every model "
                "and the admin endpoints (gateway.auth.required: false / --no-auth)",
                host,
            )
        self.now = now
        self.audit = audit
        self._on_refused = on_refused
        self.usage = usage
        spent = usage.load() if usage is not None and self.keys is not None else {}
        self.rate: dict[str, RateState] = {t: RateState(spent_tokens=n) for t, n in spent.items()}

    def state(self, tenant: str) -> RateState:
        return self.rate.get(tenant, RateState())

    # ----- who is asking ---------------------------------------------------------------
    def authenticate(self, scope: Scope, headers: dict[str, str]) -> Principal | None:
        path = scope["path"]
        if self.keys is None or path in OPEN_PATHS or console_open(path):
            return None
        if path == "/metrics" and self.auth.metrics == "open":
            return None
        self.keys.reload_if_changed(self.now())
        auth = headers.get("authorization", "")
        key = auth[7:].strip() if auth[:7].lower() == "bearer " else headers.get("x-api-key", "")
        if not key:
            self.audit.record("auth_failed", path=path, reason="missing", **_who(scope, headers))
            raise EdgeError(
                oe.INVALID_API_KEY,
                "You didn't provide an API key. Send `Authorization: Bearer sk-shipit-...` or "
                "`x-api-key: sk-shipit-...`; an admin creates keys with `shipit keys create`.",
            )
        principal = self.keys.check(key)
        if principal is None:
            self.audit.record("auth_failed", path=path, reason="invalid", **_who(scope, headers))
            raise EdgeError(
                oe.INVALID_API_KEY,
                "Incorrect API key provided (unknown, revoked or mistyped); check the key, or "
                "ask an admin for a new one (`shipit keys create`).",
            )
        admin_path = path.startswith("/shipit/") or path in ("/metrics", FLEET_PATH)
        if admin_path and not principal.admin:
            self.audit.record(
                "admin_denied", key_id=principal.key_id, tenant=principal.tenant.name, path=path
            )
            raise EdgeError(
                oe.PERMISSION_DENIED,
                f"{path} needs an admin key; key {principal.key_id} (tenant "
                f"{principal.tenant.name!r}) is a user key",
            )
        if admin_path:
            self.audit.record(
                "admin",
                key_id=principal.key_id,
                tenant=principal.tenant.name,
                method=scope["method"],
                path=path,
            )
        return principal

    # ----- the request ------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One frame from the server's task to the inner app (each frame is resumed on every
        # wake-up of a request): the edge's checks are written out here, not in a method.
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        try:
            raw_headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw_headers}
            principal = self.authenticate(scope, headers)
            # The scope is this request's own: what the edge learns goes in it, not in a copy.
            if principal is not None:
                scope[PRINCIPAL] = principal
            if scope["method"] in ("GET", "HEAD"):
                if (
                    principal is not None
                    and principal.tenant.models
                    and scope["path"] == "/v1/models"
                ):
                    send = models_filter(send, principal.tenant.models)
                await self.inner(scope, receive, send)
                return
            upload = scope["path"] == "/v1/files"
            direct = scope.get("extensions", {}).get(DIRECT_BODY)
            whole = direct.take_body() if direct is not None else None
            body = await read_body(
                receive,
                headers.get("content-length"),
                max_bytes=self.config.jobs.max_file_bytes if upload else self.limits.max_body_bytes,
                timeout_s=self.limits.body_timeout_s,
                whole=whole,
            )
            prepared: Prepared | None = None
            # Bodies that name a model; not files, batches or job handles, and not /v1/models
            # (a POST there is the route table's 405, whatever its body).
            model_request = not scope["path"].startswith(_NOT_MODEL_PREFIXES)
            if scope["path"].startswith("/v1/") and scope["method"] == "POST" and model_request:
                prepared = self.prepare(principal, raw_headers, headers, body)
                body = _learned(scope, prepared)
            elif scope["path"] in TOKENIZER_PATHS and scope["method"] == "POST":
                self._check_tokenizer_body(principal, body)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            if principal is None or prepared is None:
                await self.inner(scope, replay, send)
                return
            await self._metered(principal, prepared, scope, replay, send)
        except EdgeError as exc:  # raised only before the inner app saw the request
            await send_error(send, exc)
            if self._on_refused is not None:
                self._on_refused(exc.status)

    def prepare_whole(self, scope: Scope, body: bytes) -> bytes | None:
        """``__call__``'s checks of a model request that needs no key, its whole ``body`` at
        hand (the early start): the body to send on, ``scope`` told what ``__call__`` tells
        it. None where ``__call__`` must see it: keys required, or a check refuses it."""
        if self.keys is not None:
            return None
        raw: list[tuple[bytes, bytes]] = scope["headers"]
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw}
        try:
            body = check_whole(
                headers.get("content-length"), body, max_bytes=self.limits.max_body_bytes
            )
            return _learned(scope, self.prepare(None, raw, headers, body))
        except EdgeError:
            return None

    def _check_tokenizer_body(self, principal: Principal | None, body: bytes) -> None:
        """``/tokenize`` and ``/detokenize``: the edge's JSON limits and the tenant's models
        (they cost a replica little, so they are not metered)."""
        data = parse_json(body, max_depth=self.limits.max_json_depth)
        model = data.get("model") if isinstance(data, dict) else None
        tenant = principal.tenant if principal is not None else None
        if (
            tenant is not None
            and isinstance(model, str)
            and model
            and not tenant.allows_model(model)
        ):
            raise EdgeError(
                oe.MODEL_NOT_ALLOWED,
                f"key {principal.key_id if principal else ''} (tenant {tenant.name!r}) may not "
                f"use the model `{model}`; it may use {list(tenant.models)}",
                param="model",
            )

    def prepare(
        self,
        principal: Principal | None,
        raw: list[tuple[bytes, bytes]],
        headers: dict[str, str],
        body: bytes,
    ) -> Prepared:
        data = parse_json(body, max_depth=self.limits.max_json_depth)
        if not isinstance(data, dict):
            # invalid_json, as a replica says it
            raise EdgeError(oe.INVALID_JSON, "the body must be a JSON object", param="body")
        model = data.get("model")
        model = model if isinstance(model, str) else ""
        tenant = principal.tenant if principal is not None else None
        if tenant is not None and model and not tenant.allows_model(model):
            raise EdgeError(
                oe.MODEL_NOT_ALLOWED,
                f"key {principal.key_id if principal else ''} (tenant {tenant.name!r}) may not "
                f"use the model `{model}`; it may use {list(tenant.models)}",
                param="model",
            )
        if (
            principal is not None
            and "x-shipit-routing" in headers
            and not (principal.admin or principal.tenant.allow_routing_override)
        ):
            raise EdgeError(
                oe.PERMISSION_DENIED,
                f"x-shipit-routing is for admin keys and tenants allowed to override "
                f"routing; tenant {principal.tenant.name!r} is not. Drop the header.",
                param="x-shipit-routing",
            )
        if tenant is not None:
            lo, hi = tenant.priority_min, tenant.priority_max
            what = f"tenant {tenant.name!r}'s range"
        else:
            (lo, hi), what = self.auth.priority_range, "the allowed range (auth.priority_range)"
        drop: set[bytes] = set()
        extra: list[tuple[bytes, bytes]] = []
        if "x-shipit-priority" in headers:
            int_in_range(headers["x-shipit-priority"], "x-shipit-priority", lo, hi, what)
        elif "priority" in data and data["priority"] is not None:
            int_in_range(data["priority"], "priority", lo, hi, what)
        else:
            # Sent on as the header only when the clamp changes the default, or when the model
            # names no deployment (routed by adapter: the first's default, clamped, applies).
            default, known = self._default_priority(model)
            clamped = min(hi, max(lo, default))
            if clamped != default or not known:
                extra.append((b"x-shipit-priority", str(clamped).encode()))
        if "x-shipit-deadline-ms" in headers:
            int_in_range(
                headers["x-shipit-deadline-ms"],
                "x-shipit-deadline-ms",
                1,
                self.limits.max_deadline_ms,
                "the allowed range (milliseconds; gateway.limits.max_deadline_ms)",
            )
        if principal is not None and self.auth.cache_isolation:
            client_salt = data.get("cache_salt") or headers.get(SALT_HEADER)
            keep = principal.admin and isinstance(client_salt, str) and client_salt
            salt = str(client_salt) if keep else principal.cache_salt
            if data.get("cache_salt") != salt:
                data["cache_salt"] = salt
                body = json.dumps(data, separators=(",", ":")).encode()
                drop.add(b"content-length")
                extra.append((b"content-length", str(len(body)).encode()))
            drop.add(SALT_HEADER.encode())  # the salt travels in the body, never this header
        out, as_dict = raw, headers
        if drop or extra:
            out = [(k, v) for k, v in raw if k not in drop] + extra
            as_dict = {k: v for k, v in headers.items() if k.encode("latin-1") not in drop}
            as_dict.update((k.decode("latin-1"), v.decode("latin-1")) for k, v in extra)
        return Prepared(body, out, model, bool(data.get("stream", False)), data, as_dict)

    def _default_priority(self, model: str) -> tuple[int, bool]:
        """The default priority of the deployment named by ``model`` (else the first's), and
        whether one was."""
        named = self._priority.get(model)
        first = self.config.deployments[0].queueing.default_priority
        return (first if named is None else named), named is not None

    # ----- rate limits and accounting ---------------------------------------------------
    async def _metered(
        self, p: Principal, prep: Prepared, scope: Scope, receive: Receive, send: Send
    ) -> None:
        limits, tenant = tenant_limits(p), p.tenant.name
        now_s = self.now()
        decision, self.rate[tenant] = decide(limits, now_s, self.state(tenant))
        rl: list[tuple[bytes, bytes]] = []
        if limits.requests_per_min is not None:
            rl += [
                (b"x-ratelimit-limit-requests", str(limits.requests_per_min).encode()),
                (b"x-ratelimit-remaining-requests", str(decision.remaining_requests).encode()),
                (b"x-ratelimit-reset-requests", _reset(decision.reset_requests_s)),
            ]
        if limits.tokens_per_min is not None:
            rl += [
                (b"x-ratelimit-limit-tokens", str(limits.tokens_per_min).encode()),
                (b"x-ratelimit-remaining-tokens", str(decision.remaining_tokens).encode()),
                (b"x-ratelimit-reset-tokens", _reset(decision.reset_tokens_s)),
            ]
        if not decision.allowed:
            self.audit.record(
                "rate_limited", key_id=p.key_id, tenant=tenant, reason=decision.reason_code
            )
            raise self.refusal(p, decision.reason_code, decision.retry_after_s, rl)
        tally = Tally(arrived_s=now_s, stream=prep.stream)
        status = 0

        async def metered_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []), *rl]}
            elif message["type"] == "http.response.body" and message.get("body"):
                tally.chunk(message["body"], self.now())
            await send(message)

        ext = scope.get("extensions") or {}
        direct = ext.get(DIRECT_BODY)
        if direct is not None:  # body chunks may go straight to the client, metered on the way
            observed = direct.observed(send, metered_send, lambda c: tally.chunk(c, self.now()))
            scope = {**scope, "extensions": {**ext, DIRECT_BODY: observed}}
        try:
            await self.inner(scope, receive, metered_send)
        finally:
            tokens = _tokens(tally, prep, status)
            if tokens:
                now_s = self.now()
                self.rate[tenant] = state = charge_tokens(limits, self.state(tenant), tokens, now_s)
                if self.usage is not None:
                    self.usage.note(tenant, state.spent_tokens, now_s)
            self.audit.record(
                "request",
                key_id=p.key_id,
                tenant=tenant,
                path=scope["path"],
                model=prep.model,
                status=status or 499,
                tokens=tokens,
            )

    def refusal(
        self, p: Principal, reason: str, retry_after_s: float, rl: list[tuple[bytes, bytes]]
    ) -> EdgeError:
        t = p.tenant
        if reason == "budget":
            return EdgeError(
                oe.INSUFFICIENT_QUOTA,
                f"tenant {t.name!r} has used its token budget of {t.token_budget} tokens; no "
                "further requests are served until an admin raises it "
                f"(`shipit keys tenant {t.name} --token-budget N`)",
                headers=rl,
            )
        retry = max(1, math.ceil(retry_after_s))
        limit = (
            f"{t.requests_per_min} requests per minute"
            if reason == "requests"
            else f"{t.tokens_per_min} tokens per minute"
        )
        return EdgeError(
            oe.RATE_LIMITED,
            f"Rate limit reached for tenant {t.name!r}: {limit}. Retry after {retry}s.",
            headers=[(b"retry-after", str(retry).encode()), *rl],
        )


def _tokens(tally: Tally, prep: Prepared, status: int) -> int:
    """The answer's tokens: its usage, else an estimate (prompt bytes / 4 plus one token per
    streamed event); nothing for a failed answer."""
    if not 200 <= status < 300:
        return 0
    usage = tally.usage()
    if usage is not None:
        total = usage.get("total_tokens")
        if isinstance(total, int) and total >= 0:
            return total
        parts = [usage.get(k) for k in ("prompt_tokens", "completion_tokens")]
        return sum(v for v in parts if isinstance(v, int) and v >= 0)
    return len(prep.body) // 4 + max(0, tally.events - 1)


def usage_store(keys: KeyStore | None) -> UsageStore | None:
    """Tokens used per tenant persist in ``usage.json`` next to the key file (budgets)."""
    if keys is None or keys.path is None:
        return None
    return UsageStore(keys.path.parent / "usage.json")


def open_stores(
    config: ShipitConfig, keys: KeyStore | None = None, audit: AuditLog | None = None
) -> tuple[KeyStore | None, AuditLog]:
    """The key store (when keys are required) and the audit log the config names, for those
    not given: by default ``audit.jsonl`` next to the key file when keys are required."""
    auth = config.gateway.auth
    required = auth_required(auth, config.gateway.host)
    if keys is None and required:
        keys = KeyStore.open(Path(auth.keys_file) if auth.keys_file else default_keys_file())
    if audit is not None:
        return keys, audit
    if auth.audit_log is not None:
        return keys, AuditLog(Path(auth.audit_log)) if auth.audit_log else NO_AUDIT
    if required and keys is not None and keys.path is not None:
        return keys, AuditLog(keys.path.parent / "audit.jsonl")
    return keys, NO_AUDIT


def _who(scope: Scope, headers: dict[str, str]) -> dict[str, str | None]:
    """The socket's peer, and an ``X-Forwarded-For`` header's claim (not trusted: kept apart)."""
    client, claimed = scope.get("client"), headers.get("x-forwarded-for")
    peer = {"client": f"{client[0]}:{client[1]}" if client else None}
    return peer if claimed is None else {**peer, "forwarded_for": claimed}
