"""Medians from per-item latency buckets: within the bucket width of the exact median, intervals over items,
and paired changes that cancel each item's own speed."""

from __future__ import annotations

import numpy as np
import pytest

from evalpipe.analysis.clustered_medians import (
    LOG_STEP,
    RESOLUTION,
    ItemBuckets,
    clustered_median,
    paired_median_change,
)


def buckets_of(latencies: np.ndarray) -> ItemBuckets:
    """Items × repeats latencies as (item, bucket, rows) triples, as `history` reads them from a run."""
    items = np.repeat(np.arange(latencies.shape[0]), latencies.shape[1])
    buckets = np.round(np.log(latencies.ravel()) / LOG_STEP).astype(np.int64)
    pairs, rows = np.unique(np.stack([items, buckets]), axis=1, return_counts=True)
    return ItemBuckets.of(pairs[0], pairs[1], rows.astype(np.float64))


@pytest.fixture
def latencies() -> np.ndarray:
    """40 items of very different speed (0.1 s to 10 s), 5 repeats each with 10% noise."""
    rng = np.random.default_rng(7)
    speed = np.exp(rng.uniform(np.log(0.1), np.log(10), size=40))
    return speed[:, None] * rng.lognormal(0, 0.1, size=(40, 5))


def test_the_median_is_within_the_bucket_width_and_its_interval_resamples_items(latencies: np.ndarray) -> None:
    estimate = clustered_median(buckets_of(latencies), key="median")
    assert estimate.mean == pytest.approx(np.median(latencies), rel=RESOLUTION)
    assert (estimate.items, estimate.n) == (40, 200)
    assert estimate.low < estimate.mean < estimate.high
    # Rows of an item move together, so the interval is that of 40 items: far wider than one treating the
    # 200 rows as independent, whose median would barely move from the middle two items' speeds.
    row_level = [np.median(np.random.default_rng(i).choice(latencies.ravel(), 200)) for i in range(400)]
    assert estimate.high - estimate.low > 2 * (np.quantile(row_level, 0.975) - np.quantile(row_level, 0.025))


def test_a_paired_change_cancels_the_items_own_speed(latencies: np.ndarray) -> None:
    shared = np.arange(40)
    same = paired_median_change(buckets_of(latencies), buckets_of(latencies), shared, shared, key="change")
    assert (same.mean, same.low, same.high, same.method) == (0.0, 0.0, 0.0, "exact")
    slower = paired_median_change(buckets_of(latencies), buckets_of(latencies * 1.1), shared, shared, key="change")
    assert slower.mean == pytest.approx(0.1 * np.median(latencies), rel=0.2)
    # Item speeds span 100×, yet every item is 10% slower: paired, the change is clear.
    assert slower.low > 0


def test_only_items_both_runs_timed_are_paired(latencies: np.ndarray) -> None:
    before = buckets_of(latencies[:30])  # items 0-29
    now = buckets_of(latencies[10:])  # items 10-39, numbered 0-29 in this run
    change = paired_median_change(before, now, np.arange(10, 30), np.arange(0, 20), key="change")
    assert change.items == 20 and change.n == 100 and change.mean == 0.0


def test_an_item_bucket_counted_in_two_parts_is_one_triple_with_its_rows_added() -> None:
    twice = ItemBuckets.of(np.array([0, 1, 0, 2]), np.array([5, 5, 5, 7]), np.array([1.0, 2.0, 3.0, 1.0]))
    once = ItemBuckets.of(np.array([0, 1, 2]), np.array([5, 5, 7]), np.array([4.0, 2.0, 1.0]))
    assert (twice.items.tolist(), twice.buckets.tolist(), twice.rows.tolist()) == \
        (once.items.tolist(), once.buckets.tolist(), once.rows.tolist())
    assert clustered_median(twice, key="k", resamples=300) == clustered_median(once, key="k", resamples=300)
