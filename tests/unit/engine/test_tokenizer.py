"""Tokenizer wrapper: round trips, special tokens, chat templates, streaming detokenization."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from shipit.core.errors import InvalidRequestError, ModelLoadError
from shipit.engine.tokenizer import IncrementalDetokenizer, Tokenizer
from support.tiny_model import CHATML_TEMPLATE, tiny_tokenizer, write_tiny_hf_model

MULTIBYTE = "héllo 世界 🚀"


@functools.cache
def _tiny() -> Tokenizer:
    return Tokenizer(
        tiny_tokenizer(384),
        chat_template=CHATML_TEMPLATE,
        bos_token="<|im_start|>",
        eos_token="<|endoftext|>",
    )


def _stream(tok: Tokenizer, ids: list[int]) -> list[str]:
    detok = IncrementalDetokenizer(tok)
    deltas = [detok.push(i) for i in ids]
    deltas.append(detok.flush())
    return deltas


@pytest.mark.parametrize("text", ["hello world", MULTIBYTE, "  two  spaces\nnew line 123", ""])
def test_encode_decode_round_trip(text: str) -> None:
    tok = _tiny()
    assert tok.decode(tok.encode(text)) == text


def test_multibyte_characters_span_several_tokens_and_are_held_back() -> None:
    tok = _tiny()
    ids = tok.encode("🚀")
    assert len(ids) > 1  # the rocket's 4 UTF-8 bytes are not one token in the tiny vocab
    deltas = _stream(tok, ids)
    assert deltas[:-2] == [""] * (len(ids) - 1)
    assert "".join(deltas) == "🚀"


def test_incremental_detokenizer_matches_full_decode_with_spaces() -> None:
    tok = _tiny()
    text = f"The capital of France is Paris. {MULTIBYTE}!"
    deltas = _stream(tok, tok.encode(text))
    assert "".join(deltas) == text
    assert all("\ufffd" not in d for d in deltas)
    assert any(d.startswith(" ") for d in deltas)  # byte-level 'Ġ' becomes a real space


def _assert_streams_as_prefixes(text: str, deltas: list[str]) -> None:
    """Everything streamed so far is a prefix of the text: a partial character would show up
    as a U+FFFD the text does not have at that position."""
    streamed = ""
    for delta in deltas:
        streamed += delta
        assert text.startswith(streamed), (streamed, text)
    assert streamed == text


@settings(max_examples=200, deadline=None)
@example(text="\ufffd")  # a genuine U+FFFD is text, not a partial character
@example(text="a\ufffd🚀\ufffdb")
@given(st.text(max_size=40))
def test_incremental_detokenizer_never_emits_partial_characters(text: str) -> None:
    tok = _tiny()
    _assert_streams_as_prefixes(text, _stream(tok, tok.encode(text)))


def test_a_genuine_replacement_character_is_streamed_once_the_next_token_arrives() -> None:
    # A window that decodes to a trailing U+FFFD looks like a split character, so it waits
    # for one more token (or the flush); the real U+FFFD then comes out, never a partial one.
    tok = _tiny()
    deltas = _stream(tok, tok.encode("a\ufffdb"))
    assert "".join(deltas) == "a\ufffdb"
    assert [d for d in deltas if d] == ["a", "\ufffdb"]
    assert _stream(tok, tok.encode("x\ufffd"))[-1] == "\ufffd"  # or at the end, by flush


def test_flush_emits_an_unfinished_character_as_replacement() -> None:
    tok = _tiny()
    ids = tok.encode("a🚀")
    detok = IncrementalDetokenizer(tok)
    pushed = "".join(detok.push(i) for i in ids[:-1])
    assert pushed == "a"
    assert detok.flush() == "\ufffd"


def test_special_tokens_are_skipped_when_streaming_and_decoding() -> None:
    tok = _tiny()
    end = tok.token_to_id("<|im_end|>")
    assert end is not None
    ids = [*tok.encode("hi"), end]
    assert tok.decode(ids) == "hi"
    assert tok.decode(ids, skip_special_tokens=False) == "hi<|im_end|>"
    assert "".join(_stream(tok, ids)) == "hi"


def test_special_token_text_encodes_to_one_id() -> None:
    tok = _tiny()
    assert tok.encode("<|im_start|>user") == [tok.token_to_id("<|im_start|>"), *tok.encode("user")]


def test_eos_ids_include_the_templates_end_of_turn_token() -> None:
    tok = _tiny()
    assert tok.eos_token_ids == (tok.token_to_id("<|endoftext|>"), tok.token_to_id("<|im_end|>"))
    assert tok.bos_token_id == tok.token_to_id("<|im_start|>")
    assert tok.vocab_size == 384


def test_chat_template_renders_chatml() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert _tiny().apply_chat_template(messages) == expected
    without = _tiny().apply_chat_template(messages, add_generation_prompt=False)
    assert without == expected.removesuffix("<|im_start|>assistant\n")


def test_chat_template_sees_bos_token_and_trims_blocks() -> None:
    template = "{{ bos_token }}\n{% for m in messages %}\n  {{ m['content'] }}|\n{% endfor %}"
    tok = Tokenizer(tiny_tokenizer(384), chat_template=template, bos_token="<|im_start|>")
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "a"}, {"role": "x", "content": "b"}]
    )
    assert rendered == "<|im_start|>\n  a|\n  b|\n"


def test_chat_template_raise_exception_is_a_request_error() -> None:
    template = (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('user first') }}{% endif %}"
    )
    tok = Tokenizer(tiny_tokenizer(384), chat_template=template)
    with pytest.raises(InvalidRequestError, match="user first") as info:
        tok.apply_chat_template([{"role": "assistant", "content": "x"}])
    assert info.value.field == "messages"


def test_missing_chat_template_is_a_clear_error() -> None:
    tok = Tokenizer(tiny_tokenizer(384))
    with pytest.raises(InvalidRequestError, match="no chat template"):
        tok.apply_chat_template([{"role": "user", "content": "hi"}])


def test_from_dir_reads_tokenizer_and_template(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m")
    tok = Tokenizer.from_dir(model_dir, eos_token_ids=(0,))
    assert tok.chat_template == CHATML_TEMPLATE
    assert tok.eos_token_ids == (0, 2)
    assert tok.bos_token_id == 1
    assert tok.decode(tok.encode(MULTIBYTE)) == MULTIBYTE


def test_chat_template_jinja_file_wins_and_list_form_is_understood(tmp_path: Path) -> None:
    model_dir = write_tiny_hf_model(tmp_path / "m")
    settings_file = model_dir / "tokenizer_config.json"
    raw = json.loads(settings_file.read_text())
    raw["chat_template"] = [
        {"name": "tool_use", "template": "T"},
        {"name": "default", "template": "D"},
    ]
    settings_file.write_text(json.dumps(raw))
    assert Tokenizer.from_dir(model_dir).chat_template == "D"
    (model_dir / "chat_template.jinja").write_text("J{{ messages[0]['content'] }}")
    assert (
        Tokenizer.from_dir(model_dir).apply_chat_template([{"role": "u", "content": "x"}]) == "Jx"
    )


def test_from_dir_without_tokenizer_json_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"tokenizer\.json"):
        Tokenizer.from_dir(tmp_path)
