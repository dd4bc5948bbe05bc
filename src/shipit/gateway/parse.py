"""The edge: one HTTP request (path, headers, JSON body) becomes a ``RequestView``, once.

Owns reading the shipit headers (``x-shipit-priority``, ``x-shipit-deadline-ms``,
``x-shipit-routing``, the session header) and the few body fields
routing needs (``model``, ``stream``, ``priority``, ``user``, ``cache_salt``, the prompt),
choosing the deployment (and, under ``lora_affinity``, refusing an adapter the gateway could
not load), and computing prefix block hashes only when the effective policy is
``prefix_cache`` (token blocks with the engine's scheme when the client sent token ids, text
chunks otherwise; keyed by the cache salt, so tenants isolated by salt never share an index
entry). The body itself is forwarded unchanged. It must not route or do IO.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from shipit.config.gateway import ROUTING_POLICIES, DeploymentConfig
from shipit.core.errors import InvalidRequestError, UnknownAdapterError
from shipit.core.views import RequestView
from shipit.engine.block_manager import hash_prompt_blocks
from shipit.policy.routing import text_block_hashes, uses


def _prompt_text(body: Mapping[str, Any]) -> tuple[str, list[int] | None]:
    messages = body.get("messages")
    if isinstance(messages, list):
        parts: list[str] = []
        for m in messages:
            if not isinstance(m, dict):
                continue
            content = m.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            parts.append(f"<{m.get('role', '')}>{content or ''}")
        return "".join(parts), None
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return prompt, None
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return "", prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        return str(prompt[0]), None
    return "", None


# What each preset reads beyond load; a ``custom`` composition is asked (``routing.uses``).
_PRESET_READS = {"prefix_cache": "prefix_cache", "lora_affinity": "lora"}


def _reads(dep: DeploymentConfig, part: str, override: str | None) -> bool:
    """Whether the policy this request runs needs ``part`` (prompt prefix hashes, the
    adapter check), so that a request pays for them only when routing reads them."""
    name = override or dep.routing.policy
    if name == "custom":
        return uses(dep.routing, part)
    return _PRESET_READS.get(name) == part


def _int_header(headers: Mapping[str, str], name: str) -> int | None:
    raw = headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequestError(
            f"header {name} must be an integer, got {raw!r}", field=name
        ) from None


def choose_deployment(
    model: str, deployments: Mapping[str, DeploymentConfig], adapters: Mapping[str, set[str]]
) -> DeploymentConfig:
    """The deployment serving ``model`` (its base model or a known adapter); with one
    deployment, that one (the replica answers unknown models itself)."""
    for d in deployments.values():
        if model == d.model_name or model in d.routing.lora_affinity.adapters:
            return d
    for name, names in adapters.items():
        if model in names:
            return deployments[name]
    if len(deployments) == 1:
        return next(iter(deployments.values()))
    known = sorted(d.model_name for d in deployments.values())
    raise InvalidRequestError(
        f"The model `{model}` does not exist; this gateway serves {known}", field="model"
    )


def _check_adapter(adapter: str, dep: DeploymentConfig, on_replicas: set[str]) -> None:
    """With ``lora_affinity`` the gateway loads adapters itself, so a name that is neither
    configured nor already on a replica cannot be served (HTTP 404, not a failed load)."""
    if adapter not in dep.routing.lora_affinity.adapters and adapter not in on_replicas:
        raise UnknownAdapterError(
            f"The model `{adapter}` does not exist: it is neither {dep.model_name!r} nor an "
            "adapter under routing.lora_affinity.adapters or loaded on a replica",
            field="model",
        )


def parse_request(
    *,
    request_id: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes,
    data: Any = None,
    deployments: Mapping[str, DeploymentConfig],
    adapters: Mapping[str, set[str]],
    now_s: float,
    client_request_id: str | None = None,
) -> RequestView:
    if data is None:  # not parsed at the edge already
        try:
            data = json.loads(body)
        except ValueError as exc:
            raise InvalidRequestError(f"the body is not valid JSON: {exc}", field="body") from None
    if not isinstance(data, dict):
        raise InvalidRequestError("the body must be a JSON object", field="body")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("`model` is required (a string)", field="model")
    dep = choose_deployment(model, deployments, adapters)
    routing = headers.get("x-shipit-routing")
    if routing is not None:
        if routing not in ROUTING_POLICIES:
            raise InvalidRequestError(
                f"x-shipit-routing {routing!r} is not a policy; choose one of "
                + ", ".join(ROUTING_POLICIES),
                field="x-shipit-routing",
            )
        if not dep.routing.allow_override:
            routing = None
    priority = _int_header(headers, "x-shipit-priority")
    if priority is None:
        body_priority = data.get("priority")
        priority = (
            body_priority if isinstance(body_priority, int) else dep.queueing.default_priority
        )
    deadline_ms = _int_header(headers, "x-shipit-deadline-ms")
    session = headers.get(dep.routing.session_affinity.header) or data.get("user")
    text, token_ids = _prompt_text(data)
    body_salt = data.get("cache_salt")
    # The body's cache_salt is what the replica keys its cache by (the gateway rewrites it to the
    # tenant's when keys isolate tenants), so the prefix index is keyed by the same value.
    salt = body_salt if isinstance(body_salt, str) else None
    adapter = model if model != dep.model_name else None
    if adapter is not None and _reads(dep, "lora", routing):
        _check_adapter(adapter, dep, adapters.get(dep.name, set()))
    hashes: tuple[int, ...] = ()
    if _reads(dep, "prefix_cache", routing):
        pc = dep.routing.prefix_cache
        if token_ids is not None:
            hashes = tuple(
                hash_prompt_blocks(
                    token_ids, pc.block_size_tokens, lora_name=adapter, cache_salt=salt
                )
            )
        else:
            block_chars = max(1, int(pc.block_size_tokens * pc.chars_per_token))
            key = f"{adapter or ''}\x00{salt}" if salt else adapter or ""
            hashes = text_block_hashes(text, block_chars=block_chars, salt=key)
    max_tokens = data.get("max_tokens") or data.get("max_completion_tokens")
    return RequestView(
        request_id=request_id,
        deployment=dep.name,
        model=model,
        adapter=adapter,
        prompt_text=text,
        prompt_token_ids=tuple(token_ids) if token_ids is not None else None,
        prompt_tokens_estimate=len(token_ids) if token_ids is not None else len(text) // 4,
        prefix_hashes=hashes,
        max_tokens=max_tokens if isinstance(max_tokens, int) else None,
        priority=priority,
        deadline_s=now_s + deadline_ms / 1000.0 if deadline_ms is not None else None,
        session_key=str(session) if session else None,
        stream=bool(data.get("stream", False)),
        routing=routing,
        arrived_s=now_s,
        path=path,
        client_request_id=client_request_id,
        cache_salt=salt or None,
    )
