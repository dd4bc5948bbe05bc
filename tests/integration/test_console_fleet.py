"""The console's fleet page in a real browser against a real ``shipit up`` (simulated-accelerator
replicas, autoscaled 2..3): the page polls ``/ui/api/fleet`` and redraws in place. A replica
that stops answering (frozen with SIGSTOP) turns unhealthy on the page and, once killed, leaves
it; load then scales the deployment up and the new replica and the scale decision with its
reason appear; all without a reload and without a console error. (A replica killed outright is
reaped by the next autoscaler tick, often before a health probe marks it; freezing it first
makes the unhealthy state certain to be seen.) Writes ``docs/images/console-fleet.png``."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from support.browser import Watched, screenshot
from support.up_process import Up, start_up


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    u = start_up(
        tmp_path,
        replicas=2,
        extra={
            "health": {"unhealthy_threshold": 1},
            "slo": {"ttft_p99_ms": 500, "tpot_p99_ms": 50},
            "queueing": {"max_concurrency": 4},
            "autoscaling": {
                "min_replicas": 2,
                "max_replicas": 3,
                "target_concurrency": 2,
                "target_utilization": 1.0,
                "autoscaling_window_s": 4,
                "panic_window_s": 1,
                "scale_down_delay_s": 120,
                "tick_interval_s": 0.5,
            },
        },
    )
    try:
        yield u
    finally:
        u.stop()


def rows(p: Any) -> dict[str, str]:
    """Replica id -> state, as the page shows them now."""
    pairs = p.eval_on_selector_all(
        "section.deployment tr[data-replica]",
        "rs => rs.map(r => [r.dataset.replica, r.querySelector('.badge').textContent])",
    )
    return dict(pairs)


def test_fleet_page_follows_the_fleet_live(up: Up, browser_page: Watched) -> None:
    p = browser_page.page
    p.goto(up.url + "/ui/fleet?interval_ms=300&window_s=10&step_s=2&span_s=60")
    p.wait_for_function(
        "() => document.querySelectorAll('tr[data-replica][data-state=ready]').length === 2",
        timeout=30_000,
    )
    p.evaluate("window.__sameDocument = true")  # gone if the page ever reloads
    first = rows(p)
    victim = next(iter(first))
    url = next(r["url"] for r in up.status()["deployments"][0]["replicas"] if r["id"] == victim)
    pid = up.replica_pid(url)
    os.kill(pid, signal.SIGSTOP)
    try:
        p.wait_for_selector(
            f"tr[data-replica='{victim}'][data-state=unhealthy] .badge", timeout=30_000
        )
        assert p.text_content(f"tr[data-replica='{victim}'] .badge") == "unhealthy"
        assert p.text_content("[data-field=unhealthy] .value") == "1"
    finally:
        os.kill(pid, signal.SIGKILL)
    # Killed, it is reaped (its row leaves the page) and the autoscaler starts another.
    p.wait_for_selector(f"tr[data-replica='{victim}']", state="detached", timeout=30_000)
    threads = up.load_in_background(concurrency=8)
    try:
        # A replica none of the first ones was, and the decision that started it, with its reason.
        p.wait_for_function(
            f"() => [...document.querySelectorAll('tr[data-replica]')]"
            f".some(r => !{list(first)!r}.includes(r.dataset.replica))",
            timeout=60_000,
        )
        p.wait_for_function(
            "() => document.querySelectorAll('tr[data-replica]').length === 3", timeout=60_000
        )
        p.wait_for_selector("ul.decisions li[data-target='3']", timeout=60_000)
        decision = p.text_content("ul.decisions li[data-target='3']") or ""
        assert "→ 3" in decision and len(decision) > 20  # the reason is shown
        p.wait_for_function(  # some history on the charts before the picture
            "() => Number(document.body.dataset.points) >= 8", timeout=60_000
        )
        screenshot(p, "fleet")
    finally:
        up.stop_load(threads)
    assert p.evaluate("window.__sameDocument === true")
    assert int(p.evaluate("document.body.dataset.polls")) >= 5
    browser_page.assert_clean()
