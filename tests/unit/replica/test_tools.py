"""Tools into the prompt (the template's own way, or the documented system-prompt format) and
tool calls out of streamed text, however the text is split."""

from __future__ import annotations

import json

import pytest
import tokenizers

from shipit.engine.chat_prompt import TOOLS_SYSTEM_PROMPT, render_chat, template_supports_tools
from shipit.engine.tokenizer import Tokenizer
from shipit.replica.tools import ToolCallParser, parse_call
from support.tiny_model import CHATML_TEMPLATE

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
}
TOOLS_TEMPLATE = (
    "{% if tools %}TOOLS={{ tools | tojson }}\n{% endif %}"
    "{% for m in messages %}[{{ m.role }}]"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }} "
    "{{ c.function.arguments | tojson }}{% endfor %}{% else %}{{ m.content }}{% endif %}\n"
    "{% endfor %}"
)


def tokenizer(template: str) -> Tokenizer:
    inner = tokenizers.Tokenizer(tokenizers.models.WordLevel({"<unk>": 0}, unk_token="<unk>"))
    return Tokenizer(inner, chat_template=template)


def test_a_template_without_tools_gets_the_system_prompt_format() -> None:
    tok = tokenizer(CHATML_TEMPLATE)
    assert not template_supports_tools(CHATML_TEMPLATE)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [CALL]},
        {"role": "tool", "content": '{"temp": 18}', "tool_call_id": "call_1"},
    ]
    text = render_chat(tok, messages, TOOLS)
    system = TOOLS_SYSTEM_PROMPT.format(tools=json.dumps(TOOLS[0]))
    assert text.startswith(f"<|im_start|>system\nBe brief.\n\n{system}<|im_end|>\n")
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": '
        '"Paris"}}\n</tool_call><|im_end|>' in text
    )
    assert '<|im_start|>user\n<tool_response>\n{"temp": 18}\n</tool_response><|im_end|>' in text
    assert text.endswith("<|im_start|>assistant\n")


def test_without_a_system_message_the_tools_get_their_own() -> None:
    text = render_chat(tokenizer(CHATML_TEMPLATE), [{"role": "user", "content": "hi"}], TOOLS)
    assert text.startswith("<|im_start|>system\nYou are a function calling AI model.")
    plain = render_chat(tokenizer(CHATML_TEMPLATE), [{"role": "user", "content": "hi"}], None)
    assert plain == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_a_template_that_reads_tools_renders_them_itself() -> None:
    tok = tokenizer(TOOLS_TEMPLATE)
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [CALL]},
    ]
    text = render_chat(tok, messages, TOOLS)
    assert text.startswith("TOOLS=" + json.dumps(TOOLS))
    # Arguments reach the template as an object, as transformers hands them over.
    assert 'CALL get_weather {"city": "Paris"}' in text


def test_parse_call_accepts_known_names_and_object_arguments_only() -> None:
    names = frozenset({"f"})
    call = parse_call('{"name": "f", "arguments": {"a": 1}}', names)
    assert call is not None and (call.name, json.loads(call.arguments)) == ("f", {"a": 1})
    assert call.id.startswith("call_")
    stringy = parse_call('{"name": "f", "arguments": "{\\"a\\": 2}"}', names)
    assert stringy is not None and json.loads(stringy.arguments) == {"a": 2}
    for bad in ('{"name": "g", "arguments": {}}', '{"name": "f", "arguments": 3}', "{nope", "[]"):
        assert parse_call(bad, names) is None


TEXT = 'Sure. <tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call> done'


@pytest.mark.parametrize("step", [1, 2, 3, 7, len(TEXT)])
def test_parser_splits_content_and_calls_however_the_text_is_split(step: int) -> None:
    parser = ToolCallParser(["f"])
    content, calls = [], []
    for i in range(0, len(TEXT), step):
        c, k = parser.feed(TEXT[i : i + step])
        assert "<tool" not in c  # a possible tag start is held back
        content.append(c)
        calls += k
    rest, more = parser.finish()
    assert "".join(content) + rest == "Sure.  done"
    assert [(c.name, json.loads(c.arguments)) for c in calls + more] == [("f", {"x": 1})]


def test_an_unclosed_call_at_the_end_is_still_a_call_and_bad_blocks_stay_content() -> None:
    parser = ToolCallParser(["f"])
    assert parser.feed('<tool_call>{"name": "f", "arguments": {}}') == ("", [])
    rest, calls = parser.finish()
    assert rest == "" and [c.name for c in calls] == ["f"]
    parser = ToolCallParser(["f"])
    content, calls = parser.feed("<tool_call>not json</tool_call><tool")
    assert (content, calls) == ("<tool_call>not json</tool_call>", [])
    assert parser.finish() == ("<tool", [])
