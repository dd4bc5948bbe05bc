"""Prompt token ids at the gateway, so prefix-cache routing hashes exactly what a replica caches.

Owns which tokenizer a deployment's prefix hashing uses (``routing.prefix_cache.tokenizer``:
``auto`` reads the deployment's model the way a replica would, from the default model's files,
a Hugging Face directory or a GGUF file, or uses the simulated replicas' tokenizer under
``simulate``; ``none`` never tokenizes; a path names the tokenizer), loading it once when the
gateway is built, and turning a request body into the ids the replica will compute: a chat
body's messages and tools are rendered with the same ``engine.chat_prompt.render_chat`` and the
same chat template the replica applies, a completion's text prompt is encoded as the replica
encodes it. Where there is no tokenizer (not found, failed to load: said once in the log) or a
body cannot be tokenized here (the replica will refuse it, or it is a shape the gateway does not
render), ``token_ids`` answers ``None`` and the caller falls back to the character
approximation; it never fails a request. Loading does file IO; ``token_ids`` does none.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipit.config.gateway import ConfigError, DeploymentConfig
from shipit.core.errors import ShipitError
from shipit.engine.chat_prompt import render_chat
from shipit.engine.tokenizer import Tokenizer
from shipit.policy.routing import uses

log = logging.getLogger("shipit.gateway")

TOKEN, TEXT = "token", "text"  # the hashing modes (the ``hashing`` metric label)


@dataclass(frozen=True, slots=True)
class PromptTokenizer:
    """A deployment's tokenizer as the gateway uses it; ``source`` says where it came from."""

    tokenizer: Tokenizer
    source: str

    def token_ids(self, data: Mapping[str, Any]) -> list[int] | None:
        """The ids a replica computes for the body's prompt (the first one of a list of
        prompts), or ``None`` when this body cannot be tokenized here."""
        try:
            return self._ids(data)
        except Exception:  # a template or tokenizer error: the replica answers it, not routing
            return None

    def _ids(self, data: Mapping[str, Any]) -> list[int] | None:
        messages = data.get("messages")
        if isinstance(messages, list):
            rendered = _messages(messages)
            if rendered is None:
                return None
            text = render_chat(self.tokenizer, rendered, _tools(data))
            return self.tokenizer.encode(text)
        prompt = data.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str) and prompt:
            return self.tokenizer.encode(prompt)
        return None


def _text(content: Any) -> str | None:
    """A message's content as the replica reads it: text parts joined; None if not text."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        return None
    parts = []
    for part in content:
        if not isinstance(part, dict) or part.get("type") != "text":
            return None
        if not isinstance(part.get("text"), str):
            return None
        parts.append(part["text"])
    return "".join(parts)


def _messages(raw: list[Any]) -> list[dict[str, Any]] | None:
    """The message dicts the replica hands its chat template (what its request models dump)."""
    out: list[dict[str, Any]] = []
    for m in raw:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            return None
        content = _text(m.get("content"))
        if content is None:
            return None
        d: dict[str, Any] = {"role": m["role"], "content": content}
        calls = m.get("tool_calls")
        if m["role"] == "assistant" and calls:
            if not isinstance(calls, list):
                return None
            d["tool_calls"] = [_tool_call(c) for c in calls]
        if m["role"] == "tool":
            d["tool_call_id"] = m.get("tool_call_id")
        out.append(d)
    return out


def _tool_call(call: Any) -> dict[str, Any]:
    fn = call["function"]
    return {
        "id": call["id"],
        "type": call["type"],
        "function": {"name": fn["name"], "arguments": fn["arguments"]},
    }


_FUNCTION_FIELDS = ("name", "description", "parameters", "strict")


def _tools(data: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The tools the replica renders into the prompt: none unless ``tool_choice`` lets the
    model call them; each as its request model dumps it (fields in order, nulls dropped)."""
    tools = data.get("tools") or []
    choice = data.get("tool_choice")
    if choice is None:
        choice = "auto" if tools else "none"
    if not tools or choice == "none":
        return None
    listed = []
    for t in tools:
        fn = t["function"]
        kept = {k: fn[k] for k in _FUNCTION_FIELDS if fn.get(k) is not None}
        listed.append({"type": t["type"], "function": kept})
    return listed


def _reads_prefixes(dep: DeploymentConfig) -> bool:
    policy = dep.routing.policy
    return policy == "prefix_cache" or (policy == "custom" and uses(dep.routing, "prefix_cache"))


def _load(dep: DeploymentConfig, home: Path | None) -> PromptTokenizer | None:
    """The deployment's tokenizer, or None (said in the log, with why)."""
    from shipit.engine.loader import load_tokenizer  # the engine's loader: only when used

    setting = dep.routing.prefix_cache.tokenizer
    if setting == "none":
        return None
    if setting != "auto":
        try:
            return PromptTokenizer(load_tokenizer(setting, home=home), setting)
        except ShipitError as exc:
            raise ConfigError(
                f"deployments[{dep.name}].routing.prefix_cache.tokenizer: {exc.message}; fix "
                "the path, or set auto or none",
                field="routing.prefix_cache.tokenizer",
            ) from None
    if dep.simulate:
        from shipit.engine.simulated import SimTokenizer  # what simulated replicas tokenize with

        return PromptTokenizer(SimTokenizer(), f"simulated ({dep.simulate})")
    try:
        return PromptTokenizer(load_tokenizer(dep.model, home=home), dep.model)
    except Exception as exc:  # auto: any failure means the approximation, never a failed start
        reason = exc.message if isinstance(exc, ShipitError) else repr(exc)
        log.warning(
            "deployment %s: prefix-cache routing hashes text prompts by characters "
            "(chars_per_token); the gateway cannot read model %r's tokenizer: %s. Set "
            "routing.prefix_cache.tokenizer to its path for token-exact hashing",
            dep.name,
            dep.model,
            reason,
        )
        return None


def load_prompt_tokenizers(
    deployments: Iterable[DeploymentConfig], *, home: Path | None = None
) -> dict[str, PromptTokenizer]:
    """One tokenizer per deployment whose routing policy reads prompt prefixes and that has
    one. ``tokenizer: auto`` falls back to the approximation (logged once); an explicit path
    that cannot be read is a ``ConfigError``."""
    out: dict[str, PromptTokenizer] = {}
    for dep in deployments:
        if not _reads_prefixes(dep):
            continue
        loaded = _load(dep, home)
        if loaded is not None:
            try:  # compiled now, not on the first chat request
                loaded.tokenizer.compile_chat_template()
            except Exception as exc:  # the replicas refuse chat with it too; completions hash
                log.warning("deployment %s: its chat template does not compile: %r", dep.name, exc)
            log.info(
                "deployment %s: prefix-cache routing tokenizes prompts with %s's tokenizer",
                dep.name,
                loaded.source,
            )
            out[dep.name] = loaded
    return out
