"""Means with 95% bootstrap confidence intervals, reproducible to the last digit.

The bootstrap works on a sample given as distinct values and their counts. Resampling n rows with
replacement is the same as drawing how often each distinct value is picked from a multinomial
distribution, so one resample costs one draw per distinct value instead of one per row. Scores usually
take few values (pass/fail, a judge's 1-10, means of those), which makes the exact bootstrap of a
million-row group cost milliseconds. Continuous scores are resampled row by row, whichever way is
cheaper, while that stays within `MAX_ROW_DRAWS`; past it (thousands of distinct values per group) the
interval is the normal approximation, which the bootstrap converges to at such sizes.
`Estimate.method` says which one was used.

Seeds are fixed and derived from what the interval is for (backend, parameter set, metric), never from
the order groups are computed in: the same rows give the same report on every run and machine.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

import numpy as np
import numpy.typing as npt

CONFIDENCE = 0.95
RESAMPLES = 2000
BASE_SEED = 20_240_611
# The work cap of one interval, in row-index draws (about 0.1 s on one core): a summary computes one
# interval per backend, parameter set and metric, often over a hundred of them.
MAX_ROW_DRAWS = 10_000_000
_MULTINOMIAL_COST = 10  # one multinomial draw per distinct value costs about ten row-index draws
_CHUNK_CELLS = 2_000_000  # resamples are drawn in chunks so the matrix of draws stays small

Method = Literal["bootstrap", "normal", "exact", "none"]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class Estimate:
    """A mean over `n` values with its confidence interval [`low`, `high`] (NaN when n is 0 or 1)."""

    mean: float
    low: float
    high: float
    n: int
    method: Method

    def below(self, threshold: float) -> bool:
        """Whether the whole interval lies below `threshold`."""
        return not math.isnan(self.high) and self.high < threshold

    def above(self, threshold: float) -> bool:
        """Whether the whole interval lies above `threshold`."""
        return not math.isnan(self.low) and self.low > threshold


def seed_for(key: str) -> int:
    """The fixed seed of the interval named `key`."""
    return BASE_SEED ^ zlib.crc32(key.encode("utf-8"))


def mean_ci(values: FloatArray | list[float], counts: IntArray | list[int] | None = None, *, key: str,
            resamples: int = RESAMPLES, confidence: float = CONFIDENCE) -> Estimate:
    """The mean of `values` (each repeated `counts` times) with a percentile bootstrap interval.

    A paired comparison passes the per-pair differences: the paired bootstrap is the bootstrap of
    their mean."""
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
