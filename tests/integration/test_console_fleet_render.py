"""The fleet page with a large fleet, a rollout and an alert, in a real browser: ``shipit
console``'s page with ``/ui/api/fleet`` answered by the test (Playwright's request routing) in
the shape the gateway sends. 100 replicas over two deployments render as 100 rows, a state
change in the next answer shows without a reload, the rollout's analysis and the alert are on
the page, and nothing logs an error."""

from __future__ import annotations

import json
import time
from typing import Any

from support.browser import Watched


def replica(i: int, state: str = "ready") -> dict[str, Any]:
    return {
        "id": f"r{i}",
        "url": f"http://10.0.{i // 250}.{i % 250}:8000",
        "state": state,
        "state_for_s": 12.5,
        "version": "v2" if i % 10 == 0 else "v1",
        "backend": "kubernetes",
        "pool": ("reserved", "on_demand", "spot")[i % 3],
        "region": ("eu-west", "us-east")[i % 2],
        "kv_usage": (i % 100) / 100,
        "in_flight": i % 8,
        "max_concurrency": 8,
        "queue_depth": i % 3,
        "ejected": i == 7,
    }


def deployment(name: str, ids: range, *, unhealthy: int | None = None) -> dict[str, Any]:
    now = time.time()
    series = [
        {
            "t_s": float(t),
            "seconds": 5.0,
            "requests_per_s": 40.0 + t / 10,
            "error_ratio": 0.0,
            "goodput_ratio": 0.97,
            "output_tokens_per_s": 900.0,
            "prompt_tokens_per_s": 4000.0,
            "ttft_p50_s": 0.12,
            "ttft_p99_s": 0.42,
            "tpot_p50_s": 0.021,
            "tpot_p99_s": 0.038,
            "e2e_p99_s": 6.0,
            "latency_samples": 200,
        }
        for t in range(-295, 1, 5)
    ]
    return {
        "name": name,
        "model": "llama-3.1-70b",
        "policy": "prefix_cache",
        "queue_depth": 3,
        "in_flight": 120,
        "slo": {"ttft_p99_ms": 500.0, "tpot_p99_ms": 50.0},
        "window": series[-1],
        "series": series,
        "autoscaling": {
            "fixed": False,
            "min_replicas": 10,
            "max_replicas": 80,
            "target_concurrency": 6.0,
            "desired": len(ids),
            "current": len(ids),
            "panic": False,
            "reason": "demand 300 over 60s / 6 per replica -> 50",
            "draining": [],
            "decisions": [
                {
                    "at_s": 10.0,
                    "at_unix_s": now - 30,
                    "target": len(ids),
                    "current": len(ids) - 4,
                    "reason": "demand 300 over 60s / 6 per replica -> 50",
                    "panic": False,
                    "started": ["r1", "r2"],
                    "stopping": [],
                    "replaced": [],
                }
            ],
            "cold_starts": [
                {
                    "replica_id": "r1",
                    "total_s": 41.2,
                    "phases_s": {"pull": 12.0, "load_weights": 22.0, "health": 4.1},
                    "weights_source": "s3://models/llama",
                    "at_unix_s": now - 20,
                }
            ],
        },
        "replicas": [replica(i, "unhealthy" if i == unhealthy else "ready") for i in ids],
    }


def snapshot(unhealthy: int | None) -> dict[str, Any]:
    return {
        "uptime_s": 3600.0,
        "window_s": 30.0,
        "deployments": [
            deployment("chat", range(60), unhealthy=unhealthy),
            deployment("batch", range(60, 100)),
        ],
        "rollouts": [
            {
                "deployment": "chat",
                "baseline": "v1",
                "candidate": {"version": "v2"},
                "strategy": "canary",
                "phase": "baking",
                "step": 2,
                "steps_percent": [1, 5, 25, 50],
                "candidate_percent": 5.0,
                "warm_replicas": ["r0"],
                "started_at": time.time() - 300,
                "reason_code": "bake",
                "reason": "step 2 (5%): baking for 60 s",
                "analysis": {
                    "verdict": "pass",
                    "reason": "no metric worse than the baseline",
                    "checks": [
                        {
                            "metric": "ttft",
                            "verdict": "pass",
                            "candidate": 0.11,
                            "baseline": 0.12,
                            "effect": -0.01,
                            "p_value": 0.41,
                            "alpha": 0.01,
                            "n_candidate": 220,
                            "n_baseline": 4100,
                        }
                    ],
                },
                "shadow": None,
                "events": [],
            }
        ],
        "alerts": [
            {
                "alert": "ShipitDeviation",
                "deployment": "batch",
                "metric": "ttft_p99_s",
                "state": "firing",
                "value": 1.9,
                "baseline": 0.42,
                "baseline_mode": "learned",
                "score": 7.2,
                "since_s": time.time() - 90,
                "reason": "ttft_p99_s 1.9 is 7.2 MADs above its baseline 0.42",
            }
        ],
    }


def test_a_hundred_replicas_a_rollout_and_an_alert(browser_page: Watched, console_url: str) -> None:
    p = browser_page.page
    answers = {"n": 0}

    def fleet(route: Any) -> None:
        answers["n"] += 1
        body = snapshot(unhealthy=5 if answers["n"] >= 3 else None)
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    p.route("**/ui/api/fleet*", fleet)
    p.goto(console_url + "fleet?interval_ms=300")
    p.wait_for_function("() => document.querySelectorAll('tr[data-replica]').length === 100")
    p.evaluate("window.__sameDocument = true")
    p.wait_for_selector("tr[data-replica='r5'][data-state=unhealthy]", timeout=20_000)
    assert p.text_content("[data-field=unhealthy] .value") == "1"
    assert p.text_content("[data-field=ready] .value") == "99 of 100"
    assert "5 % of traffic" in (p.text_content("[data-rollout=chat]") or "")
    assert p.text_content("[data-rollout=chat] tr[data-metric=ttft] td.num") == "0.110"
    assert "7.2 MADs" in (p.text_content("[data-alert=ttft_p99_s]") or "")
    assert "pull 12.00 s" in (p.text_content("section[data-deployment=chat] ul.cold-starts") or "")
    assert p.evaluate("window.__sameDocument === true")
    browser_page.assert_clean()
