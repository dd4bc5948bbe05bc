"""``shipit status`` renders the gateway's status JSON, alerts included."""

from __future__ import annotations

from rich.console import Console

from shipit.cli.status import alerts_table, deployments_table


def render(table: object) -> str:
    console = Console(width=200, record=True)
    console.print(table)
    return console.export_text()


def test_alerts_table_shows_each_active_alert() -> None:
    data = {
        "alerts": [
            {
                "deployment": "chat",
                "metric": "ttft_p99_s",
                "since_s": 1000.0,
                "value": 0.82,
                "baseline": 0.21,
                "score": 6.3,
                "reason": "ttft_p99_s 0.82 is 6.3 MADs above its baseline 0.21",
            }
        ]
    }
    text = render(alerts_table(data, now_unix_s=1090.0))
    assert "alerts (1 active)" in text
    assert "chat" in text and "ttft_p99_s" in text and "6.3" in text
    assert "90s ago" in text


def test_no_alerts_is_an_empty_table() -> None:
    assert "alerts (0 active)" in render(alerts_table({}, now_unix_s=0.0))


def test_a_fixed_fleet_is_shown_as_fixed_and_the_uptime_is_shown() -> None:
    data = {
        "uptime_s": 192.0,
        "deployments": [
            {
                "name": "chat",
                "model": "m",
                "queue_depth": 0,
                "replicas": [{"state": "ready"}, {"state": "ready"}],
                "autoscaling": {
                    "fixed": True,
                    "min_replicas": 2,
                    "max_replicas": 2,
                    "desired": 2,
                    "panic": False,
                    "reason": "fixed at 2 replicas (min_replicas = max_replicas)",
                },
            }
        ],
    }
    text = render(deployments_table(data))
    assert "fixed 2" in text and "2..2" not in text
    assert "up 3m12s" in text
