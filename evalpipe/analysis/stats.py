"""Means with 95% confidence intervals that respect how rows cluster, reproducible to the last digit.

Rows are not independent: the repeats of one item, the turns of one dialogue share the item's difficulty,
so resampling rows as if independent gives intervals that are too narrow. `clustered_means` therefore
works on clusters (items): per item, the sum `S_i` of a metric's values over its rows and the number
`N_i` of rows that have the metric. The mean is the ratio estimator `r = ΣS_i / ΣN_i` (the plain mean of
the rows), and its interval is a percentile bootstrap that resamples ITEMS with replacement. One set of
resample weights serves every metric of a call, seeded from the call's key only: two metrics with the
same values get the same interval, and the same rows give the same report on every run and machine.

When items × resamples exceeds `MAX_ITEM_DRAWS` (more than 500 items at 2,000 resamples), the interval is
the normal one with the clustered (sandwich, delta-method) standard error of a ratio of sums, as in
Miller, "Adding Error Bars to Evals" (arXiv 2411.00640), with K items and residuals `e_i = S_i − r·N_i`:

    SE(r)² = K / (K − 1) · Σ_i e_i² / (Σ_i N_i)²

With one row per item it is the usual standard error of a mean (up to n/(n−1)); with repeats it adds the
covariance of rows within an item. At such item counts the bootstrap converges to it (the tests check
that the two agree at 1,000 items).
A proportion (a score, a pass rate) that is 0, or 1, on every item gets the Wilson score interval over
the items instead of the bootstrap's [0, 0] (`clustered_means`' `proportions`).
`Estimate.method` says which was used.

`mean_ci` is the older row-level bootstrap over value counts (rows treated as independent), kept for
callers that compare rows that truly are independent draws.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

CONFIDENCE = 0.95
RESAMPLES = 2000
BASE_SEED = 20_240_611
# The work cap of one row-level interval (`mean_ci`), in row-index draws (about 0.1 s on one core).
MAX_ROW_DRAWS = 10_000_000
# The work cap of one `clustered_means` call, in item draws (about 0.03 s on one core: an item draw also
# costs its share of a bincount and a matrix product). A summary makes one call per backend and parameter
# set, often dozens of them.
MAX_ITEM_DRAWS = 1_000_000
_MULTINOMIAL_COST = 10  # one multinomial draw per distinct value costs about ten row-index draws
_CHUNK_CELLS = 1_000_000  # resamples are drawn in chunks so the matrix of draws stays small

Method = Literal["bootstrap", "clustered-normal", "normal", "wilson", "exact", "none"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Estimate:
    """A mean over `n` rows from `items` clusters with its interval [`low`, `high`] (NaN when undefined).

    `items` is 0 when the interval treated rows as independent (`mean_ci`)."""

    mean: float
    low: float
    high: float
    n: int
    method: Method
    items: int = 0

    @property
    def repeats(self) -> float:
        """Rows per item on average (n when the rows were not clustered)."""
        return self.n / self.items if self.items else float(self.n)

    def below(self, threshold: float) -> bool:
        """Whether the whole interval lies below `threshold`."""
        return not math.isnan(self.high) and self.high < threshold

    def above(self, threshold: float) -> bool:
        """Whether the whole interval lies above `threshold`."""
        return not math.isnan(self.low) and self.low > threshold


def seed_for(key: str) -> int:
    """The fixed seed of the interval named `key`."""
    return BASE_SEED ^ zlib.crc32(key.encode("utf-8"))


def clustered_means(sums: FloatArray, counts: FloatArray, metrics: Sequence[str], *, key: str,
                    resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                    proportions: Collection[str] = ()) -> dict[str, Estimate]:
    """Per metric, the mean over rows with an interval from resampling items (clusters) with replacement.

    `sums` and `counts` have shape (items, metrics): per item, the sum of a metric's values over its rows
    and how many rows had it. A paired comparison passes per-item sums of differences and counts of
    pairs. One set of resample weights, seeded from `key`, serves every metric.

    `proportions` names metrics whose values lie in [0, 1] (scores, rates). Where every item of one sits
    at 0 or at 1, every resample does too and the bootstrap says [0, 0]: certainty that 4 items cannot
    give. Such a metric gets the Wilson score interval with the items as its sample size instead."""
    sums = np.asarray(sums, dtype=np.float64).reshape(-1, len(metrics))
    counts = np.asarray(counts, dtype=np.float64).reshape(-1, len(metrics))
    if sums.shape != counts.shape:
        raise ValueError(f"sums {sums.shape} and counts {counts.shape} must have the same shape (items, metrics)")
    present = (counts > 0) & np.isfinite(sums)
    sums, counts = np.where(present, sums, 0.0), np.where(present, counts, 0.0)
    clusters = len(sums)
    estimates: dict[str, Estimate] = {}
    pending: list[int] = []
    for column, metric in enumerate(metrics):
        items, n = int(present[:, column].sum()), int(round(counts[:, column].sum()))
        if n == 0:
            estimates[metric] = Estimate(math.nan, math.nan, math.nan, 0, "none", 0)
            continue
        mean = float(sums[:, column].sum() / counts[:, column].sum())
        residuals = sums[:, column] - mean * counts[:, column]
        if items < 2:
            estimates[metric] = Estimate(mean, math.nan, math.nan, n, "none", items)
        elif np.allclose(residuals, 0.0, rtol=0.0, atol=1e-12 * max(1.0, float(np.abs(sums[:, column]).max()))):
            if metric in proportions and mean in (0.0, 1.0):
                estimates[metric] = _wilson_at_the_edge(mean, items, n, confidence)
            else:
                estimates[metric] = Estimate(mean, mean, mean, n, "exact", items)  # every item has the same mean
        elif clusters * resamples > MAX_ITEM_DRAWS:
            estimates[metric] = _clustered_normal(residuals, counts[:, column], items, n, mean, confidence)
        else:
            estimates[metric] = Estimate(mean, math.nan, math.nan, n, "bootstrap", items)
            pending.append(column)
    if pending:
        ratios = _item_bootstrap(sums[:, pending], counts[:, pending], resamples, np.random.default_rng(seed_for(key)))
        tail = (1 - confidence) / 2
        for position, column in enumerate(pending):
            low, high = np.nanquantile(ratios[:, position], [tail, 1 - tail])
            previous = estimates[metrics[column]]
            estimates[metrics[column]] = Estimate(previous.mean, float(low), float(high), previous.n, "bootstrap",
                                                  previous.items)
    return estimates


def _wilson_at_the_edge(mean: float, items: int, n: int, confidence: float) -> Estimate:
    """The Wilson score interval of a proportion observed as 0 or 1 on every one of `items` clusters:
    [0, z²/(K + z²)] or [K/(K + z²), 1]. Counting items, not rows, keeps repeats from narrowing it."""
    z2 = NormalDist().inv_cdf(1 - (1 - confidence) / 2) ** 2
    margin = z2 / (items + z2)
    low, high = (0.0, margin) if mean == 0.0 else (1.0 - margin, 1.0)
    return Estimate(mean, low, high, n, "wilson", items)


def _item_bootstrap(sums: FloatArray, counts: FloatArray, resamples: int, rng: np.random.Generator) -> FloatArray:
    """Resampled ratios ΣS/ΣN, shape (resamples, metrics): each resample draws as many items as there are,
    with replacement, as a weight per item (how often it was drawn)."""
    clusters = len(sums)
    chunk = max(1, _CHUNK_CELLS // clusters)
    ratios: list[FloatArray] = []
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of only items without the metric: NaN
        for start in range(0, resamples, chunk):
            size = min(chunk, resamples - start)
            picks = rng.integers(0, clusters, size=(size, clusters)) + (np.arange(size) * clusters)[:, None]
            weights = np.bincount(picks.ravel(), minlength=size * clusters).reshape(size, clusters).astype(np.float64)
            ratios.append((weights @ sums) / (weights @ counts))
    return np.concatenate(ratios)


def _clustered_normal(residuals: FloatArray, counts: FloatArray, items: int, n: int, mean: float,
                      confidence: float) -> Estimate:
    """The normal interval with the clustered standard error of a ratio of sums (see the module docstring)."""
    total = float(counts.sum())
    variance = items / (items - 1) * float(np.dot(residuals, residuals)) / total**2
    half = NormalDist().inv_cdf(1 - (1 - confidence) / 2) * math.sqrt(variance)
    return Estimate(mean, mean - half, mean + half, n, "clustered-normal", items)


def mean_ci(values: FloatArray | list[float], counts: IntArray | list[int] | None = None, *, key: str,
            resamples: int = RESAMPLES, confidence: float = CONFIDENCE) -> Estimate:
    """The mean of `values` (each repeated `counts` times) with a percentile bootstrap interval that treats
    rows as independent (see `clustered_means` for rows that share items)."""
    distinct = np.asarray(values, dtype=np.float64)
    weights = np.ones(len(distinct), dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
    keep = np.isfinite(distinct) & (weights > 0)
    distinct, weights = distinct[keep], weights[keep]
    n = int(weights.sum())
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0, "none")
    mean = float(np.dot(distinct, weights) / n)
    if n == 1:
        return Estimate(mean, math.nan, math.nan, 1, "none")
    if np.all(distinct == distinct[0]):
        return Estimate(mean, mean, mean, n, "exact")  # every resample has the same mean
    rng = np.random.default_rng(seed_for(key))
    multinomial_cost, row_cost = _MULTINOMIAL_COST * len(distinct) * resamples, n * resamples
    if min(multinomial_cost, row_cost) > MAX_ROW_DRAWS:
        return _normal_interval(distinct, weights, n, mean, confidence)
    if multinomial_cost < row_cost:
        means = _multinomial_means(distinct, weights, n, resamples, rng)
    else:
        means = _row_means(np.repeat(distinct, weights), resamples, rng)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Estimate(mean, float(low), float(high), n, "bootstrap")


def _multinomial_means(distinct: FloatArray, weights: IntArray, n: int, resamples: int,
                     rng: np.random.Generator) -> FloatArray:
    probabilities = weights / n
    chunk = max(1, _CHUNK_CELLS // len(distinct))
    means: list[FloatArray] = []
    for start in range(0, resamples, chunk):
        picks = rng.multinomial(n, probabilities, size=min(chunk, resamples - start))
        means.append(picks @ distinct / n)
    return np.concatenate(means)


def _row_means(sample: FloatArray, resamples: int, rng: np.random.Generator) -> FloatArray:
    chunk = max(1, _CHUNK_CELLS // len(sample))
    means: list[FloatArray] = []
    for start in range(0, resamples, chunk):
        picks = rng.integers(0, len(sample), size=(min(chunk, resamples - start), len(sample)))
        means.append(sample[picks].mean(axis=1))
    return np.concatenate(means)


def _normal_interval(distinct: FloatArray, weights: IntArray, n: int, mean: float, confidence: float) -> Estimate:
    variance = float(np.dot(weights, (distinct - mean) ** 2) / (n - 1))
    half = NormalDist().inv_cdf(1 - (1 - confidence) / 2) * math.sqrt(variance / n)
    return Estimate(mean, mean - half, mean + half, n, "normal")
