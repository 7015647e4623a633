"""Medians (of latency) with intervals that resample items, and their paired change between two runs.

A median cannot be assembled from per-item sums as a mean can (`stats.clustered_means`), so each item
brings its rows' values as counts on log-spaced buckets `RESOLUTION` wide: a sparse list of (item,
bucket, rows) triples, about one per row at most. A resample gives each item a weight (how often it was
drawn, with all its rows); the weighted bucket totals give that resample's median. The median is exact
to within the bucket width (1%), and one resample costs one multiply-add per triple.

A paired change draws one set of item weights for both runs, over the items both timed, and takes the
difference of the two weighted medians: the item's own speed cancels as it does in a paired mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from evalpipe.analysis.stats import CONFIDENCE, RESAMPLES, Estimate, FloatArray, IntArray, Method, seed_for

RESOLUTION = 0.01  # relative width of a bucket
LOG_STEP = math.log1p(RESOLUTION)
# The work cap of one interval in multiply-adds (resamples × triples, about 0.2 s on one core): past it
# (from about 10,000 timed rows per group), fewer resamples, never under `MIN_RESAMPLES`: the interval's
# ends get noisier by a few percent of its width, not narrower.
MAX_WORK = 20_000_000
MIN_RESAMPLES = 200
Indices = npt.NDArray[np.signedinteger[Any]]  # 32-bit where many are held
Counts = npt.NDArray[np.floating[Any]]
_CHUNK_CELLS = 250_000  # resamples × triples per step: the weighted matrix stays a few MB


@dataclass(frozen=True, slots=True)
class ItemBuckets:
    """Per item (an index into the caller's item ids), how many rows fell in each bucket; sorted by bucket,
    with where each distinct bucket starts (what every resample's totals are summed by)."""

    items: Indices
    buckets: Indices
    rows: Counts
    distinct: Indices
    starts: IntArray

    @classmethod
    def of(cls, items: Indices, buckets: Indices, rows: Counts) -> ItemBuckets:
        """The triples, sorted by bucket (then item) as the medians need them; an (item, bucket) given more
        than once (counted in several parts of a run) is one triple with its rows added up."""
        order = np.lexsort((items, buckets))
        # 32-bit: about a row's worth of triples per run is held while a history is built. Row counts are
        # whole numbers, exact in float32 up to 2**24 rows of one item in one bucket.
        items, buckets, rows = (items[order].astype(np.int32), buckets[order].astype(np.int32),
                                rows[order].astype(np.float32))
        if len(items) > 1:
            first = np.flatnonzero(np.r_[True, (items[1:] != items[:-1]) | (buckets[1:] != buckets[:-1])])
            if len(first) < len(items):
                items, buckets, rows = items[first], buckets[first], np.add.reduceat(rows, first)
        return cls._sorted(items, buckets, rows)

    @classmethod
    def _sorted(cls, items: Indices, buckets: Indices, rows: Counts) -> ItemBuckets:
        distinct, starts = np.unique(buckets, return_index=True)
        return cls(items, buckets, rows, distinct, starts.astype(np.int64))

    def timed(self) -> Indices:
        """The items that have rows, sorted."""
        found: Indices = np.unique(self.items)
        return found

    def restricted(self, positions: Indices) -> ItemBuckets:
        """The triples of the items with a position >= 0 in `positions` (indexed by item), renumbered to it."""
        new = positions[self.items]
        keep = new >= 0
        return ItemBuckets._sorted(new[keep], self.buckets[keep], self.rows[keep])


def bucket_values(buckets: IntArray) -> FloatArray:
    """The value a bucket stands for."""
    found: FloatArray = np.exp(buckets * LOG_STEP)
    return found


def clustered_median(data: ItemBuckets, *, key: str, resamples: int = RESAMPLES,
                     confidence: float = CONFIDENCE) -> Estimate:
    """The median of the rows with an interval from resampling items (each with all its rows)."""
    timed = data.timed()
    if not len(timed):
        return _estimate(math.nan, math.nan, math.nan, 0, 0, "none")
    positions = np.full(int(timed[-1]) + 1, -1, dtype=np.int32)
    positions[timed] = np.arange(len(timed))
    data = data.restricted(positions)
    items, rows = len(timed), int(data.rows.sum(dtype=np.float64))
    point = float(_medians(np.ones((1, items)), data)[0])
    if items == 1:
        return _estimate(point, math.nan, math.nan, rows, items, "none")
    draws = np.concatenate([_medians(weights, data) for weights in _weights(items, len(data.rows), resamples, key)])
    return _interval(point, draws, rows, items, confidence)


def paired_median_change(before: ItemBuckets, now: ItemBuckets, shared_before: IntArray, shared_now: IntArray, *,
                         key: str, resamples: int = RESAMPLES, confidence: float = CONFIDENCE) -> Estimate:
    """Median now − median before over the items both runs timed, both under the same item weights.

    `shared_before[k]` and `shared_now[k]` are the same item's indices in the two runs."""
    sides = []
    for data, shared in ((before, shared_before), (now, shared_now)):
        positions = np.full(max(int(data.items.max(initial=-1)), int(shared.max(initial=-1))) + 1, -1, dtype=np.int32)
        positions[shared] = np.arange(len(shared))
        sides.append(data.restricted(positions))
    both = np.intersect1d(sides[0].timed(), sides[1].timed())
    items = len(both)
    if not items:
        return _estimate(math.nan, math.nan, math.nan, 0, 0, "none")
    positions = np.full(len(shared_before), -1, dtype=np.int32)
    positions[both] = np.arange(items)
    side_before, side_now = (side.restricted(positions) for side in sides)
    del sides  # copies of both runs' triples: not held through the resamples
    ones = np.ones((1, items))
    point = float(_medians(ones, side_now)[0] - _medians(ones, side_before)[0])
    rows = int(side_now.rows.sum(dtype=np.float64))
    if items == 1:
        return _estimate(point, math.nan, math.nan, rows, items, "none")
    work = max(len(side_before.rows), len(side_now.rows))
    draws = np.concatenate([_medians(weights, side_now) - _medians(weights, side_before)
                            for weights in _weights(items, work, resamples, key)])
    return _interval(point, draws, rows, items, confidence)


def _medians(weights: FloatArray, data: ItemBuckets) -> FloatArray:
    """Per row of `weights` (resamples × items), the lower median of the rows weighted by their item's weight."""
    weighted = weights[:, data.items]
    weighted *= data.rows  # in place: the matrix (resamples × triples) is the largest array of an interval
    totals = np.add.reduceat(weighted, data.starts, axis=1)
    cumulative = np.cumsum(totals, axis=1)
    return bucket_values(data.distinct[np.argmax(cumulative >= cumulative[:, -1:] / 2, axis=1)])


def _weights(items: int, triples: int, resamples: int, key: str) -> Iterator[FloatArray]:
    """How often each item is drawn in each resample (resamples × items), in chunks, seeded from `key`."""
    rng = np.random.default_rng(seed_for(key))
    resamples = max(min(resamples, MAX_WORK // max(1, triples)), MIN_RESAMPLES)
    chunk = max(1, _CHUNK_CELLS // max(items, triples))
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        picks = rng.integers(0, items, size=(size, items)) + (np.arange(size) * items)[:, None]
        yield np.bincount(picks.ravel(), minlength=size * items).reshape(size, items).astype(np.float64)


def _interval(point: float, draws: FloatArray, rows: int, items: int, confidence: float) -> Estimate:
    if np.all(draws == draws[0]):
        return _estimate(point, point, point, rows, items, "exact")
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return _estimate(point, float(low), float(high), rows, items, "bootstrap")


def _estimate(value: float, low: float, high: float, rows: int, items: int, method: Method) -> Estimate:
    return Estimate(value, low, high, rows, method, items)
