"""`evalpipe compare RUN_A RUN_B`: is B better than A, by how much, and how sure are we?

Rows pair on (backend, item, parameter set, repeat, turn): the same task in both runs. With
`pair_on="item"` each side is first averaged per (backend, item), for runs whose repeats or parameter
sets differ. Differences are B − A, so a negative difference is a regression. Each interval is a paired
bootstrap (the bootstrap of the mean per-pair difference) with a seed fixed by backend and metric.

Rows without a partner, and pairs where either side has no score (an error row), are counted per
backend and reported; they are never dropped silently.

Memory: a join holds one side's keys in a hash table, so a million pairs would cost hundreds of MB at
once. Larger runs are therefore split by a hash of the item id into partitions of about
`PAIRS_PER_PARTITION` rows (each run's projected key, score, cost and latency columns spilled, one part
at a time, to a temporary directory), and each partition is joined on its own. Every result merges
exactly across partitions: counts, value counts (the bootstrap's input), cost in whole units, latency
histograms (`quantiles`) and the top regressions of each partition.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from evalpipe.analysis import quantiles
from evalpipe.analysis.runs import Merge, Run, RunDirError, collect, collect_all
from evalpipe.analysis.stats import Estimate, FloatArray, IntArray
from evalpipe.analysis.summary import (
    EXACT_UNIT,
    estimates_from,
    exact_sum,
    exact_units,
    merge_value_counts,
    value_count_queries,
    value_counts_from,
)

PairOn = Literal["task", "item"]
PAIR_KEYS: dict[PairOn, tuple[str, ...]] = {"task": ("item_id", "param_set", "repeat", "turn"), "item": ("item_id",)}
DEFAULT_GATE_METRIC = "score_total"
TOP_REGRESSIONS = 10
_TIE = 1e-9  # differences this small are float noise from averaging, not a win or a loss
PAIRS_PER_PARTITION = 100_000  # rows per run joined at once; more rows are split by item
_PARTITION_SEED = 20_240_611
_BOTH = pl.col("_in_a").is_not_null() & pl.col("_in_a_b").is_not_null()


@dataclass(frozen=True, slots=True)
class MetricDifference:
    """How one backend's metric moved from A to B over its scored pairs."""

    backend_id: str
    metric: str
    pairs: int  # pairs where both sides have the metric
    unscored: int  # pairs where either side lacks it (an error row, say)
    mean_a: float
    mean_b: float
    difference: Estimate  # of B − A
    wins: int  # B better
    ties: int
    losses: int


@dataclass(frozen=True, slots=True)
class BackendChange:
    """Pairing counts, cost and latency of one backend from A to B (cost and latency over the pairs)."""

    backend_id: str
    pairs: int
    only_in_a: int
    only_in_b: int
    cost_a_usd: float
    cost_b_usd: float
    latency_p50_a_s: float | None
    latency_p50_b_s: float | None


@dataclass(frozen=True, slots=True)
class Regression:
    """One of the pairs that lost most on the gate metric, with both answers."""

    backend_id: str
    key: dict[str, object]
    score_a: float
    score_b: float
    difference: float
    prompt: str | None
    response_a: str | None
    response_b: str | None


@dataclass(frozen=True, slots=True)
class Comparison:
    """Everything `compare` found, and whether the release gate holds."""

    run_a: str
    run_b: str
    warnings_a: tuple[str, ...]
    warnings_b: tuple[str, ...]
    pair_on: PairOn
    backend_map: dict[str, str]  # B's backend id -> A's, when they differ
    metrics: list[str]
    notes: list[str]
    differences: list[MetricDifference]
    changes: list[BackendChange]
    regressions: dict[str, list[Regression]]
    gate_metric: str
    threshold: float | None
    failed_backends: list[str] = field(default_factory=list)

    @property
    def gate_failed(self) -> bool:
        """Whether `--fail-on-regression` should fail the pipeline."""
        return self.threshold is not None and (bool(self.failed_backends) or not self.changes_with_pairs)

    @property
    def changes_with_pairs(self) -> list[BackendChange]:
        """The backends that have at least one pair."""
        return [change for change in self.changes if change.pairs]


def metric_column(name: str) -> str:
    """The score column a user means: `total` and `score_total` both name `score_total`."""
    return name if name.startswith("score_") else f"score_{name}"


def compare_runs(run_a: Run, run_b: Run, *, pair_on: PairOn = "task", gate_metric: str = DEFAULT_GATE_METRIC,
                 threshold: float | None = None, backend_map: Mapping[str, str] | None = None,
                 top: int = TOP_REGRESSIONS) -> Comparison:
    """Compare `run_b` against `run_a`; `backend_map` pairs B's backend ids with A's where they differ."""
    notes: list[str] = []
    metrics = [m for m in run_a.metrics if m in run_b.metrics]
    for run, other in ((run_a, run_b), (run_b, run_a)):
        lonely = [m for m in run.metrics if m not in other.metrics]
        if lonely:
            notes.append(f"only {run.name} has {', '.join(lonely)}; not compared")
    if gate_metric not in metrics:
        raise RunDirError(f"cannot compare on {gate_metric!r}: the runs share {', '.join(metrics)}")
    mapping = dict(backend_map or _single_backend_map(run_a, run_b, notes))
    keys = ["backend_id", *PAIR_KEYS[pair_on]]
    count = max(1, math.ceil(max(run_a.rows, run_b.rows) / PAIRS_PER_PARTITION))
    with _partitions(run_a, run_b, keys, metrics, pair_on, mapping, count) as joins:
        changes, differences, worst = _fold(joins, run_a, keys, metrics, gate_metric, top)
    regressions = _top_regressions(worst, keys, run_a, run_b, mapping, pair_on)
    failed = [d.backend_id for d in differences if d.metric == gate_metric and threshold is not None
              and d.difference.below(-threshold)]
    return Comparison(run_a.name, run_b.name, run_a.warnings, run_b.warnings, pair_on, mapping, metrics, notes,
                      differences, changes, regressions, gate_metric, threshold, failed)


def _single_backend_map(run_a: Run, run_b: Run, notes: list[str]) -> dict[str, str]:
    """B's only backend paired with A's only backend when their ids differ (a model renamed between releases)."""
    ids_a, ids_b = _backend_ids(run_a), _backend_ids(run_b)
    if len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b:
        notes.append(f"each run has one backend: {ids_b[0]} (B) is compared with {ids_a[0]} (A)")
        return {ids_b[0]: ids_a[0]}
    return {}


def _backend_ids(run: Run) -> list[str]:
    return sorted(collect(run.scan(["backend_id"]).unique(), run)["backend_id"].drop_nulls().to_list())


@contextmanager
def _partitions(run_a: Run, run_b: Run, keys: list[str], metrics: list[str], pair_on: PairOn,
                mapping: Mapping[str, str], count: int) -> Iterator[list[pl.LazyFrame]]:
    """The full join of A's and B's sides, as `count` lazy joins over disjoint sets of items."""
    columns = [*keys, *metrics, "status", "cost_usd", "latency_s"]

    def join(frame_a: pl.LazyFrame, frame_b: pl.LazyFrame) -> pl.LazyFrame:
        side_a = _side(frame_a, keys, metrics, pair_on, {})
        side_b = _side(frame_b, keys, metrics, pair_on, mapping)
        return side_a.join(side_b, on=keys, how="full", nulls_equal=True, suffix="_b", coalesce=True)

    if count == 1:
        yield [join(run_a.scan(columns), run_b.scan(columns))]
        return
    with tempfile.TemporaryDirectory(prefix="evalpipe-compare-") as temp:
        spilled = {name: _spill(run, columns, count, Path(temp) / name) for name, run in (("a", run_a), ("b", run_b))}
        yield [join(spilled["a"][k], spilled["b"][k]) for k in range(count)]


def _spill(run: Run, columns: list[str], count: int, directory: Path) -> list[pl.LazyFrame]:
    """`run`'s `columns` split by a hash of the item id into `count` partitions, written one part at a time."""
    directory.mkdir()
    files: list[list[Path]] = [[] for _ in range(count)]
    partition = (pl.col("item_id").hash(_PARTITION_SEED) % count).alias("_partition")
    for number, part in enumerate(run.parts):
        frame = collect(run.scan(columns, [part]).with_columns(partition), run)
        for (k,), rows in frame.partition_by("_partition", as_dict=True, include_key=False).items():
            path = directory / f"{k}-{number:05d}.parquet"
            rows.write_parquet(path, compression="lz4")
            files[int(k)].append(path)
    empty = run.scan(columns).clear()
    return [pl.scan_parquet(paths) if paths else empty for paths in files]


def _side(frame: pl.LazyFrame, keys: list[str], metrics: list[str], pair_on: PairOn, mapping: Mapping[str, str],
          ) -> pl.LazyFrame:
    """One run's side of the join: the pairing keys, metrics, cost and latency (ok rows only for latency)."""
    if mapping:
        frame = frame.with_columns(pl.col("backend_id").replace(dict(mapping)))
    frame = frame.with_columns(
        [pl.when(pl.col(m).is_finite()).then(pl.col(m)).alias(m) for m in metrics]
        + [pl.when(pl.col("status") == "ok").then(pl.col("latency_s")).alias("latency_s")])
    if pair_on == "item":
        # Rounded: the order of a group's rows varies between runs, and with it a float mean's last digits.
        frame = frame.group_by(keys).agg([pl.col(m).mean().round(12) for m in metrics]
                                         + [exact_sum("cost_usd"), pl.col("latency_s").mean().round(12)])
    return frame.select([*keys, *metrics, "cost_usd", "latency_s", pl.lit(True).alias("_in_a")])


def _fold(joins: list[pl.LazyFrame], run: Run, keys: list[str], metrics: list[str], gate_metric: str, top: int,
          ) -> tuple[list[BackendChange], list[MetricDifference], pl.DataFrame]:
    """Pairing counts, differences and the worst pairs, each partition's results merged into the run's."""
    sides = [name for m in metrics for name in (m, f"{m}_b")]
    latencies = ("latency_s", "latency_s_b")

    def queries(joined: pl.LazyFrame) -> list[pl.LazyFrame]:
        paired = joined.filter(_BOTH)
        diffs = paired.select("backend_id", *[(pl.col(f"{m}_b") - pl.col(m)).round(9).alias(m) for m in metrics])
        scored_sides = paired.select("backend_id", *[
            pl.when(pl.col(m).is_not_null() & pl.col(f"{m}_b").is_not_null()).then(pl.col(name)).alias(name)
            for m in metrics for name in (m, f"{m}_b")])
        return [_change_counts(joined), _difference_counts(paired, metrics),
                _worst(paired, keys, gate_metric, top),
                *value_count_queries(diffs, metrics, ("backend_id",)),
                *value_count_queries(scored_sides, sides, ("backend_id",)),
                *(quantiles.histogram(paired, column, ("backend_id",)) for column in latencies)]

    def sum_by_backend(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.group_by("backend_id").agg(pl.exclude("backend_id").sum())

    def merge_counts(frame: pl.DataFrame) -> pl.DataFrame:
        return merge_value_counts(frame, ("backend_id",))

    def merge_histograms(frame: pl.DataFrame) -> pl.DataFrame:
        return quantiles.merge_histograms(frame, ("backend_id",))

    def merge_worst(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.sort(["backend_id", "difference", *keys[1:]]).group_by("backend_id", maintain_order=True).head(top)

    merges: list[Merge] = [sum_by_backend, sum_by_backend, merge_worst, *([merge_counts] * (len(metrics) + len(sides))),
                           merge_histograms, merge_histograms]
    changes, counts, worst, *rest = _over(joins, run, queries, merges)
    diff_counts, side_counts = rest[:len(metrics)], rest[len(metrics):len(metrics) + len(sides)]
    located = {column: quantiles.locate(hist, ("backend_id",), (0.5,))
               for column, hist in zip(latencies, rest[-2:], strict=True)}
    medians = _medians(joins, run, located)
    return (_changes(changes, medians), _differences(counts, metrics, estimates_from(value_counts_from(
        diff_counts, ("backend_id",))), value_counts_from(side_counts, ("backend_id",))), worst)


def _over(joins: list[pl.LazyFrame], run: Run, queries: Callable[[pl.LazyFrame], list[pl.LazyFrame]],
          merges: Sequence[Merge]) -> list[pl.DataFrame]:
    """`queries` over each partition's join, each folded into the partitions before with its merge."""
    merged: list[pl.DataFrame] = []
    for joined in joins:
        found = collect_all(queries(collect(joined, run).lazy()), run)  # joined once, read by every query
        merged = found if not merged else [merge(pl.concat([so_far, frame], how="diagonal_relaxed"))
                                           for merge, so_far, frame in zip(merges, merged, found, strict=True)]
    return merged


def _medians(joins: list[pl.LazyFrame], run: Run, located: dict[str, quantiles.Located],
             ) -> dict[str, dict[tuple[object, ...], list[float | None]]]:
    """Each side's median latency over the pairs per backend, with a second pass only when one needs it."""
    pending = [column for column, where in located.items() if not where.pending.is_empty()]
    refined: dict[str, pl.DataFrame] = {}
    if pending:
        def queries(joined: pl.LazyFrame) -> list[pl.LazyFrame]:
            return [quantiles.refine(joined.filter(_BOTH), column, located[column]) for column in pending]

        def merge(column: str) -> Merge:
            return lambda frame: quantiles.merge_refined(frame, ("backend_id",), column)

        refined = dict(zip(pending, _over(joins, run, queries, [merge(column) for column in pending]), strict=True))
    return {column: quantiles.finish(where, column, refined.get(column)) for column, where in located.items()}


def _change_counts(joined: pl.LazyFrame) -> pl.LazyFrame:
    in_a, in_b = pl.col("_in_a").is_not_null(), pl.col("_in_a_b").is_not_null()
    return joined.group_by("backend_id").agg(
        _BOTH.sum().alias("pairs"),
        (in_a & ~in_b).sum().alias("only_in_a"),
        (in_b & ~in_a).sum().alias("only_in_b"),
        exact_units("cost_usd", _BOTH).alias("cost_a"),
        exact_units("cost_usd_b", _BOTH).alias("cost_b"))


def _changes(frame: pl.DataFrame, medians: dict[str, dict[tuple[object, ...], list[float | None]]],
             ) -> list[BackendChange]:
    def median(column: str, backend: str) -> float | None:
        return medians[column].get((backend,), [None])[0]

    return [BackendChange(r["backend_id"], r["pairs"], r["only_in_a"], r["only_in_b"],
                          (r["cost_a"] or 0) * EXACT_UNIT, (r["cost_b"] or 0) * EXACT_UNIT,
                          median("latency_s", r["backend_id"]), median("latency_s_b", r["backend_id"]))
            for r in frame.sort("backend_id").iter_rows(named=True)]


def _difference_counts(paired: pl.LazyFrame, metrics: list[str]) -> pl.LazyFrame:
    aggregates = []
    for m in metrics:
        scored = pl.col(m).is_not_null() & pl.col(f"{m}_b").is_not_null()
        diff = pl.col(f"{m}_b") - pl.col(m)
        aggregates += [scored.sum().alias(f"{m}:pairs"), (~scored).sum().alias(f"{m}:unscored"),
                       (diff > _TIE).sum().alias(f"{m}:wins"), (diff < -_TIE).sum().alias(f"{m}:losses")]
    return paired.group_by("backend_id").agg(aggregates)


def _differences(frame: pl.DataFrame, metrics: list[str], estimates: dict[tuple[object, ...], Estimate],
                 counts: dict[tuple[object, ...], tuple[FloatArray, IntArray]]) -> list[MetricDifference]:
    # Each side's mean over the scored pairs, from value counts: exact, so the report is the same every run.
    found = []
    for r in frame.sort("backend_id").iter_rows(named=True):
        backend = r["backend_id"]
        for m in metrics:
            pairs, wins, losses = r[f"{m}:pairs"], r[f"{m}:wins"], r[f"{m}:losses"]
            estimate = estimates.get((backend, m)) or Estimate(math.nan, math.nan, math.nan, 0, "none")
            found.append(MetricDifference(backend, m, pairs, r[f"{m}:unscored"], _mean(counts.get((backend, m))),
                                          _mean(counts.get((backend, f"{m}_b"))), estimate, wins,
                                          pairs - wins - losses, losses))
    return found


def _worst(paired: pl.LazyFrame, keys: list[str], metric: str, top: int) -> pl.LazyFrame:
    """The `top` pairs per backend with the largest loss on `metric`."""
    diff = (pl.col(f"{metric}_b") - pl.col(metric)).alias("difference")
    return (paired.select(*keys, pl.col(metric).alias("score_a"), pl.col(f"{metric}_b").alias("score_b"), diff)
            .filter(pl.col("difference") < -_TIE)
            .sort(["backend_id", "difference", *keys[1:]])
            .group_by("backend_id", maintain_order=True).head(top))


def _top_regressions(worst: pl.DataFrame, keys: list[str], run_a: Run, run_b: Run, mapping: Mapping[str, str],
                     pair_on: PairOn) -> dict[str, list[Regression]]:
    """The worst pairs per backend with the prompt and both answers."""
    if worst.is_empty():
        return {}
    worst = worst.sort(["backend_id", "difference", *keys[1:]])
    texts_a = _texts(run_a, worst.select(keys), keys, {}, pair_on)
    texts_b = _texts(run_b, worst.select(keys), keys, mapping, pair_on)
    table = (worst.join(texts_a, on=keys, how="left", nulls_equal=True)
             .join(texts_b.rename({"response": "response_b"}).drop("prompt"), on=keys, how="left", nulls_equal=True))
    found: dict[str, list[Regression]] = {}
    for r in table.iter_rows(named=True):
        found.setdefault(r["backend_id"], []).append(Regression(
            r["backend_id"], {k: r[k] for k in keys[1:]}, r["score_a"], r["score_b"], r["difference"], r["prompt"],
            r["response"], r["response_b"]))
    return found


def _texts(run: Run, wanted: pl.DataFrame, keys: list[str], mapping: Mapping[str, str],
           pair_on: PairOn) -> pl.DataFrame:
    frame = run.scan([*keys, "prompt", "response", "repeat", "task_index"])
    if mapping:
        frame = frame.with_columns(pl.col("backend_id").replace(dict(mapping)))
    frame = frame.join(wanted.lazy(), on=keys, how="semi", nulls_equal=True)
    if pair_on == "item":  # one representative answer per item: its first task
        frame = frame.sort("task_index").group_by(keys, maintain_order=True).first()
    return collect(frame.select(*keys, "prompt", "response"), run)


def _mean(counts: tuple[FloatArray, IntArray] | None) -> float:
    if counts is None or not counts[1].sum():
        return math.nan
    values, weights = counts
    return float(np.dot(values, weights) / weights.sum())
