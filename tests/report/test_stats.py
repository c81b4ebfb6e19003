"""Quartiles, summaries and correlations against hand-computed values."""

from __future__ import annotations

import math

import pytest

from lark.report.render import fmt_duration
from lark.report.stats import pearson, quantile, ranks, spearman, summarize


def test_quartiles_of_four_values_interpolate_between_ranks():
    # positions (n-1)p = 0.75, 1.5, 2.25 -> 1 + .75*1, 2 + .5*1, 3 + .25*1
    d = summarize([4, 1, 3, 2])
    assert (d.count, d.min, d.q1, d.median, d.q3, d.mean, d.max) == (4, 1, 1.75, 2.5, 3.25, 2.5, 4)


def test_quartiles_of_five_values_land_on_data_points():
    d = summarize([50, 10, 40, 20, 30])
    assert (d.q1, d.median, d.q3, d.mean) == (20, 30, 40, 30)


def test_single_value_and_empty():
    assert summarize([7.0]).as_dict() == {"count": 1, "min": 7.0, "q1": 7.0, "median": 7.0, "q3": 7.0,
                                          "mean": 7.0, "max": 7.0}
    empty = summarize([])
    assert empty.count == 0 and empty.median is None and empty.mean is None


def test_quantile_levels_and_validation():
    assert quantile([0, 10], 0.1) == 1.0
    assert quantile([], 0.5) is None
    with pytest.raises(ValueError):
        quantile([1], 1.5)


def test_pearson_perfect_and_undefined():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [6, 4, 2]) == pytest.approx(-1.0)
    assert pearson([1, 1, 1], [1, 2, 3]) is None  # constant side: undefined, not 0
    assert pearson([1], [1]) is None


def test_pearson_hand_computed():
    # x = 1,2,3 (mean 2), y = 1,3,2 (mean 2): sxy = (-1)(-1)+0+1*0 = 1, sxx = 2, syy = 2 -> 0.5
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_ranks_average_ties():
    assert ranks([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert ranks([3, 1, 2]).tolist() == [3.0, 1.0, 2.0]
    assert ranks([5, 5, 5]).tolist() == [2.0, 2.0, 2.0] and ranks([]).tolist() == []


def test_spearman_is_rank_based():
    # monotone but not linear: Spearman 1, Pearson below 1
    xs, ys = [1, 2, 3, 4], [1, 10, 100, 1000]
    assert spearman(xs, ys) == pytest.approx(1.0)
    assert pearson(xs, ys) < 0.99
    assert math.isclose(spearman([1, 2, 3], [3, 2, 1]), -1.0)


def test_one_duration_format():
    # the wall column once mixed "5.3 d" and "29h19m": one format, the two largest units, from seconds to days
    assert [fmt_duration(x) for x in (4.25, 42, 303, 7620, 105540, 457920, 1234 * 86400 + 5 * 3600, None)] == \
        ["4.2s", "42s", "5m03s", "2h07m", "1d05h", "5d07h", "1234d05h", "-"]
