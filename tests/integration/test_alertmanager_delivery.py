"""Baseline-deviation alerts delivered to a real Alertmanager (Debian's
``prometheus-alertmanager``, started here on 127.0.0.1 with its data in a temp dir): a firing
alert appears in its API with our labels, and a cleared one is resolved.

Skipped, naming the install command, when the binary is missing (``.ci/run`` installs it).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shipit.services.alert_sinks import ALERT_NAME, AlertChange, AlertmanagerSink
from shipit.services.upstream import AiohttpUpstream
from support.replica_process import free_port

BINARY = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
pytestmark = pytest.mark.skipif(
    BINARY is None,
    reason="needs Alertmanager: apt-get install -y --no-install-recommends prometheus-alertmanager",
)

CONFIG = """
route:
  receiver: blackhole
  group_wait: 1s
receivers:
  - name: blackhole
"""


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.loads(resp.read())


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    assert BINARY is not None
    (tmp_path / "am.yml").write_text(CONFIG)
    port = free_port()
    log = (tmp_path / "am.log").open("wb")
    proc = subprocess.Popen(
        [
            BINARY,
            f"--config.file={tmp_path / 'am.yml'}",
            f"--storage.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _get(url + "/api/v2/status")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((tmp_path / "am.log").read_text()) from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def alert(since_s: float) -> dict[str, Any]:
    return {
        "alert": ALERT_NAME,
        "deployment": "chat",
        "metric": "ttft_p99_s",
        "state": "firing",
        "value": 0.9,
        "baseline": 0.2,
        "baseline_mode": "rolling",
        "score": 6.0,
        "since_s": since_s,
        "reason": "ttft_p99_s 0.9 is 6.0 MADs above its baseline 0.2",
    }


async def deliver(url: str, changes: list[AlertChange], active: list[dict[str, Any]]) -> None:
    upstream = AiohttpUpstream()
    try:
        sink = AlertmanagerSink(upstream, url, timeout_s=5, resend_s=10)
        await sink.send(changes, active, now_s=time.time())
    finally:
        await upstream.close()


def ours(url: str, *, active: bool) -> list[dict[str, Any]]:
    query = "active=true&silenced=false&inhibited=false" if active else "active=false"
    alerts: list[dict[str, Any]] = _get(f"{url}/api/v2/alerts?{query}")
    return [a for a in alerts if a["labels"].get("alertname") == ALERT_NAME]


def test_a_firing_alert_reaches_alertmanager_and_a_cleared_one_resolves(alertmanager: str) -> None:
    now = time.time()
    fired = alert(now - 60)
    asyncio.run(deliver(alertmanager, [AlertChange("firing", fired)], [fired]))
    [got] = ours(alertmanager, active=True)
    assert got["labels"]["deployment"] == "chat"
    assert got["labels"]["metric"] == "ttft_p99_s"
    assert got["status"]["state"] == "active"
    assert "6.0 MADs" in got["annotations"]["description"]

    asyncio.run(deliver(alertmanager, [AlertChange("resolved", fired)], []))
    deadline = time.monotonic() + 10
    while ours(alertmanager, active=True) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ours(alertmanager, active=True) == []
