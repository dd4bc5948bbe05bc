"""Text <-> token ids for the embedded engine, chat templates, and streaming detokenization.

Owns the ``Tokenizer`` wrapper around a Hugging Face ``tokenizers.Tokenizer`` (read from a
``tokenizer.json`` directory or built in memory by the GGUF importer), chat-template rendering
the way Hugging Face transformers does it (sandboxed jinja2), and ``IncrementalDetokenizer``,
which turns a stream of token ids into text without ever emitting half a UTF-8 character.
It must not know about weights, devices or HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tokenizers

from shipit.core.errors import InvalidRequestError, ModelLoadError

# Tokens that chat templates use to close an assistant turn. When a template mentions one
# and the vocabulary has it, generation must stop on it even if the config's EOS differs.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|eom_id|>")

if TYPE_CHECKING:
    import jinja2

_REPLACEMENT_CHAR = "\ufffd"


def _compile_chat_template(source: str) -> jinja2.Template:
    """Compile a chat template with the environment transformers uses, so output matches.

    jinja2 is imported here, not with this module: serving completions never needs it, and
    a replica compiles its template just after it is ready (``compile_chat_template``)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.TemplateError(message)

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: tuple[str, str] | None = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            value,
            ensure_ascii=ensure_ascii,
            indent=indent,
            separators=separators,
            sort_keys=sort_keys,
        )

    def strftime_now(fmt: str) -> str:
        return datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env.from_string(source)


def not_text(text: str) -> InvalidRequestError:
    """The error for a string a tokenizer cannot encode (a lone UTF-16 surrogate)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        where = f"\\u{ord(text[exc.start]):04x} at character {exc.start}"
        return InvalidRequestError(
            f"the prompt holds a lone UTF-16 surrogate ({where}), which is not text and cannot "
            "be tokenized; send valid Unicode (surrogates only in pairs)",
            field="prompt",
        )
    return InvalidRequestError("the prompt cannot be tokenized; send plain text", field="prompt")


class Tokenizer:
    """A model's tokenizer: encode/decode, special token ids and the chat template."""

    def __init__(
        self,
        inner: tokenizers.Tokenizer,
        *,
        chat_template: str | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        bos_token_id: int | None = None,
        eos_token_ids: Iterable[int] = (),
    ) -> None:
        self._inner = inner
        self.chat_template = chat_template
        self._template: jinja2.Template | None = None
        if bos_token is not None and bos_token_id is None:
            bos_token_id = inner.token_to_id(bos_token)
        if bos_token is None and bos_token_id is not None:
            bos_token = inner.id_to_token(bos_token_id)
        self.bos_token_id: int | None = bos_token_id
        self.bos_token = bos_token
        eos_ids = list(eos_token_ids)
        if eos_token is not None and (eos_id := inner.token_to_id(eos_token)) is not None:
            eos_ids.append(int(eos_id))
        if eos_token is None and eos_ids:
            eos_token = inner.id_to_token(eos_ids[0])
        self.eos_token = eos_token
        for name in END_OF_TURN_TOKENS:
            token_id = inner.token_to_id(name)
            if chat_template and name in chat_template and token_id is not None:
                eos_ids.append(int(token_id))
        self.eos_token_ids: tuple[int, ...] = tuple(dict.fromkeys(eos_ids))

    @property
    def inner(self) -> tokenizers.Tokenizer:
        """The wrapped ``tokenizers.Tokenizer`` (for saving it as ``tokenizer.json``)."""
        return self._inner

    @property
    def vocab_size(self) -> int:
        return int(self._inner.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        try:  # the batch "fast" path computes no character offsets: the same ids, less work
            batch = self._inner.encode_batch_fast([text], add_special_tokens=add_special_tokens)
            return list(batch[0].ids)
        except (TypeError, UnicodeEncodeError) as exc:  # tokenizers refuses lone surrogates
            raise not_text(text) from exc

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return str(self._inner.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def token_to_id(self, token: str) -> int | None:
        token_id = self._inner.token_to_id(token)
        return None if token_id is None else int(token_id)

    def apply_chat_template(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        tools: list[dict[str, Any]] | None = None,
    ) -> str:
        """Render ``messages`` with the model's chat template, as transformers would
        (``tools`` reach the template as its ``tools`` variable)."""
        if not self.chat_template:
            raise InvalidRequestError(
                "this model has no chat template (none in tokenizer_config.json, "
                "chat_template.jinja or the GGUF metadata); send a plain completion "
                "request with the prompt already formatted instead",
                field="messages",
            )
        import jinja2  # already loaded by the compile

        template = self.compile_chat_template()
        assert template is not None  # a chat_template was checked above
        try:
            return template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "",
                eos_token=self.eos_token or "",
                tools=tools,
                documents=None,
            )
        except jinja2.TemplateError as exc:
            raise InvalidRequestError(
                f"the model's chat template rejected these messages: {exc}; "
                "fix the message roles/order it complains about",
                field="messages",
            ) from exc

    def compile_chat_template(self) -> jinja2.Template | None:
        """The compiled chat template (compiled on first use; ``None`` without one)."""
        if self._template is None and self.chat_template:
            self._template = _compile_chat_template(self.chat_template)
        return self._template

    @classmethod
    def from_dir(
        cls,
        path: Path,
        *,
        bos_token_id: int | None = None,
        eos_token_ids: Iterable[int] = (),
    ) -> Tokenizer:
        """Read ``tokenizer.json`` plus the chat template and special tokens beside it."""
        tokenizer_file = path / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ModelLoadError(
                f"{tokenizer_file}: not found; a model directory needs the Hugging Face "
                "tokenizer.json written by save_pretrained()",
                field=str(tokenizer_file),
            )
        try:
            inner = tokenizers.Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise ModelLoadError(
                f"{tokenizer_file}: cannot be read as a Hugging Face tokenizer ({exc}); "
                "re-save it with a current tokenizers/transformers version",
                field=str(tokenizer_file),
            ) from exc
        settings = _read_tokenizer_config(path / "tokenizer_config.json")
        template_file = path / "chat_template.jinja"
        chat_template = _pick_chat_template(settings.get("chat_template"))
        if template_file.is_file():
            chat_template = template_file.read_text(encoding="utf-8")
        return cls(
            inner,
            chat_template=chat_template,
            bos_token=_token_content(settings.get("bos_token")),
            eos_token=_token_content(settings.get("eos_token")),
            bos_token_id=bos_token_id,
            eos_token_ids=eos_token_ids,
        )


def _read_tokenizer_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"{path}: cannot be read as JSON ({exc}); fix or delete the file",
            field=str(path),
        ) from exc
    if not isinstance(raw, dict):
        raise ModelLoadError(f"{path}: expected a JSON object", field=str(path))
    return raw


def _pick_chat_template(raw: Any) -> str | None:
    """``chat_template`` is a string, or a list of named templates (take ``default``)."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list):
        named = {str(t.get("name")): str(t.get("template")) for t in raw if isinstance(t, dict)}
        return named.get("default") or next(iter(named.values()), None)
    return None


def _token_content(raw: Any) -> str | None:
    """Special tokens appear as plain strings or as AddedToken dicts with ``content``."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, dict) and isinstance(raw.get("content"), str):
        return str(raw["content"])
    return None


class IncrementalDetokenizer:
    """Turns one request's generated token ids into text deltas, one token at a time.

    Decodes a small window (the tokens since the last emitted boundary) and emits only what
    is new; when the window ends in an incomplete UTF-8 sequence (a character split across
    byte-level tokens) it holds the text back until the character completes.

    The decoded text cannot tell a split character (which decodes as U+FFFD) from a U+FFFD
    that is really in the output, so a window ending in U+FFFD is held one token longer (or
    until ``flush``); the genuine character is then emitted, never a partial one.
    """

    def __init__(self, tokenizer: Tokenizer, *, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._skip_special_tokens = skip_special_tokens
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def _decode(self, ids: Sequence[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=self._skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Add one token; return the text it completed (possibly empty)."""
        self._ids.append(token_id)
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith(_REPLACEMENT_CHAR):
            return ""
        self._prefix_offset = self._read_offset
        self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]

    def flush(self) -> str:
        """Return whatever is held back (an unfinished character decodes as U+FFFD)."""
        prefix_text = self._decode(self._ids[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._ids[self._prefix_offset :])
        self._prefix_offset = self._read_offset = len(self._ids)
        return new_text[len(prefix_text) :]
