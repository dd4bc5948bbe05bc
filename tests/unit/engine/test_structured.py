"""Constrained decoding in the engine: JSON objects, JSON schemas and forced tool calls come out
valid, whatever the (random) tiny model would rather say; constrained and free sequences share
a batch; a cached prefix changes nothing; bad schemas are refused naming the parameter; the
simulated engine's word tokenizer leaves constraints ignored."""

from __future__ import annotations

import json

import pytest

from shipit.core.errors import InvalidRequestError
from shipit.engine.engine import EngineConfig
from shipit.engine.loader import LoadedModel, load_model
from shipit.engine.sampling import SamplingParams
from shipit.engine.simulated import build_simulated_engine
from shipit.engine.structured import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, Constraint, grammar_source
from support.engine_harness import engine_for, run
from support.tiny_model import write_tiny_hf_model

SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 6},
        "ok": {"type": "boolean"},
        "size": {"type": "integer", "minimum": 0, "maximum": 99},
        "kind": {"enum": ["a", "b"]},
    },
    "required": ["name", "ok", "size", "kind"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 8}},
    "required": ["city"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    return load_model(str(write_tiny_hf_model(tmp_path_factory.mktemp("tiny") / "m")))


def text_of(model: LoadedModel, ids: list[int]) -> str:
    return model.tokenizer.decode(ids)


def constrained(constraint: Constraint, *, seed: int = 0, max_tokens: int = 80) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=1.0, seed=seed, constraint=constraint)


def valid_against_schema(obj: dict[str, object]) -> bool:
    return (
        set(obj) == {"name", "ok", "size", "kind"}
        and isinstance(obj["name"], str)
        and len(obj["name"]) <= 6
        and isinstance(obj["ok"], bool)
        and isinstance(obj["size"], int)
        and 0 <= obj["size"] <= 99
        and obj["kind"] in ("a", "b")
    )


@pytest.mark.parametrize("seed", range(4))
def test_json_schema_output_is_valid_and_stops_when_complete(tiny: LoadedModel, seed: int) -> None:
    engine = engine_for(tiny)
    out = run(engine, {"r": [5, 6, 7]}, constrained(Constraint.json_schema(SCHEMA), seed=seed))
    obj = json.loads(text_of(tiny, out["r"]))
    assert valid_against_schema(obj), obj


def test_unconstrained_output_of_the_same_model_is_not_json(tiny: LoadedModel) -> None:
    # The check above means something only if the model left alone writes no JSON.
    engine = engine_for(tiny)
    out = run(engine, {"r": [5, 6, 7]}, SamplingParams(max_tokens=30, seed=0, ignore_eos=True))
    with pytest.raises(ValueError):
        json.loads(text_of(tiny, out["r"]))


@pytest.mark.parametrize("seed", [1, 2])
def test_json_object_mode_gives_an_object(tiny: LoadedModel, seed: int) -> None:
    # Seeds picked so that the grammar, not max_tokens, ends the output.
    engine = engine_for(tiny)
    out = run(
        engine, {"r": [9, 10]}, constrained(Constraint.json_object(), seed=seed, max_tokens=200)
    )
    assert len(out["r"]) < 200
    assert isinstance(json.loads(text_of(tiny, out["r"])), dict)


def test_tool_call_constraint_names_a_listed_function_with_valid_arguments(
    tiny: LoadedModel,
) -> None:
    engine = engine_for(tiny)
    c = Constraint.tool_call([("get_weather", WEATHER), ("get_time", None)])
    for seed in range(3):
        out = run(engine, {f"r{seed}": [5, 6]}, constrained(c, seed=seed, max_tokens=120))
        text = text_of(tiny, out[f"r{seed}"])
        assert text.startswith(TOOL_CALL_OPEN + "\n") and text.endswith("\n" + TOOL_CALL_CLOSE)
        call = json.loads(text[len(TOOL_CALL_OPEN) : -len(TOOL_CALL_CLOSE)])
        assert call["name"] in ("get_weather", "get_time")
        if call["name"] == "get_weather":
            assert set(call["arguments"]) == {"city"} and len(call["arguments"]["city"]) <= 8


def test_constrained_and_free_sequences_share_a_batch_and_a_cached_prefix(
    tiny: LoadedModel,
) -> None:
    prompt = list(range(20, 44))  # six full blocks of 4: later admissions hit the cache
    free = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)
    engine = engine_for(tiny)
    alone = run(engine, {"free": prompt}, free)["free"]
    engine.add_request("free2", prompt, free)
    engine.add_request("json", prompt, constrained(Constraint.json_schema(SCHEMA), seed=1))
    out = run(engine, {"json2": prompt}, constrained(Constraint.json_schema(SCHEMA), seed=2))
    assert engine.stats().prefix_cache_hits >= 3 * 20
    assert valid_against_schema(json.loads(text_of(tiny, out["json"])))
    assert valid_against_schema(json.loads(text_of(tiny, out["json2"])))
    assert out["free2"] == alone  # masking other rows changed nothing for this one


def test_a_seeded_constrained_request_repeats_exactly(tiny: LoadedModel) -> None:
    params = constrained(Constraint.json_schema(SCHEMA), seed=11)
    first = run(engine_for(tiny), {"r": [5, 6, 7]}, params)
    again = run(engine_for(tiny), {"r": [5, 6, 7]}, params)
    assert first == again


@pytest.mark.parametrize(
    "schema", [{"type": "wizard"}, {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}]
)
def test_a_schema_that_cannot_be_compiled_is_refused_naming_the_parameter(
    tiny: LoadedModel, schema: dict[str, object]
) -> None:
    engine = engine_for(tiny)
    with pytest.raises(InvalidRequestError) as err:
        engine.grammars.check(Constraint.json_schema(schema))
    assert err.value.field == "response_format"
    with pytest.raises(InvalidRequestError):
        engine.add_request("r", [5], constrained(Constraint.json_schema(schema)))
    assert not engine.has_unfinished_requests()


def test_tool_grammar_is_one_tagged_call() -> None:
    source = grammar_source(Constraint.tool_call([("f", None)]))
    assert source.startswith('start: "<tool_call>\\n" call "\\n</tool_call>"')
    assert '"const": "f"' in source and '"whitespace_flexible": false' in source


def test_the_simulated_engine_ignores_constraints() -> None:
    engine = build_simulated_engine("H100:llama-3.1-8b", EngineConfig(), sleep=lambda s: None)
    assert not engine.grammars.supported
    assert engine.grammars.unsupported_reason is not None
    out = run(engine, {"r": [5, 6]}, constrained(Constraint.json_object(), max_tokens=3))
    assert len(out["r"]) == 3  # ran unconstrained to max_tokens
