"""The edge: one HTTP request (path, headers, JSON body) becomes a ``RequestView``, once.

Owns reading the shipit headers (``x-shipit-priority``, ``x-shipit-deadline-ms``,
``x-shipit-routing``, the session header) and the few body fields routing needs (``model``,
``stream``, ``priority``, ``user``, ``cache_salt``, the prompt; their types are checked by
``validate``), choosing the deployment by ``model`` (404 for a name it does not serve; under
``lora_affinity``, also for an adapter the gateway could not load), and computing prefix block
hashes only when the effective policy is ``prefix_cache`` (token blocks with the engine's
scheme when the client sent token ids or the deployment has a tokenizer at the gateway,
``gateway.prompt_tokens``; text chunks otherwise; keyed by the cache salt, so tenants isolated
by salt never share an index entry). The body itself is forwarded unchanged.
It must not route or do IO. ``parse_request_async`` is the doors' way in: a body of
``OFF_LOOP_BYTES`` or more that a deployment's tokenizer may encode is parsed in a worker
thread (the tokenizer releases the GIL while it encodes: about 2 µs a token, 25 ms for a
12,000-token prompt, that the event loop would otherwise spend not relaying other streams).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Mapping
from typing import Any

from shipit.config.gateway import ROUTING_POLICIES, DeploymentConfig
from shipit.core.errors import InvalidRequestError, UnknownAdapterError
from shipit.core.views import RequestView
from shipit.engine.block_manager import hash_prompt_blocks
from shipit.gateway.prompt_tokens import TEXT, TOKEN, PromptTokenizer
from shipit.gateway.validate import as_object, check_generation, load_body, model_of
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


def served_names(
    deployments: Mapping[str, DeploymentConfig], adapters: Mapping[str, set[str]]
) -> list[str]:
    """Every model name the gateway knows: base models, configured adapters, adapters held
    by a replica (as the replicas list them)."""
    names: list[str] = []
    for d in deployments.values():
        extra = set(d.routing.lora_affinity.adapters) | adapters.get(d.name, set())
        names += [d.model_name, *sorted(extra - {d.model_name})]
    return names


def choose_deployment(
    model: str,
    deployments: Mapping[str, DeploymentConfig],
    adapters: Mapping[str, set[str]],
    *,
    names_known: bool | Callable[[], bool] = True,
) -> DeploymentConfig:
    """The deployment serving ``model`` (its base model or a known adapter).

    An unknown name is a 404 (``model_not_found``) naming the served ones, except while the
    gateway cannot know them all yet (``names_known`` false: no replica has been ready, so
    adapters loaded at a replica's start are still unlisted) and there is one deployment: then
    it goes there and the replica answers.
    """
    for d in deployments.values():
        if model == d.model_name or model in d.routing.lora_affinity.adapters:
            return d
    for name, names in adapters.items():
        if model in names:
            return deployments[name]
    known = names_known() if callable(names_known) else names_known
    if len(deployments) == 1 and not known:
        return next(iter(deployments.values()))
    raise UnknownAdapterError(
        f"The model `{model}` does not exist; this gateway serves "
        f"{', '.join(served_names(deployments, adapters))} (GET /v1/models lists the ones "
        "ready now)",
        field="model",
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
    names_known: bool | Callable[[], bool] = True,
    tokenizers: Mapping[str, PromptTokenizer] | None = None,
) -> RequestView:
    """The request's view, or ``InvalidRequestError`` (400) for a body the replica would
    refuse for a field the gateway reads, ``UnknownAdapterError`` (404) for an unknown model.
    ``data``: the body already parsed at the edge, when it was; ``tokenizers``: per deployment,
    the tokenizer its prefix hashing uses (``gateway.prompt_tokens``)."""
    data = load_body(body) if data is None else as_object(data)  # None: not parsed at the edge
    model = model_of(data, required=True)
    assert model is not None
    check_generation(path, data)
    dep = choose_deployment(model, deployments, adapters, names_known=names_known)
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
        priority = body_priority if body_priority is not None else dep.queueing.default_priority
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
    hashing = ""
    tokens = len(token_ids) if token_ids is not None else None
    if _reads(dep, "prefix_cache", routing):
        pc = dep.routing.prefix_cache
        ids = token_ids
        if ids is None and tokenizers and (tok := tokenizers.get(dep.name)) is not None:
            ids = tok.token_ids(data)  # what the replica computes; None: approximate
            tokens = len(ids) if ids is not None else None
        if ids is not None:
            hashes = tuple(
                hash_prompt_blocks(ids, pc.block_size_tokens, lora_name=adapter, cache_salt=salt)
            )
            hashing = TOKEN
        else:
            block_chars = max(1, int(pc.block_size_tokens * pc.chars_per_token))
            key = f"{adapter or ''}\x00{salt}" if salt else adapter or ""
            hashes = text_block_hashes(text, block_chars=block_chars, salt=key)
            hashing = TEXT
    max_tokens = data.get("max_tokens") or data.get("max_completion_tokens")
    return RequestView(
        request_id=request_id,
        deployment=dep.name,
        model=model,
        adapter=adapter,
        prompt_text=text,
        prompt_token_ids=tuple(token_ids) if token_ids is not None else None,
        # Text: the same characters a token the prefix hashing assumes, so a fully cached
        # prompt's estimate matches its hashed blocks.
        prompt_tokens_estimate=tokens
        if tokens is not None
        else int(len(text) / dep.routing.prefix_cache.chars_per_token),
        prefix_hashes=hashes,
        prefix_hashing=hashing,
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


OFF_LOOP_BYTES = 8192  # about 2,000 tokens: ~4 ms of tokenizing, well above a thread hop


def off_loop(body: bytes, tokenizers: Mapping[str, PromptTokenizer] | None) -> bool:
    """Whether parsing ``body`` may tokenize a prompt long enough to do it off the event loop
    (``parse_request_async`` then runs it in a worker thread)."""
    return bool(tokenizers) and len(body) >= OFF_LOOP_BYTES


async def parse_request_async(
    *, body: bytes, tokenizers: Mapping[str, PromptTokenizer] | None = None, **kwargs: Any
) -> RequestView:
    """``parse_request``, in a worker thread when it may tokenize a long prompt."""
    if off_loop(body, tokenizers):
        call = functools.partial(parse_request, body=body, tokenizers=tokenizers, **kwargs)
        return await asyncio.to_thread(call)
    return parse_request(body=body, tokenizers=tokenizers, **kwargs)


def parse_token_request(
    *,
    request_id: str,
    path: str,
    body: bytes,
    deployments: Mapping[str, DeploymentConfig],
    adapters: Mapping[str, set[str]],
    now_s: float,
    client_request_id: str | None = None,
    names_known: bool | Callable[[], bool] = True,
) -> RequestView:
    """``/tokenize`` or ``/detokenize``: only ``model`` is read (optional, as in vLLM, when the
    gateway serves one deployment); the replica checks the rest."""
    data = load_body(body)
    model = model_of(data, required=False)
    if model is None:
        if len(deployments) > 1:
            raise InvalidRequestError(
                "Missing required parameter: 'model' (this gateway serves "
                f"{', '.join(served_names(deployments, adapters))}; name one)",
                field="model",
                code="missing_required_parameter",
            )
        dep = next(iter(deployments.values()))
        model = dep.model_name
    else:
        dep = choose_deployment(model, deployments, adapters, names_known=names_known)
    adapter = model if model != dep.model_name else None
    if adapter is not None and _reads(dep, "lora", None):
        _check_adapter(adapter, dep, adapters.get(dep.name, set()))
    return RequestView(
        request_id=request_id,
        deployment=dep.name,
        model=model,
        adapter=adapter,
        priority=dep.queueing.default_priority,
        arrived_s=now_s,
        path=path,
        client_request_id=client_request_id,
    )
