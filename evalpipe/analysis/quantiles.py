"""Exact quantiles per group in memory that does not grow with the number of rows.

A sorted column is what an exact quantile usually costs: every value of the group in memory. Here it
takes two streaming passes instead.

1. A histogram on fixed log-spaced buckets (each 1% wider than the one below it): per group and bucket,
   the count and the smallest and largest value. Its size follows the spread of the values (a few
   hundred buckets per group for latencies spanning a factor of ten), not their number, and bucket
   counts merge exactly across parts.
2. The order statistics a quantile needs (ranks ⌊h⌋ and ⌈h⌉ for h = (n − 1)·q, as polars' "linear"
   quantile) are located in the histogram by cumulative counts. A rank that falls on a bucket's first or
   last row, or in a bucket whose values are all equal, is that bucket's minimum or maximum. Any other is
   read from the value counts of its bucket alone, in a second pass that keeps only those few buckets.

The result equals the sorted-column quantile to the last digit. Memory is the histogram plus the rows
of at most two buckets per quantile and group; a bucket spans 1% of relative width, so it holds about
1% of a group's rows for typical latency spreads, and only values crowded into a 1% band (a group of
near-identical latencies, all distinct) make it large.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

BUCKET_GROWTH = 0.01  # each bucket's upper edge is 1% above its lower edge
SMALLEST = 1e-9  # values at or below this (zero, say) share the lowest bucket
_BUCKET = "_bucket"

Key = tuple[Any, ...]


def bucket_of(column: str) -> pl.Expr:
    """The log-spaced bucket of each value: monotone in the value, so a bucket's values are contiguous once sorted."""
    return (pl.col(column).clip(lower_bound=SMALLEST).log() / math.log1p(BUCKET_GROWTH)).floor().cast(
        pl.Int32).alias(_BUCKET)


def histogram(frame: pl.LazyFrame, column: str, keys: Sequence[str]) -> pl.LazyFrame:
    """Pass 1: count, minimum and maximum per group of `keys` and bucket, over the finite values of `column`.

    `frame` holds only the rows whose values count (filter it first)."""
    return (frame.select(*keys, column).filter(pl.col(column).is_finite())
            .group_by([*keys, bucket_of(column)])
            .agg(pl.len().alias("n"), pl.col(column).min().alias("lo"), pl.col(column).max().alias("hi")))


@dataclass(slots=True)
class _Rank:
    """Where one order statistic of a group lies: `rank` (0-based) within `bucket`, or its value once known."""

    bucket: int
    rank: int
    value: float | None


@dataclass(slots=True)
class Located:
    """Pass 1's result: each group's count and the order statistics its quantiles need."""

    keys: tuple[str, ...]
    quantiles: tuple[float, ...]
    counts: dict[Key, int] = field(default_factory=dict)
    ranks: dict[tuple[Key, int], _Rank] = field(default_factory=dict)  # (group, overall rank) -> where

    @property
    def pending(self) -> pl.DataFrame:
        """The (group, bucket) pairs whose values pass 2 must read."""
        wanted = sorted({(group, where.bucket) for (group, _), where in self.ranks.items() if where.value is None},
                        key=repr)
        columns = {name: [group[i] for group, _ in wanted] for i, name in enumerate(self.keys)}
        frame = pl.DataFrame({**columns, _BUCKET: [bucket for _, bucket in wanted]})
        return frame.with_columns(pl.col(_BUCKET).cast(pl.Int32))


def locate(hist: pl.DataFrame, keys: Sequence[str], quantiles: Sequence[float]) -> Located:
    """Find, for every group of `hist`, the buckets of the order statistics that `quantiles` need."""
    located = Located(tuple(keys), tuple(quantiles))
    for group_key, group in hist.sort([*keys, _BUCKET]).group_by(list(keys), maintain_order=True):
        buckets, counts = group[_BUCKET].to_list(), group["n"].to_list()
        lows, highs = group["lo"].to_list(), group["hi"].to_list()
        n = sum(counts)
        located.counts[group_key] = n
        wanted = sorted({rank for q in quantiles for rank in _ranks(n, q)})
        before, index = 0, 0
        for rank in wanted:
            while before + counts[index] <= rank:
                before += counts[index]
                index += 1
            within = rank - before
            value = None
            if lows[index] == highs[index] or within == 0:
                value = lows[index]
            elif within == counts[index] - 1:
                value = highs[index]
            located.ranks[(group_key, rank)] = _Rank(buckets[index], within, value)
    return located


def refine(frame: pl.LazyFrame, column: str, located: Located) -> pl.LazyFrame:
    """Pass 2: the value counts of `column` in the buckets still pending (`Located.pending`, not empty)."""
    pending = located.pending
    keys = list(located.keys)
    pending = pending.cast({name: dtype for name, dtype in frame.collect_schema().items() if name in keys})
    return (frame.select(*keys, column).filter(pl.col(column).is_finite())
            .with_columns(bucket_of(column))
            .join(pending.lazy(), on=[*keys, _BUCKET], how="semi", nulls_equal=True)
            .group_by([*keys, _BUCKET, column]).len())


def finish(located: Located, column: str, refined: pl.DataFrame | None) -> dict[Key, list[float | None]]:
    """Each group's quantiles, in the order asked for (None for a group without values)."""
    if refined is not None:
        keys = list(located.keys)
        by_bucket: dict[tuple[Key, int], tuple[list[float], list[int]]] = {}
        for group_key, group in refined.sort([*keys, _BUCKET, column]).group_by([*keys, _BUCKET],
                                                                                maintain_order=True):
            by_bucket[(group_key[:-1], group_key[-1])] = (group[column].to_list(), group["len"].to_list())
        for (group_key, _), where in located.ranks.items():
            if where.value is None:
                values, counts = by_bucket[(group_key, where.bucket)]
                where.value = _at_rank(values, counts, where.rank)
    def value_at(group: Key) -> Callable[[int], float | None]:
        return lambda rank: located.ranks[(group, rank)].value

    return {group: [_interpolate(q, n, value_at(group)) for q in located.quantiles]
            for group, n in located.counts.items()}


def _ranks(n: int, q: float) -> tuple[int, ...]:
    position = (n - 1) * q
    return (math.floor(position), math.ceil(position))


def _at_rank(values: list[float], counts: list[int], rank: int) -> float:
    seen = 0
    for value, count in zip(values, counts, strict=True):
        seen += count
        if rank < seen:
            return value
    raise ValueError(f"rank {rank} beyond the {seen} values of its bucket")


def _interpolate(q: float, n: int, value_at: Callable[[int], float | None]) -> float | None:
    """polars' "linear" quantile from the two order statistics around (n − 1)·q."""
    if n == 0:
        return None
    position = (n - 1) * q
    low_rank, high_rank = math.floor(position), math.ceil(position)
    low, high = value_at(low_rank), value_at(high_rank)
    if low is None or high is None:
        return None
    if low_rank == high_rank or low == high:
        return low
    return (position - low_rank) * (high - low) + low


def merge_histograms(frame: pl.DataFrame, keys: Sequence[str]) -> pl.DataFrame:
    """Per-part histograms (`histogram`) merged into the run's: counts add, extremes stay extremes."""
    return frame.group_by([*keys, _BUCKET]).agg(pl.col("n").sum(), pl.col("lo").min(), pl.col("hi").max())


def merge_refined(frame: pl.DataFrame, keys: Sequence[str], column: str) -> pl.DataFrame:
    """Per-part value counts of pending buckets (`refine`) merged into the run's."""
    return frame.group_by([*keys, _BUCKET, column]).agg(pl.col("len").sum())
