"""Percentiles, medians and ratios as the table uses them."""

from __future__ import annotations

import pytest

from bench.loadbench.stats import median, percentile, ratio


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(100, 0, -1)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2
    assert percentile([5.0], 99) == 5
    # p99 of 20 samples is the largest: nearest rank, no interpolation.
    assert percentile([float(v) for v in range(20)], 99) == 19


@pytest.mark.parametrize(("values", "p"), [([], 50), ([1.0], 0), ([1.0], 101)])
def test_percentile_refuses_what_has_none(values: list[float], p: float) -> None:
    with pytest.raises(ValueError):
        percentile(values, p)


def test_median_skips_missing_values() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2
    assert median([4.0, 1.0]) == 2.5
    assert median([None, None]) is None


def test_ratio() -> None:
    assert ratio(3.0, 2.0) == 1.5
    assert ratio(None, 2.0) is None
    assert ratio(1.0, None) is None
    assert ratio(1.0, 0.0) is None
