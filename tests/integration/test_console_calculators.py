"""The console's calculators in a real browser (Debian's chromium, headless, via Playwright)
against ``shipit console``: the VRAM calculator shows the figures ``shipit plan vram --output
json`` prints for the same inputs (from a link, and from a pasted config.json typed into the
form), the recommender ranks as ``shipit plan recommend`` does, every form field has a label,
and no page logs an error. Writes ``docs/images/console-vram.png`` and
``console-recommend.png``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from support.browser import Watched, screenshot
from support.replica_process import SHIPIT

# (query string of the page, the same question as `shipit plan vram` flags)
VRAM_CASES = [
    ({"model": "llama-3.1-8b", "gpu": "h100-sxm"}, ["-m", "llama-3.1-8b", "-g", "h100-sxm"]),
    (
        {
            "model": "llama-3.1-70b",
            "gpu": "a100-80gb",
            "tp": "2",
            "kv_dtype": "fp8",
            "context": "32768",
            "max_model_len": "32768",
        },
        [
            "-m",
            "llama-3.1-70b",
            "-g",
            "a100-80gb",
            "--tp",
            "2",
            "--kv-dtype",
            "fp8",
            "--context",
            "32768",
            "--max-model-len",
            "32768",
        ],
    ),
    (  # does not fit: the page lists the same suggestions
        {"model": "llama-3.1-70b", "gpu": "l40s", "dtype": "fp8"},
        ["-m", "llama-3.1-70b", "-g", "l40s", "--dtype", "fp8"],
    ),
    (
        {
            "model": "mixtral-8x7b",
            "gpu": "h100-sxm",
            "tp": "2",
            "dtype": "int4-awq",
            "max_num_seqs": "64",
            "max_num_batched_tokens": "4096",
            "gpu_memory_utilization": "0.85",
        },
        [
            "-m",
            "mixtral-8x7b",
            "-g",
            "h100-sxm",
            "--tp",
            "2",
            "--dtype",
            "int4-awq",
            "--max-num-seqs",
            "64",
            "--max-num-batched-tokens",
            "4096",
            "--gpu-memory-utilization",
            "0.85",
        ],
    ),
]
SCREENSHOT_CASE = 0

REC_FLAGS = ["-m", "llama-3.1-8b", "--input-len", "1000", "--output-len", "200"]
REC_FLAGS += ["--ttft-p99-ms", "2000", "--tpot-p99-ms", "50"]
REC_CASES = [
    (
        {"rate_kind": "rps", "rate": "5", "top": "10"},
        [*REC_FLAGS, "--rps", "5"],
    ),
    (
        {"rate_kind": "throughput", "rate": "4000", "top": "12", "max_gpus": "4"},
        [*REC_FLAGS, "--throughput", "4000", "--max-gpus", "4", "--providers", "lambda,aws"],
    ),
]
REC_BASE = {
    "model": "llama-3.1-8b",
    "input_len": "1000",
    "output_len": "200",
    "ttft_p99_ms": "2000",
    "tpot_p99_ms": "50",
}


def plan(*args: str) -> Any:
    out = subprocess.run(
        [SHIPIT, "plan", *args, "--output", "json"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def shown_plan(page: Any) -> dict[str, Any]:
    """Every figure of the page's table, as the raw number it holds."""
    page.wait_for_selector("#result[data-ready] #plan-fields", state="attached", timeout=30_000)
    rows = page.eval_on_selector_all(
        "#plan-fields tr[data-field]", "rows => rows.map(r => [r.dataset.field, r.dataset.raw])"
    )
    return {name: json.loads(raw) for name, raw in rows}


@pytest.mark.parametrize(("query", "flags"), VRAM_CASES)
def test_vram_page_shows_what_plan_vram_prints(
    browser_page: Watched, console_url: str, query: dict[str, str], flags: list[str]
) -> None:
    expected = plan("vram", *flags)
    p = browser_page.page
    p.goto(console_url + "vram?" + urlencode(query))
    shown = shown_plan(p)
    assert shown == {k: v for k, v in expected.items() if k != "suggestions"}
    suggestions = p.eval_on_selector_all("#suggestions li", "xs => xs.map(x => x.textContent)")
    assert suggestions == expected["suggestions"]
    verdict = p.text_content("#verdict") or ""
    assert verdict.lower() == expected["reason"].lower()
    # The inputs stay in the address bar: the same link gives the same page.
    for key, value in query.items():
        assert f"{key}={value}" in p.url
    if VRAM_CASES.index((query, flags)) == SCREENSHOT_CASE:
        screenshot(p, "vram")
    browser_page.assert_clean()


def test_vram_page_plans_a_pasted_config_json(
    browser_page: Watched, console_url: str, tmp_path: Path
) -> None:
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "max_position_embeddings": 32768,
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    expected = plan("vram", "-m", str(tmp_path / "config.json"), "-g", "l4", "--kv-dtype", "fp8")
    p = browser_page.page
    p.goto(console_url + "vram")
    p.wait_for_selector("#result[data-ready]", state="attached")
    p.fill("#hf_config", json.dumps(config, indent=1))
    p.select_option("#gpu", "l4")
    p.select_option("#kv_dtype", "fp8")
    p.click("button[type=submit]")
    p.wait_for_function(
        "() => document.querySelector('#result h2')?.textContent.includes('on 1x l4')"
    )
    shown = shown_plan(p)
    # The CLI names a local file's model after its directory; a pasted one has none.
    assert shown.pop("model_id") == "local-model"
    skip = {"suggestions", "model_id"}
    assert shown == {k: v for k, v in expected.items() if k not in skip}
    browser_page.assert_clean()


def shown_ranking(page: Any) -> list[tuple[str, int, str, str, float]]:
    page.wait_for_selector("#result[data-ready] #ranking", state="attached", timeout=60_000)
    rows = page.eval_on_selector_all(
        "#ranking tbody tr[data-rank]",
        "rows => rows.map(r => [r.dataset.gpu, Number(r.dataset.tp), r.dataset.dtype, "
        "r.dataset.provider, JSON.parse(r.dataset.usdPerMtok)])",
    )
    return [tuple(r) for r in rows]


@pytest.mark.parametrize(("query", "flags"), REC_CASES)
def test_recommender_ranks_as_plan_recommend(
    browser_page: Watched, console_url: str, query: dict[str, str], flags: list[str]
) -> None:
    top = int(query["top"])
    expected = plan("recommend", *flags)["rows"][:top]
    assert len(expected) == top  # enough rows for the comparison to mean something
    p = browser_page.page
    params = [*REC_BASE.items(), *query.items()]
    if "--providers" in flags:
        params += [("providers", "lambda"), ("providers", "aws")]
    p.goto(console_url + "recommend?" + urlencode(params))
    shown = shown_ranking(p)
    assert shown == [
        (r["gpu_id"], r["tp"], r["dtype"], r["provider"], r["usd_per_million_tokens"])
        for r in expected
    ]
    assert p.is_checked("#providers-lambda") == ("--providers" in flags)
    if REC_CASES.index((query, flags)) == 0:
        screenshot(p, "recommend")
    browser_page.assert_clean()


def test_a_bad_input_says_what_to_change(browser_page: Watched, console_url: str) -> None:
    p = browser_page.page
    p.goto(console_url + "vram?" + urlencode({"model": "llama-3.1-70b", "gpu": "l4", "tp": "16"}))
    alert = p.wait_for_selector("#result [role=alert]")
    text = alert.text_content() or ""
    assert "tp=16 is not possible" in text and "field: tp" in text
    browser_page.problems = [
        x for x in browser_page.problems if "HTTP 400" not in x and "status of 400" not in x
    ]
    browser_page.assert_clean()


@pytest.mark.parametrize("path", ["", "vram", "recommend", "fleet"])
def test_every_field_has_a_label_and_the_keyboard_reaches_the_form(
    browser_page: Watched, console_url: str, path: str
) -> None:
    p = browser_page.page
    p.goto(console_url + path)
    unlabelled = p.eval_on_selector_all(
        "input, select, textarea",
        "els => els.filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))"
        ".map(e => e.id || e.name)",
    )
    assert unlabelled == []
    p.keyboard.press("Tab")
    assert p.evaluate("document.activeElement.textContent") == "Skip to content"
    if path in ("vram", "recommend"):
        p.wait_for_selector("#model option", state="attached")
        tabs = 0
        while p.evaluate("document.activeElement.id") != "model" and tabs < 12:
            p.keyboard.press("Tab")
            tabs += 1
        assert p.evaluate("document.activeElement.id") == "model"
    if path == "fleet":  # no fleet behind `shipit console`: the page says where it lives
        alert = p.wait_for_selector("#fleet-error [role=alert]")
        assert "shipit up" in (alert.text_content() or "")
        browser_page.problems = [x for x in browser_page.problems if "404" not in x]
    browser_page.assert_clean()
