"""Constrained decoding for the embedded engine: grammars, and a token mask per step.

Owns ``Constraint`` (what a request asks for: any JSON object, JSON valid against a schema, or a
tool call whose arguments follow a function's parameters schema), its translation into an
llguidance grammar, and ``GrammarMatcher`` (one per constrained request: which token ids may come
next, then the sampled token consumed). llguidance is a Rust library with a numpy-free, PyTorch-
free Python binding that reads the Hugging Face ``tokenizer.json`` directly and computes a mask
over a 49k vocabulary in about a millisecond; its JSON-schema compiler covers what OpenAI's strict
mode asks. JSON is written compact with ``": "`` and ``", "`` separators and no other whitespace:
small models otherwise loop on newlines. A tokenizer llguidance cannot read (the simulated
engine's word tokenizer) gives ``Grammars.supported == False``: the engine then ignores
constraints. It must not sample, read clocks or do IO.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from shipit.core.errors import InvalidRequestError
from shipit.engine.tokenizer import Tokenizer

if TYPE_CHECKING:
    # Imported where used: loading the binding costs ~0.1 s, which only constrained requests pay.
    import llguidance

# Compact JSON, as models most often write it; no free whitespace (see the module docstring).
JSON_STYLE: dict[str, Any] = {
    "whitespace_flexible": False,
    "key_separator": ": ",
    "item_separator": ", ",
}
TOOL_CALL_OPEN = "<tool_call>"
TOOL_CALL_CLOSE = "</tool_call>"


@dataclass(frozen=True, slots=True)
class Constraint:
    """What a request's output must be. ``source`` is JSON text (a schema, or for tool calls
    a list of ``{"name", "parameters"}``); ``field`` is the request parameter it came from,
    named in errors."""

    kind: Literal["json_object", "json_schema", "tool_call"]
    source: str = "{}"
    field: str = "response_format"

    @classmethod
    def json_object(cls) -> Constraint:
        return cls("json_object")

    @classmethod
    def json_schema(cls, schema: dict[str, Any]) -> Constraint:
        return cls("json_schema", json.dumps(schema, sort_keys=True))

    @classmethod
    def tool_call(cls, functions: Sequence[tuple[str, dict[str, Any] | None]]) -> Constraint:
        """Exactly one ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` naming one
        of ``functions`` (name, parameters schema; ``None`` means any object)."""
        listed = [{"name": name, "parameters": params} for name, params in functions]
        return cls("tool_call", json.dumps(listed, sort_keys=True), field="tool_choice")


def _styled(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "x-guidance": JSON_STYLE}


def _call_schema(name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": params or {"type": "object"}},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def grammar_source(constraint: Constraint) -> str:
    """The llguidance grammar (a Lark grammar, or its JSON form) for ``constraint``."""
    import llguidance  # lazy: see the TYPE_CHECKING import above

    if constraint.kind == "json_object":
        return str(llguidance.LLMatcher.grammar_from_json_schema(_styled({"type": "object"})))
    if constraint.kind == "json_schema":
        schema = json.loads(constraint.source)
        return str(llguidance.LLMatcher.grammar_from_json_schema(_styled(schema)))
    functions = json.loads(constraint.source)
    calls = [_call_schema(f["name"], f["parameters"]) for f in functions]
    schema = calls[0] if len(calls) == 1 else {"anyOf": calls}
    open_tag, close_tag = json.dumps(TOOL_CALL_OPEN + "\n"), json.dumps("\n" + TOOL_CALL_CLOSE)
    return f"start: {open_tag} call {close_tag}\ncall: %json {json.dumps(_styled(schema))}\n"


class GrammarMatcher:
    """One request's position in its grammar."""

    def __init__(self, inner: llguidance.LLMatcher, vocab_size: int) -> None:
        self._inner = inner
        self._vocab_size = vocab_size

    def allowed(self) -> np.ndarray:
        """A boolean mask over the vocabulary: the tokens that may come next."""
        bits = np.frombuffer(self._inner.compute_bitmask(), dtype=np.uint8)
        mask: np.ndarray = np.unpackbits(bits, bitorder="little")[: self._vocab_size].astype(bool)
        return mask

    def consume(self, token_id: int) -> bool:
        """Advance by the sampled token; False if the grammar refused it."""
        return bool(self._inner.consume_token(token_id))

    @property
    def done(self) -> bool:
        """The grammar is complete and nothing may follow."""
        return bool(self._inner.is_stopped())

    @property
    def error(self) -> str | None:
        return str(self._inner.get_error()) if self._inner.is_error() else None


class Grammars:
    """Builds matchers for one tokenizer; the llguidance tokenizer is made on first use
    (about 0.6 s for a 49k vocabulary), under a lock, so callers may warm it from any thread."""

    def __init__(self, tokenizer: Tokenizer, vocab_size: int) -> None:
        self._tokenizer = tokenizer
        self._vocab_size = vocab_size
        self._lock = threading.Lock()
        self._ll: llguidance.LLTokenizer | None = None
        self._unsupported: str | None = None

    def _ll_tokenizer(self) -> llguidance.LLTokenizer | None:
        with self._lock:
            if self._ll is None and self._unsupported is None:
                self._ll, self._unsupported = _build(self._tokenizer, self._vocab_size)
            return self._ll

    @property
    def supported(self) -> bool:
        """Whether this tokenizer can be constrained (False for the simulated word tokenizer)."""
        return self._ll_tokenizer() is not None

    @property
    def unsupported_reason(self) -> str | None:
        self._ll_tokenizer()
        return self._unsupported

    def matcher(self, constraint: Constraint) -> GrammarMatcher | None:
        """A fresh matcher; ``None`` when the tokenizer cannot be constrained. An invalid
        schema raises ``InvalidRequestError`` naming the constraint's field."""
        ll = self._ll_tokenizer()
        if ll is None:
            return None
        import llguidance  # lazy: see the TYPE_CHECKING import above

        try:
            source = grammar_source(constraint)
        except (ValueError, TypeError) as exc:
            raise InvalidRequestError(
                f"{constraint.field}: the schema cannot be compiled: {exc}", field=constraint.field
            ) from exc
        inner = llguidance.LLMatcher(ll, source, log_level=0)
        if inner.is_error():
            raise InvalidRequestError(
                f"{constraint.field}: the schema cannot be used for constrained decoding: "
                f"{inner.get_error()}; simplify it or drop the unsupported keyword",
                field=constraint.field,
            )
        return GrammarMatcher(inner, self._vocab_size)

    def check(self, constraint: Constraint) -> None:
        """Raise now if ``constraint`` cannot be compiled (servers call this off the engine
        thread, so a slow or bad schema costs the caller, not every running request)."""
        self.matcher(constraint)


def _build(
    tokenizer: Tokenizer, vocab_size: int
) -> tuple[llguidance.LLTokenizer | None, str | None]:
    if tokenizer.inner.get_vocab_size(with_added_tokens=True) != tokenizer.vocab_size:
        return None, "the tokenizer's ids are not those of its tokenizer.json"
    import llguidance  # lazy: see the TYPE_CHECKING import above

    try:
        ll = llguidance.LLTokenizer(
            tokenizer.inner.to_str(),
            n_vocab=vocab_size,
            eos_token=list(tokenizer.eos_token_ids) or None,
        )
    except Exception as exc:  # the binding raises a bare Exception for tokenizers it cannot read
        return None, f"llguidance cannot read this tokenizer: {exc}"
    return ll, None
