"""A real Prometheus (Debian's ``/usr/bin/prometheus``, data in a temp dir, 1 s scrapes) against
a running ``shipit up`` with simulated replicas: the gateway's TTFT histogram is queryable over
the HTTP API, the shipped rules load, and ShipitTargetDown fires after a replica is SIGKILLed.

The rules are the checked-in ``deploy/prometheus`` files; only this test's copy of
ShipitTargetDown waits ``for: 1s`` instead of 2m. Skipped (with the install command) where
Prometheus is missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shipit.telemetry.rules import ALERTS_FILE, RECORDING_FILE
from shipit.telemetry.scrape import GATEWAY_JOB, REPLICA_JOB, render_scrape_config, write_targets
from support.replica_process import free_port
from support.up_process import Up, start_up

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"
PROMETHEUS = shutil.which("prometheus") or (
    "/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None
)
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus not installed; apt-get install -y --no-install-recommends prometheus",
)


def short_for(rules_text: str, alert: str, for_: str) -> str:
    """A copy of a rule file with one alert's ``for:`` shortened (tests only)."""
    doc = yaml.safe_load(rules_text)
    hits = [r for g in doc["groups"] for r in g["rules"] if r.get("alert") == alert]
    assert hits, f"{alert} not in the rules"
    for rule in hits:
        rule["for"] = for_
    return yaml.safe_dump(doc, sort_keys=False)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    u = start_up(tmp_path_factory.mktemp("up"), replicas=2)
    try:
        yield u
    finally:
        u.stop()


@pytest.fixture(scope="module")
def prom(up: Up, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    assert PROMETHEUS is not None
    d = tmp_path_factory.mktemp("prom")
    (d / RECORDING_FILE).write_text((RULES / RECORDING_FILE).read_text())
    alerts = short_for((RULES / ALERTS_FILE).read_text(), "ShipitTargetDown", "1s")
    (d / ALERTS_FILE).write_text(alerts)
    write_targets(up.status(), d / "replicas.json")
    config = render_scrape_config(
        gateway_targets=[f"127.0.0.1:{up.port}"],
        replica_targets_file=str(d / "replicas.json"),
        rule_files=[str(d / RECORDING_FILE), str(d / ALERTS_FILE)],
        scrape_interval_s=1,
        evaluation_interval_s=1,
    )
    (d / "prometheus.yml").write_text(config)
    port = free_port()
    log = d / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={d / 'prometheus.yml'}",
                f"--storage.tsdb.path={d / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), 60, lambda: log.read_text())
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/-/ready", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(check: Any, timeout_s: float, why: Any = lambda: "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.5)
    pytest.fail(f"not within {timeout_s}s: {why()}")


def query(prom: str, promql: str) -> list[dict[str, Any]]:
    body = httpx.get(prom + "/api/v1/query", params={"query": promql}, timeout=5).json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def test_prometheus_scrapes_the_gateway_ttft_histogram(up: Up, prom: str) -> None:
    threads = up.load_in_background()
    try:
        buckets = wait_for(
            lambda: query(
                prom, 'shipit_time_to_first_token_seconds_bucket{deployment="sim",le="+Inf"} > 0'
            ),
            60,
            lambda: query(prom, "up"),
        )
    finally:
        up.stop_load(threads)
    assert buckets[0]["metric"]["job"] == GATEWAY_JOB
    every = query(prom, 'shipit_time_to_first_token_seconds_bucket{deployment="sim"}')
    assert len(every) >= 20  # every catalog bucket bound is a series
    # a 1 s scrape can time out on a loaded machine: wait for a round in which all answered
    expected = {(GATEWAY_JOB, "1"), (REPLICA_JOB, "1")}
    wait_for(
        lambda: {(r["metric"]["job"], r["value"][1]) for r in query(prom, "up")} == expected,
        30,
        lambda: query(prom, "up"),
    )
    assert query(prom, 'vllm:num_requests_running{job="shipit-replicas"}')
    tokens = query(prom, 'shipit_output_tokens_total{deployment="sim"}')
    assert tokens and float(tokens[0]["value"][1]) > 0
    rules = httpx.get(prom + "/api/v1/rules", timeout=5).json()["data"]["groups"]
    assert {g["name"] for g in rules} == {"shipit-recording", "shipit-alerts"}
    assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules


def test_target_down_fires_when_a_replica_is_killed(up: Up, prom: str) -> None:
    victim = up.status()["deployments"][0]["replicas"][0]["url"]
    pid = up.replica_pid(victim)
    os.kill(pid, signal.SIGKILL)
    instance = victim.split("://", 1)[1].rstrip("/")

    def firing() -> list[dict[str, Any]]:
        alerts = httpx.get(prom + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
        return [
            a
            for a in alerts
            if a["labels"]["alertname"] == "ShipitTargetDown"
            and a["labels"]["instance"] == instance
            and a["state"] == "firing"
        ]

    fired = wait_for(firing, 60, lambda: httpx.get(prom + "/api/v1/alerts").text)
    assert fired[0]["labels"]["job"] == REPLICA_JOB
    assert fired[0]["labels"]["severity"] == "page"
