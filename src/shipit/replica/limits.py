"""Input limits a parsed request must meet before it is tokenized: messages per chat and
characters per prompt (``--max-messages``, ``--max-prompt-chars``).

The body size is the guard's (``replica.guard``); the context length is checked on tokens
(``replica.requests``). These bound the work one request can ask of the tokenizer and the chat
template before either runs. Every refusal is a 400 that names the value and the limit. It must
not touch HTTP objects or the engine.
"""

from __future__ import annotations

from typing import Any

from shipit.core.errors import InvalidRequestError
from shipit.replica import protocol


def _content_chars(content: protocol.Content | None) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return len(content)
    return sum(len(p["text"]) for p in content if isinstance(p.get("text"), str))


def _message_chars(m: Any) -> int:
    chars = _content_chars(m.content)
    for call in getattr(m, "tool_calls", None) or ():
        chars += len(call.function.arguments)
    return chars


def check_messages(messages: list[Any], *, max_messages: int, max_prompt_chars: int) -> None:
    if len(messages) > max_messages:
        raise InvalidRequestError(
            f"messages holds {len(messages)} messages; this replica accepts at most "
            f"{max_messages} (--max-messages); shorten the conversation",
            field="messages",
        )
    chars = sum(_message_chars(m) for m in messages)
    if chars > max_prompt_chars:
        raise InvalidRequestError(
            f"the messages hold {chars} characters; this replica accepts at most "
            f"{max_prompt_chars} (--max-prompt-chars); shorten them",
            field="messages",
        )


def check_prompt(prompt: object, *, max_prompt_chars: int) -> None:
    """A completion's ``prompt``: a string or a list of strings (token ids are bounded by
    the context length instead)."""
    texts = [prompt] if isinstance(prompt, str) else prompt if isinstance(prompt, list) else []
    chars = sum(len(p) for p in texts if isinstance(p, str))
    if chars > max_prompt_chars:
        raise InvalidRequestError(
            f"prompt holds {chars} characters; this replica accepts at most "
            f"{max_prompt_chars} (--max-prompt-chars); shorten it",
            field="prompt",
        )
