"""The bootstrap intervals against known truths: coverage on synthetic data, fixed seeds, edge cases."""

from __future__ import annotations

import math

import numpy as np

from evalpipe.analysis.stats import mean_ci


def test_interval_contains_the_true_mean_of_a_synthetic_sample() -> None:
    sample = np.random.default_rng(42).normal(0.7, 0.2, 400)
    estimate = mean_ci(sample, key="synthetic")
    assert estimate.method == "bootstrap"
    assert estimate.low < 0.7 < estimate.high
    assert estimate.high - estimate.low < 0.06  # 4 standard errors is about 0.04: not a uselessly wide interval


def test_about_95_percent_of_intervals_contain_the_true_mean() -> None:
    # 300 samples of pass/fail scores (the counts path) and 300 of continuous ones (the row path).
    rng = np.random.default_rng(7)
    hits_binary = 0
    hits_continuous = 0
    for i in range(300):
        binary = (rng.random(120) < 0.3).astype(float)
        estimate = mean_ci(binary, key=f"binary-{i}")
        hits_binary += estimate.low <= 0.3 <= estimate.high
        continuous = rng.exponential(0.5, 120)
        estimate = mean_ci(continuous, key=f"continuous-{i}")
        hits_continuous += estimate.low <= 0.5 <= estimate.high
    # Percentile bootstrap under-covers a little at n=120 for skewed data; 95% ± 3.5 points allows for that.
    assert 0.915 <= hits_binary / 300 <= 0.985
    assert 0.9 <= hits_continuous / 300 <= 0.985


def test_counts_give_the_same_estimate_as_the_rows_they_stand_for() -> None:
    rows = np.repeat([0.0, 0.5, 1.0], [30, 50, 20])
    from_rows = mean_ci(rows, key="k")
    from_counts = mean_ci([0.0, 0.5, 1.0], [30, 50, 20], key="k")
    assert from_counts.mean == from_rows.mean == 0.45
    assert from_counts.n == 100
    assert from_counts.low < 0.45 < from_counts.high
    assert math.isclose(from_counts.high - from_counts.low, from_rows.high - from_rows.low, rel_tol=0.15)


def test_the_same_key_gives_the_same_interval_and_another_key_another_draw() -> None:
    sample = np.random.default_rng(3).random(200)
    assert mean_ci(sample, key="a|b|score_total") == mean_ci(sample, key="a|b|score_total")
    assert mean_ci(sample, key="a|b|score_total") != mean_ci(sample, key="a|c|score_total")


def test_a_million_rows_of_few_distinct_scores_bootstrap_from_counts() -> None:
    values, counts = np.array([0.0, 0.25, 0.5, 0.75, 1.0]), np.array([100_000, 200_000, 300_000, 250_000, 150_000])
    estimate = mean_ci(values, counts, key="big")
    assert estimate.method == "bootstrap" and estimate.n == 1_000_000
    exact_se = math.sqrt(np.dot(counts, (values - estimate.mean) ** 2) / 1_000_000 / 1_000_000)
    assert math.isclose(estimate.high - estimate.low, 2 * 1.96 * exact_se, rel_tol=0.1)


def test_many_distinct_values_fall_back_to_the_normal_interval() -> None:
    sample = np.random.default_rng(5).random(50_000)
    estimate = mean_ci(sample, key="continuous")
    assert estimate.method == "normal"
    assert estimate.low < 0.5 < estimate.high


def test_edge_cases_have_no_interval_rather_than_a_wrong_one() -> None:
    empty = mean_ci([], key="e")
    assert empty.n == 0 and math.isnan(empty.mean)
    single = mean_ci([0.8], key="s")
    assert single.mean == 0.8 and math.isnan(single.low) and single.method == "none"
    constant = mean_ci([1.0] * 10, key="c")
    assert (constant.low, constant.high, constant.method) == (1.0, 1.0, "exact")
    with_nan = mean_ci([1.0, float("nan"), 0.0, float("inf")], key="n")
    assert with_nan.n == 2 and with_nan.mean == 0.5
