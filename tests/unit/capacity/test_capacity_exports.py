"""The public API is re-exported once from ``shipit.capacity``."""

from __future__ import annotations

import shipit.capacity as capacity


def test_all_names_resolve_and_are_sorted_uniquely() -> None:
    assert len(set(capacity.__all__)) == len(capacity.__all__)
    for name in capacity.__all__:
        assert getattr(capacity, name) is not None


def test_step_time_is_public_and_documented() -> None:
    assert "step_time_s" in capacity.__all__
    assert capacity.step_time_s.__doc__ and "iteration" in capacity.step_time_s.__doc__
