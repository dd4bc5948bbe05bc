"""The console's ASGI app in-process: pages and assets with a strict CSP, the planner API
(query string and JSON body, catalog ids and a pasted config.json), refusals that name the
field and the value, and the fleet API absent without a gateway. No sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from shipit.console import ConsoleApp
from support.asgi import Result, call

# llama-3.1-8b in bf16 on one H100: 8.03 B parameters x 2 bytes, as `shipit plan vram` prints.
LLAMA_8B_BF16_WEIGHT_BYTES = 16060522496.0
TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_hidden_layers": 16,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "vocab_size": 128256,
    "max_position_embeddings": 8192,
}
REC = "model=llama-3.1-8b&rps=5&input_len=1000&output_len=200&ttft_p99_ms=2000&tpot_p99_ms=50"


def get(path: str, method: str = "GET", body: Any = None, app: Any = None) -> Result:
    return asyncio.run(call(app or ConsoleApp(), method, path, body))


def test_vram_from_a_query_string_is_the_planner_figure() -> None:
    res = get("/ui/api/vram?model=llama-3.1-8b&gpu=H100")
    assert res.status == 200
    data = res.json()
    assert data["plan"]["weight_bytes"] == LLAMA_8B_BF16_WEIGHT_BYTES
    assert data["plan"]["gpu_id"] == "h100-sxm"
    assert data["label"] == "llama-3.1-8b on 1x h100-sxm (bf16)"
    names = [s["name"] for s in data["segments"]]
    assert names == ["weights", "activations", "overhead", "kv_cache", "free"]
    # A plan that fits fills the budget with KV cache: the parts add up to the GPU.
    assert sum(s["bytes"] for s in data["segments"]) == pytest.approx(
        data["plan"]["gpu_total_bytes"]
    )


def test_vram_json_body_equals_query_string() -> None:
    by_query = get("/ui/api/vram?model=llama-3.1-8b&gpu=l4&dtype=fp8&kv_dtype=fp8&context=4096")
    by_body = get(
        "/ui/api/vram",
        "POST",
        {"model": "llama-3.1-8b", "gpu": "l4", "dtype": "fp8", "kv_dtype": "fp8", "context": 4096},
    )
    assert by_query.status == by_body.status == 200
    assert by_query.json()["plan"] == by_body.json()["plan"]
    assert by_query.json()["plan"]["context_tokens"] == 4096


def test_a_pasted_config_json_is_planned_like_a_catalog_model() -> None:
    res = get("/ui/api/vram", "POST", {"hf_config": TINY_CONFIG, "gpu": "l4"})
    assert res.status == 200, res.body
    plan = res.json()["plan"]
    assert plan["fits"] is True
    assert plan["context_tokens"] == 8192
    # 8 KV heads x 64 dims x 2 (K and V) x 16 layers x 2 bytes
    assert plan["kv_bytes_per_token"] == 8 * 64 * 2 * 16 * 2
    as_text = get(
        "/ui/api/vram", "POST", {"hf_config": str(TINY_CONFIG).replace("'", '"'), "gpu": "l4"}
    )
    assert as_text.json()["plan"] == plan


@pytest.mark.parametrize(
    ("path", "body", "field", "words"),
    [
        ("/ui/api/vram?model=llama-3.1-8b&gpu=h100&tp=x", None, "tp", "(got 'x')"),
        ("/ui/api/vram?model=llama-3.1-8b&gpu=h100&tp=0", None, "tp", "(got '0')"),
        ("/ui/api/vram?model=llama-3.1-8b&gpu=h100&tp=3", None, "tp", "use one of 1, 2, 4, 8"),
        ("/ui/api/vram?model=lama-3.1-8b&gpu=h100", None, "model", "did you mean llama-3.1-8b"),
        ("/ui/api/vram?gpu=h100", None, "model", "model is missing"),
        ("/ui/api/vram?model=llama-3.1-8b&gpu=h100&colour=red", None, "colour", "unknown field"),
        ("/ui/api/vram", {"hf_config": "{not json", "gpu": "l4"}, "hf_config", "not valid JSON"),
        (
            "/ui/api/vram",
            {"hf_config": {"hidden_size": 8}, "gpu": "l4"},
            "num_attention_heads",
            "missing",
        ),
        (
            "/ui/api/vram",
            {"hf_config": {**TINY_CONFIG, "hidden_size": "big"}, "gpu": "l4"},
            "hf_config",
            "whole numbers",
        ),
        ("/ui/api/vram", [1, 2], "body", "must be a JSON object"),
        (f"/ui/api/recommend?{REC}&throughput=900", None, None, "exactly one of rps"),
        (f"/ui/api/recommend?{REC}&top=0", None, "top", "got '0'"),
        (f"/ui/api/recommend?{REC}&providers=acme", None, "providers", "unknown provider 'acme'"),
    ],
)
def test_bad_input_is_a_400_naming_field_and_value(
    path: str, body: Any, field: str | None, words: str
) -> None:
    res = get(path, "POST" if body is not None else "GET", body)
    assert res.status == 400, res.body
    err = res.json()["error"]
    assert err["param"] == field
    assert words in err["message"]


def test_recommend_ranks_cheapest_first_and_keeps_to_the_budget() -> None:
    res = get(f"/ui/api/recommend?{REC}&top=500&max_usd_per_hour=1.5")
    assert res.status == 200
    data = res.json()
    rows = data["rows"]
    assert rows and data["count"] == len(rows)
    assert all(r["usd_per_hour"] <= 1.5 for r in rows)
    costs = [r["usd_per_million_tokens"] for r in rows]
    assert costs == sorted(costs)
    assert any("budget" in r for r in data["rejected"])
    top3 = get(f"/ui/api/recommend?{REC}&top=3&max_usd_per_hour=1.5").json()
    assert top3["rows"] == rows[:3] and top3["count"] == len(rows)


def test_catalog_lists_what_the_pickers_offer() -> None:
    data = get("/ui/api/catalog").json()
    assert "llama-3.1-8b" in [m["id"] for m in data["models"]]
    assert "h100-sxm" in [g["id"] for g in data["gpus"]]
    assert data["default_dtypes"] == ["bf16", "fp8", "int4-awq"]
    assert data["kv_dtypes"][0] == "auto"


def test_without_a_fleet_the_fleet_api_says_where_it_lives() -> None:
    res = get("/ui/api/fleet")
    assert res.status == 404
    assert "shipit up" in res.json()["error"]["message"]


def test_fleet_api_answers_from_the_source_given() -> None:
    seen: list[dict[str, str]] = []

    def fleet(query: Any) -> dict[str, Any]:
        seen.append(dict(query))
        return {"deployments": []}

    res = get("/ui/api/fleet?window_s=10", app=ConsoleApp(fleet))
    assert res.status == 200 and res.json() == {"deployments": []}
    assert seen == [{"window_s": "10"}]


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/ui/", "text/html"),
        ("/ui/vram", "text/html"),
        ("/ui/recommend", "text/html"),
        ("/ui/fleet", "text/html"),
        ("/ui/static/common.js", "text/javascript"),
        ("/ui/static/console.css", "text/css"),
    ],
)
def test_pages_and_assets_are_served_with_a_strict_csp(path: str, kind: str) -> None:
    res = get(path)
    assert res.status == 200
    assert res.headers["content-type"].startswith(kind)
    assert "script-src 'self'" in res.headers["content-security-policy"]
    assert res.headers["x-content-type-options"] == "nosniff"
    head = get(path, "HEAD")
    assert head.status == 200 and head.body == b""
    assert head.headers["content-length"] == str(len(res.body))


def test_every_page_loads_only_files_the_console_ships() -> None:
    import re

    app = ConsoleApp()
    for page in ("/ui/", "/ui/vram", "/ui/recommend", "/ui/fleet"):
        html = get(page, app=app).body.decode()
        refs = re.findall(r'(?:src|href)="static/([^"]+)"', html)
        assert refs, page
        for ref in refs:
            assert get(f"/ui/static/{ref}", app=app).status == 200, (page, ref)


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/ui", 308),
        ("GET", "/ui/static/../app.py", 404),
        ("GET", "/ui/static/app.py", 404),
        ("GET", "/ui/nothing", 404),
        ("POST", "/ui/vram", 405),
        ("DELETE", "/ui/api/vram", 405),
        ("POST", "/ui/api/fleet", 405),
        ("GET", "/ui/api/nothing", 404),
        ("HEAD", "/ui/api/vram", 405),
    ],
)
def test_other_paths_and_methods_are_refused(method: str, path: str, status: int) -> None:
    assert get(path, method).status == status


def test_shipit_up_serves_the_console_unless_told_not_to() -> None:
    from shipit.cli.lazy import load_command

    up = load_command("up")
    (option,) = [p for p in up.params if p.name == "console_on"]
    assert option.default is True
    assert option.secondary_opts == ["--no-console"]
    console = load_command("console")
    assert {p.name: p.default for p in console.params} == {"port": 8090, "host": "127.0.0.1"}


def test_planner_calls_queue_on_each_loop_the_app_is_served_on() -> None:
    app = ConsoleApp(max_parallel=1)
    path = "/ui/api/vram?model=llama-3.1-8b&gpu=l4"

    async def three() -> list[int]:
        results = await asyncio.gather(*(call(app, "GET", path) for _ in range(3)))
        return [r.status for r in results]

    assert asyncio.run(three()) == [200, 200, 200]  # the second and third waited their turn
    assert asyncio.run(three()) == [200, 200, 200]  # a new loop: a new queue, not an error
