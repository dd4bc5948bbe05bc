"""vLLM's ``/tokenize`` and ``/detokenize`` at the replica: same bodies, same replies.

``/tokenize`` takes ``{"prompt": ...}`` or ``{"messages": [...], "tools"?: [...]}`` (rendered
with the chat template exactly as a chat request would be, tools included) and answers
``{"count", "max_model_len", "tokens", "token_strs"}``; ``/detokenize`` takes ``{"tokens"}`` and
answers ``{"prompt"}``. It must not touch HTTP objects or the engine's state.
"""

from __future__ import annotations

from typing import Any

from shipit.core import safe_json
from shipit.core.errors import InvalidRequestError
from shipit.engine.chat_prompt import render_chat
from shipit.engine.tokenizer import Tokenizer
from shipit.replica import protocol
from shipit.replica.requests import chat_messages


def parse_tokenize(raw: bytes) -> protocol.TokenizeCompletionBody | protocol.TokenizeChatBody:
    """A completion-style body if it has ``prompt``, else a chat-style one."""
    data = safe_json.loads(raw)
    if isinstance(data, dict) and "prompt" not in data:
        body: Any = protocol.validate_body(data, protocol.TokenizeChatBody)
    else:
        body = protocol.validate_body(data, protocol.TokenizeCompletionBody)
    return body  # type: ignore[no-any-return]


def tokenize(
    body: protocol.TokenizeCompletionBody | protocol.TokenizeChatBody,
    tokenizer: Tokenizer,
    max_model_len: int,
) -> dict[str, Any]:
    if isinstance(body, protocol.TokenizeCompletionBody):
        ids = tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens)
    else:
        tools = [t.model_dump(exclude_none=True) for t in body.tools or []] or None
        messages = chat_messages(body.messages)
        text = render_chat(
            tokenizer, messages, tools, add_generation_prompt=body.add_generation_prompt
        )
        ids = tokenizer.encode(text, add_special_tokens=body.add_special_tokens)
    strs = [tokenizer.decode([t], skip_special_tokens=False) for t in ids]
    return {
        "count": len(ids),
        "max_model_len": max_model_len,
        "tokens": ids,
        "token_strs": strs if body.return_token_strs else None,
    }


def detokenize(
    body: protocol.DetokenizeBody, tokenizer: Tokenizer, vocab_size: int
) -> dict[str, str]:
    bad = [t for t in body.tokens if not 0 <= t < vocab_size]
    if bad:
        raise InvalidRequestError(
            f"token id {bad[0]} is outside the vocabulary [0, {vocab_size})", field="tokens"
        )
    return {"prompt": tokenizer.decode(body.tokens)}
