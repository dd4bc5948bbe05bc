"""Shadow traffic's pure half: which requests are mirrored, and the diff report."""

from __future__ import annotations

import numpy as np
import pytest

from shipit.policy.shadow import (
    Answer,
    MirrorConfig,
    MirrorSnapshot,
    Pair,
    diff_report,
    edit_distance,
    mirror,
)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("", "", 0),
        ("a b c", "a b c", 0),
        ("a b c", "a x c", 1),
        ("a b c", "a c", 1),
        ("a c", "a b c", 1),
        ("kitten sitting", "sitting kitten", 2),
        ("k i t t e n", "s i t t i n g", 3),  # the classic, per character
    ],
)
def test_edit_distance(a: str, b: str, expected: int) -> None:
    assert edit_distance(a.split(), b.split()) == expected


def test_mirror_samples_a_share_and_yields_to_live_traffic() -> None:
    config = MirrorConfig(percent=20.0, max_in_flight=2)
    decisions = [mirror(config, MirrorSnapshot(f"r{i}", 0, 0, 4)) for i in range(5000)]
    share = sum(d.mirror for d in decisions) / len(decisions)
    assert 0.18 < share < 0.22
    sampled = next(f"r{i}" for i, d in enumerate(decisions) if d.mirror)
    assert mirror(config, MirrorSnapshot(sampled, 3, 0, 4)).reason_code == "live_queue"
    assert mirror(config, MirrorSnapshot(sampled, 0, 2, 4)).reason_code == "shadow_full"
    assert mirror(config, MirrorSnapshot(sampled, 0, 0, 0)).reason_code == "candidate_busy"
    assert mirror(config, MirrorSnapshot(sampled, 0, 0, 4)).mirror


def pairs(rng: np.random.Generator, n: int, shift_s: float, text: bool) -> list[Pair]:
    out = []
    for i in range(n):
        live = float(rng.lognormal(np.log(0.1), 0.3))
        live_text = f"the answer is {i}"
        shadow_text = live_text if not text or i % 4 else f"an answer is {i} indeed"
        out.append(
            Pair(
                Answer(True, live, 0.02, live_text),
                Answer(True, live + shift_s + float(rng.normal(0, 0.005)), 0.02, shadow_text),
                temperature_zero=True,
            )
        )
    return out


def test_identical_versions_show_no_difference() -> None:
    report = diff_report(pairs(np.random.default_rng(1), 300, 0.0, text=False))
    assert report.exact_match_rate == 1.0 and report.mean_edit_distance == 0.0
    ttft = report.latency[0]
    assert ttft.low_s < 0 < ttft.high_s  # the interval holds zero
    assert report.shadow_error_rate == report.live_error_rate == 0.0


def test_a_changed_candidate_shows_its_differences() -> None:
    report = diff_report(pairs(np.random.default_rng(2), 300, 0.03, text=True))
    ttft = report.latency[0]
    assert 0.025 < ttft.low_s < ttft.median_s < ttft.high_s < 0.035
    assert report.exact_match_rate == pytest.approx(0.75)
    # One pair in four: "the" -> "an" and one token more: distance 2, length +1.
    assert report.mean_edit_distance == pytest.approx(0.5)
    assert report.mean_length_delta == pytest.approx(0.25)
    assert "75% identical of 300" in report.reason and "ttft +29.5 ms" in report.reason
