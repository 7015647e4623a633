"""The bootstrap intervals against known truths: coverage on synthetic data, fixed seeds, edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evalpipe.analysis.stats import clustered_means, mean_ci
from evalpipe.analysis.synthetic import clustered_outcomes, coverage_experiment


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


def _clusters(outcomes: np.ndarray, metrics: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Per-item sums and counts of (items, repeats) outcomes, the same column `metrics` times."""
    sums = np.repeat(outcomes.sum(axis=1, keepdims=True), metrics, axis=1)
    return sums, np.full_like(sums, outcomes.shape[1])


def test_identical_metrics_get_identical_intervals() -> None:
    outcomes = clustered_outcomes(np.random.default_rng(11), 80, 3)
    sums, counts = _clusters(outcomes, 2)
    found = clustered_means(sums, counts, ["score_accuracy", "score_total"], key="alpha|default")
    assert found["score_accuracy"] == found["score_total"]
    assert found["score_accuracy"].method == "bootstrap"
    assert (found["score_accuracy"].items, found["score_accuracy"].n) == (80, 240)


def test_repeats_widen_the_interval_beyond_the_row_bootstrap() -> None:
    # Items differ a lot and repeats of one item agree: 200 items × 5 are worth far fewer than 1000 rows.
    outcomes = clustered_outcomes(np.random.default_rng(12), 200, 5)
    sums, counts = _clusters(outcomes)
    clustered = clustered_means(sums, counts, ["score"], key="k")["score"]
    rows = mean_ci(outcomes.ravel(), key="k")
    assert clustered.mean == rows.mean
    assert clustered.high - clustered.low > 1.5 * (rows.high - rows.low)
    assert clustered.repeats == 5


def test_one_row_per_item_matches_the_row_bootstrap() -> None:
    outcomes = clustered_outcomes(np.random.default_rng(13), 400, 1)
    sums, counts = _clusters(outcomes)
    clustered = clustered_means(sums, counts, ["score"], key="k")["score"]
    rows = mean_ci(outcomes.ravel(), key="k")
    assert math.isclose(clustered.high - clustered.low, rows.high - rows.low, rel_tol=0.1)


def test_the_seed_follows_the_key_not_the_metric_or_its_position() -> None:
    sums, counts = _clusters(np.random.default_rng(14).random((60, 2)))  # continuous: quantiles differ by draw
    first = clustered_means(sums, counts, ["a"], key="x|y")["a"]
    assert clustered_means(sums, counts, ["b"], key="x|y")["b"] == first
    assert clustered_means(sums, counts, ["a"], key="x|z")["a"] != first


def test_many_items_fall_back_to_the_clustered_normal_interval_of_the_same_width() -> None:
    items = 1_000  # × 2000 resamples is past MAX_ITEM_DRAWS, × 1000 is not
    outcomes = clustered_outcomes(np.random.default_rng(15), items, 3)
    sums, counts = _clusters(outcomes)
    normal = clustered_means(sums, counts, ["s"], key="k")["s"]
    assert normal.method == "clustered-normal" and normal.items == items
    bootstrap = clustered_means(sums, counts, ["s"], key="k", resamples=1_000)["s"]
    assert bootstrap.method == "bootstrap"
    assert math.isclose(normal.high - normal.low, bootstrap.high - bootstrap.low, rel_tol=0.1)
    rows = mean_ci(outcomes.ravel(), key="k")
    # Within-item correlation 1/3 with 3 repeats: the design effect is 1 + 2/3, so the width ratio about 1.29.
    assert normal.high - normal.low > 1.2 * (rows.high - rows.low)


def test_uneven_clusters_and_missing_values() -> None:
    # Item 2 has no value for metric "b"; the ratio is over rows, not a mean of item means.
    sums = np.array([[3.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    counts = np.array([[3.0, 2.0], [1.0, 1.0], [2.0, 0.0]])
    found = clustered_means(sums, counts, ["a", "b"], key="k")
    assert found["a"].mean == 4 / 6 and (found["a"].n, found["a"].items) == (6, 3)
    assert found["b"].mean == 1 / 3 and (found["b"].n, found["b"].items) == (3, 2)


def test_clustered_edge_cases_have_no_interval_rather_than_a_wrong_one() -> None:
    found = clustered_means(np.array([[0.0, 2.0, 4.0]]), np.array([[0.0, 3.0, 4.0]]), ["none", "one", "constant"],
                            key="k")
    assert found["none"].n == 0 and math.isnan(found["none"].mean) and found["none"].method == "none"
    assert found["one"].items == 1 and math.isnan(found["one"].low) and found["one"].method == "none"
    constant = clustered_means(np.array([[1.0], [2.0]]), np.array([[2.0], [4.0]]), ["c"], key="k")["c"]
    assert (constant.low, constant.mean, constant.high, constant.method) == (0.5, 0.5, 0.5, "exact")
    with pytest.raises(ValueError, match="same shape"):
        clustered_means(np.zeros((3, 1)), np.zeros((2, 1)), ["x"], key="k")


def test_cluster_bootstrap_covers_and_the_row_bootstrap_under_covers() -> None:
    # 1,000 evaluations of 100 items × 4 repeats with item effects (about 2 s); scripts/coverage.py runs more.
    found = coverage_experiment(1_000, items=100, repeats=4, seed=1)
    assert 0.93 <= found.clustered <= 0.97
    assert found.rows < 0.9


def test_a_proportion_at_its_edge_gets_an_interval_that_counts_items() -> None:
    # Four items, each answered wrong twice: the bootstrap's [0, 0] would claim certainty.
    sums, counts = np.zeros((4, 2)), np.full((4, 2), 2.0)
    found = clustered_means(sums, counts, ["accuracy", "difference"], key="edge", proportions=["accuracy"])
    accuracy = found["accuracy"]
    assert accuracy.method == "wilson" and accuracy.low == 0.0 and 0.45 < accuracy.high < 0.5
    assert found["difference"].method == "exact" and found["difference"].high == 0.0  # not a proportion
    perfect = clustered_means(np.full((40, 1), 3.0), np.full((40, 1), 3.0), ["pass"], key="p", proportions=["pass"])
    assert perfect["pass"].high == 1.0 and 0.9 < perfect["pass"].low < 0.92  # 40 items, not 120 rows
