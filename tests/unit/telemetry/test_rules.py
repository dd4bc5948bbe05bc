"""Prometheus rules: checked-in files equal the generator's output and read only catalog metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shipit.telemetry import catalog as cat
from shipit.telemetry import rules
from shipit.telemetry.promql import selected_names

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"


def _all_rules() -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for text in rules.render().values():
        for group in yaml.safe_load(text)["groups"]:
            out += group["rules"]
    return out


def test_checked_in_rules_equal_the_rendered_ones() -> None:
    for name, text in rules.render().items():
        assert (DEPLOY / name).read_text() == text, (
            f"deploy/prometheus/{name} is stale; run: "
            "uv run python -m shipit.telemetry.rules deploy/prometheus"
        )


def test_every_expression_reads_only_catalog_metrics_recording_rules_or_up() -> None:
    known = set(cat.series_names()) | rules.recorded_names() | {"up"}
    for rule in _all_rules():
        unknown = selected_names(str(rule["expr"])) - known
        assert not unknown, (rule.get("record") or rule.get("alert"), unknown)


def test_required_alerts_exist_with_a_severity_and_summary() -> None:
    alerts = [r for r in _all_rules() if "alert" in r]
    names = {str(a["alert"]) for a in alerts}
    assert names >= {
        "ShipitErrorBudgetBurn", "ShipitTTFTBudgetBurn", "ShipitHighErrorRate",
        "ShipitQueueGrowing", "ShipitKVCacheSaturated", "ShipitReplicasFlapping",
        "ShipitSlowColdStart", "ShipitTargetDown", "ShipitBaselineDeviation",
        "ShipitRolloutRolledBack",
    }  # fmt: skip
    for a in alerts:
        labels, notes = a["labels"], a["annotations"]
        assert isinstance(labels, dict) and labels["severity"] in {"page", "ticket"}
        assert isinstance(notes, dict) and notes["summary"]


def test_burn_rate_alerts_pair_a_long_and_a_short_window() -> None:
    burn = [r for r in _all_rules() if r.get("alert") == "ShipitErrorBudgetBurn"]
    assert [r["labels"]["long_window"] for r in burn] == ["1h", "6h", "1d", "3d"]  # type: ignore[index]
    first = str(burn[0]["expr"])
    assert "ratio_rate1h > (14.4 * 0.001)" in first and "ratio_rate5m > (14.4 * 0.001)" in first
    # Every window an alert reads has a recording rule.
    for bw in rules.BURN_WINDOWS:
        assert {bw.long, bw.short} <= set(rules.RATIO_WINDOWS)


def test_ttft_threshold_reads_a_real_bucket_boundary() -> None:
    text = rules.render(rules.RuleTargets(ttft_threshold_s=0.5))[rules.RECORDING_FILE]
    assert 'le="0.5"' in text
    with pytest.raises(ValueError, match="bucket bounds"):
        rules.RuleTargets(ttft_threshold_s=0.7)
    with pytest.raises(ValueError, match="availability_objective"):
        rules.RuleTargets(availability_objective=1.0)


def test_le_label_matches_prometheus_client() -> None:
    from prometheus_client.utils import floatToGoString

    for bound in cat.TTFT.buckets_s + cat.COLD_START.buckets_s:
        assert rules.le_label(bound) == floatToGoString(bound)  # type: ignore[no-untyped-call]


def test_main_writes_the_files(tmp_path: Path) -> None:
    assert rules.main([str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(rules.render())
    assert rules.main([]) == 2
