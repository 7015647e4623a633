"""`evalpipe compare`: is B better than A, by how much, and how sure are we?

A and B are two runs, or two selections of rows (`Side`: a run and conditions such as
`backend_id=gpt-4.1`) of one run or of two. `pairing` decides what pairs share: always the item, by
default also the repeat and the turn, and every backend or parameter set not chosen per side (results
are given per value of those: per backend and parameter set when two runs are compared as they are).
With `pair_on="item"` each side is first averaged per item. Differences are B − A, so a negative
difference is a regression.

Pairs of one item are not independent draws: repeats and turns share the item's difficulty. So each
interval resamples ITEMS with their pairs (`stats.clustered_means`, one call per group across all
metrics, seeded by the group), never pairs, and every difference says how many items and pairs per item
it rests on. The release gate (`threshold`) fails a group whose interval lies entirely below −threshold.

Rows without a partner, and pairs where either side has no score (an error row), are counted per group
and reported; they are never dropped silently. The most regressed and the most improved pairs on the
gate metric are shown with the prompt and both answers.

Memory: a join holds one side's keys in a hash table, so a million pairs would cost hundreds of MB at
once. Larger runs are therefore split by a hash of the item id into partitions of about
`PAIRS_PER_PARTITION` rows (each side's projected key, score, cost and latency columns spilled, one part
at a time, to a temporary directory), and each partition is joined on its own. A partition holds whole
items, so per-item sums (the cluster bootstrap's input: one small row per item and group) are final in
it; counts and cost are summed in whole units, latency histograms (`quantiles`) and the top pairs merge
exactly, and the result does not depend on the number of partitions.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from evalpipe.analysis import quantiles
from evalpipe.analysis.pairing import CLUSTER, Pairing, PairOn, Side, plan_pairing
from evalpipe.analysis.runs import Merge, Run, RunDirError, collect, collect_all
from evalpipe.analysis.stats import Estimate, clustered_means
from evalpipe.analysis.summary import EXACT_UNIT, exact_sum

__all__ = ["Comparison", "GroupChange", "MetricDifference", "NotablePair", "PairOn", "compare_runs",
           "compare_sides", "group_label", "metric_column"]

DEFAULT_GATE_METRIC = "score_total"
TOP_PAIRS = 5  # per group and direction: a run compared per backend and parameter set has many groups
# Rows per side joined at once; more rows are split by item. The join of two partitions of 100,000 rows of
# the benchmark's runs takes about 40 MB while it runs, of 50,000 rows about 23 MB.
PAIRS_PER_PARTITION = 50_000
ALL_PAIRS = "all pairs"  # the label of the one group when both dimensions are compared across
_TIE_UNITS = 1  # a difference of one EXACT_UNIT is float noise from averaging, not a win or a loss
_PARTITION_SEED = 20_240_611
_GROUP = "_group"
_BOTH = pl.col("_in_a").is_not_null() & pl.col("_in_a_b").is_not_null()
Join = Callable[[], pl.LazyFrame]  # one partition's join, built when it is read


def group_label(group: Mapping[str, str]) -> str:
    """`beta · cold` for {backend_id: beta, param_set: cold}; `all pairs` for no group columns."""
    return " · ".join(group.values()) if group else ALL_PAIRS


@dataclass(frozen=True, slots=True)
class MetricDifference:
    """How one metric moved from A to B over one group's scored pairs."""

    group: dict[str, str]  # what the pairs share besides the item: backend_id and/or param_set
    metric: str
    pairs: int  # pairs where both sides have the metric
    unscored: int  # pairs where either side lacks it (an error row, say)
    mean_a: float
    mean_b: float
    difference: Estimate  # of B − A; the interval resamples items (`difference.items`, `.repeats`)
    wins: int  # B better
    ties: int
    losses: int

    @property
    def label(self) -> str:
        """The group as text."""
        return group_label(self.group)


@dataclass(frozen=True, slots=True)
class GroupChange:
    """Pairing counts, cost and latency of one group from A to B (cost and latency over the pairs)."""

    group: dict[str, str]
    pairs: int
    items: int  # items with at least one pair
    unpaired_items: int  # items whose rows are all on one side
    only_in_a: int  # rows without a partner
    only_in_b: int
    cost_a_usd: float
    cost_b_usd: float
    latency_p50_a_s: float | None
    latency_p50_b_s: float | None

    @property
    def label(self) -> str:
        """The group as text."""
        return group_label(self.group)


@dataclass(frozen=True, slots=True)
class NotablePair:
    """One of the pairs that moved most on the gate metric, with the prompt and both answers."""

    group: dict[str, str]
    key: dict[str, object]  # the item, and the repeat and turn when pairs are tasks
    score_a: float
    score_b: float
    difference: float
    prompt: str | None
    response_a: str | None
    response_b: str | None

    @property
    def label(self) -> str:
        """The group as text."""
        return group_label(self.group)


@dataclass(frozen=True, slots=True)
class Comparison:
    """Everything `compare` found, and whether the release gate holds."""

    run_a: str  # the side's label: the run, with its conditions
    run_b: str
    warnings_a: tuple[str, ...]
    warnings_b: tuple[str, ...]
    pair_on: PairOn
    paired_on: str  # what pairs share and what was compared across, in words
    group_columns: tuple[str, ...]  # the columns results are split by (what `group` dicts hold)
    backend_map: dict[str, str]  # B's backend id -> A's, when they differ
    metrics: list[str]
    notes: list[str]
    differences: list[MetricDifference]
    changes: list[GroupChange]
    regressions: dict[str, list[NotablePair]]  # group label -> the most regressed pairs, worst first
    improvements: dict[str, list[NotablePair]]  # group label -> the most improved pairs, best first
    gate_metric: str
    threshold: float | None
    failed_groups: list[str] = field(default_factory=list)

    @property
    def gate_failed(self) -> bool:
        """Whether `--fail-on-regression` should fail the pipeline."""
        return self.threshold is not None and (bool(self.failed_groups) or not self.changes_with_pairs)

    @property
    def changes_with_pairs(self) -> list[GroupChange]:
        """The groups that have at least one pair."""
        return [change for change in self.changes if change.pairs]


def metric_column(name: str) -> str:
    """The score column a user means: `total` and `score_total` both name `score_total`."""
    return name if name.startswith("score_") else f"score_{name}"


def compare_runs(run_a: Run, run_b: Run, *, pair_on: PairOn = "task", gate_metric: str = DEFAULT_GATE_METRIC,
                 threshold: float | None = None, backend_map: Mapping[str, str] | None = None,
                 top: int = TOP_PAIRS) -> Comparison:
    """Compare all of `run_b` against all of `run_a`; `backend_map` pairs B's backend ids with A's."""
    return compare_sides(Side(run_a, flag="--a"), Side(run_b, flag="--b"), pair_on=pair_on,
                         gate_metric=gate_metric, threshold=threshold, backend_map=backend_map, top=top)


def compare_sides(side_a: Side, side_b: Side, *, pair_on: PairOn = "task", gate_metric: str = DEFAULT_GATE_METRIC,
                  threshold: float | None = None, backend_map: Mapping[str, str] | None = None,
                  top: int = TOP_PAIRS) -> Comparison:
    """Compare the rows of `side_b` against those of `side_a` (of one run or of two)."""
    run_a, run_b = side_a.run, side_b.run
    notes: list[str] = []
    metrics = [m for m in run_a.metrics if m in run_b.metrics]
    for run, other in ((run_a, run_b), (run_b, run_a)):
        lonely = [m for m in run.metrics if m not in other.metrics]
        if lonely:
            notes.append(f"only {run.name} has {', '.join(lonely)}; not compared")
    if gate_metric not in metrics:
        raise RunDirError(f"cannot compare on {gate_metric!r}: the runs share {', '.join(metrics)}")
    pairing = plan_pairing(side_a, side_b, pair_on, backend_map)
    notes += pairing.notes
    count = max(1, math.ceil(max(run_a.rows, run_b.rows) / PAIRS_PER_PARTITION))
    with _partitions(side_a, side_b, pairing, metrics, count) as joins:
        changes, differences, extremes = _fold(joins, run_a, pairing, metrics, gate_metric, top)
    worst, best = _with_texts(extremes, side_a, side_b, pairing)
    failed = [d.label for d in differences if d.metric == gate_metric and threshold is not None
              and d.difference.below(-threshold)]
    return Comparison(side_a.label, side_b.label, run_a.warnings, run_b.warnings, pair_on, pairing.description,
                      pairing.groups, pairing.backend_map, metrics, notes, differences, changes, worst, best,
                      gate_metric, threshold, failed)


@contextmanager
def _partitions(side_a: Side, side_b: Side, pairing: Pairing, metrics: list[str],
                count: int) -> Iterator[list[Join]]:
    """The full join of A's and B's sides, as `count` lazy joins over disjoint sets of items.

    Each join is built afresh when it is read: once collected, a scan keeps what it learnt of its files
    (their Parquet metadata, about 1.5 MB per partition here) for as long as it lives, so scans held for all
    partitions until the end would add up to tens of MB on a million-row run."""
    columns = [*pairing.keys, *metrics, "status", "cost_usd", "latency_s"]
    keys = pairing.keys
    label = (pl.concat_str([pl.col(g).cast(pl.String).fill_null("—") for g in pairing.groups], separator=" · ")
             if pairing.groups else pl.lit(ALL_PAIRS)).alias(_GROUP)

    def join(frame_a: pl.LazyFrame, frame_b: pl.LazyFrame) -> pl.LazyFrame:
        side_a_rows = _side(frame_a, pairing, metrics, {})
        side_b_rows = _side(frame_b, pairing, metrics, pairing.backend_map)
        return (side_a_rows.join(side_b_rows, on=keys, how="full", nulls_equal=True, suffix="_b", coalesce=True)
                .with_columns(label))

    if count == 1:
        yield [lambda: join(side_a.scan(columns), side_b.scan(columns))]
        return
    with tempfile.TemporaryDirectory(prefix="evalpipe-compare-") as temp:
        files_a, files_b = (_spill(side, columns, count, Path(temp) / name) for name, side in (("a", side_a),
                                                                                             ("b", side_b)))

        def scan(side: Side, paths: list[Path]) -> pl.LazyFrame:
            return pl.scan_parquet(paths) if paths else side.scan(columns).clear()

        def partition(k: int) -> Join:
            return lambda: join(scan(side_a, files_a[k]), scan(side_b, files_b[k]))

        yield [partition(k) for k in range(count)]


def _spill(side: Side, columns: list[str], count: int, directory: Path) -> list[list[Path]]:
    """`side`'s `columns` split by a hash of the item id into `count` partitions, written one part at a time:
    each partition's files."""
    directory.mkdir()
    files: list[list[Path]] = [[] for _ in range(count)]
    partition = (pl.col(CLUSTER).hash(_PARTITION_SEED) % count).alias("_partition")
    for number, part in enumerate(side.run.parts):
        frame = collect(side.scan(columns, [part]).with_columns(partition), side.run)
        for (k,), rows in frame.partition_by("_partition", as_dict=True, include_key=False).items():
            path = directory / f"{k}-{number:05d}.parquet"
            rows.write_parquet(path, compression="lz4")
            files[int(k)].append(path)
    return files


def _side(frame: pl.LazyFrame, pairing: Pairing, metrics: list[str], mapping: Mapping[str, str]) -> pl.LazyFrame:
    """One side of the join: the pairing keys, metrics, cost and latency (ok rows only for latency)."""
    keys = pairing.keys
    if mapping:
        frame = frame.with_columns(pl.col("backend_id").replace(dict(mapping)))
    frame = frame.with_columns(
        [pl.when(pl.col(m).is_finite()).then(pl.col(m)).alias(m) for m in metrics]
        + [pl.when(pl.col("status") == "ok").then(pl.col("latency_s")).alias("latency_s")])
    if pairing.pair_on == "item":
        # Rounded: the order of a group's rows varies between runs, and with it a float mean's last digits.
        frame = frame.group_by(keys).agg([pl.col(m).mean().round(12) for m in metrics]
                                         + [exact_sum("cost_usd"), pl.col("latency_s").mean().round(12)])
    return frame.select([*keys, *metrics, "cost_usd", "latency_s", pl.lit(True).alias("_in_a")])


def _units(column: str) -> pl.Expr:
    """A float column in whole `EXACT_UNIT`s: sums of these are integer additions, the same on every run."""
    return (pl.col(column) / EXACT_UNIT).round().cast(pl.Int64)


def _per_item(joined: pl.LazyFrame, groups: Sequence[str], metrics: list[str]) -> pl.LazyFrame:
    """Per group and item: pairs, unpaired rows, cost, and per metric the scored pairs, both sides' sums,
    the sum of differences (all in whole units) and the wins and losses."""
    in_a, in_b = pl.col("_in_a").is_not_null(), pl.col("_in_a_b").is_not_null()
    # Per-row integer columns first, then one plain sum of each: much faster than conditional aggregations.
    columns = [_BOTH.cast(pl.Int64).alias("pairs"), (in_a & ~in_b).cast(pl.Int64).alias("only_in_a"),
               (in_b & ~in_a).cast(pl.Int64).alias("only_in_b"),
               pl.when(_BOTH).then(_units("cost_usd")).otherwise(0).alias("cost_a"),
               pl.when(_BOTH).then(_units("cost_usd_b")).otherwise(0).alias("cost_b")]
    for m in metrics:
        scored = _BOTH & pl.col(m).is_not_null() & pl.col(f"{m}_b").is_not_null()
        difference = _units(f"{m}_b") - _units(m)
        columns += [scored.cast(pl.Int64).alias(f"{m}:n"),
                    pl.when(scored).then(_units(m)).otherwise(0).alias(f"{m}:a"),
                    pl.when(scored).then(_units(f"{m}_b")).otherwise(0).alias(f"{m}:b"),
                    pl.when(scored).then(difference).otherwise(0).alias(f"{m}:d"),
                    (scored & (difference > _TIE_UNITS)).cast(pl.Int64).alias(f"{m}:wins"),
                    (scored & (difference < -_TIE_UNITS)).cast(pl.Int64).alias(f"{m}:losses")]
    return joined.select(_GROUP, *groups, CLUSTER, *columns).group_by([_GROUP, *groups, CLUSTER]).agg(
        pl.all().sum())


def _extremes(paired: pl.LazyFrame, keys: list[str], metric: str, top: int, *, worst: bool) -> pl.LazyFrame:
    """The `top` pairs per group with the largest loss (`worst`) or gain on `metric`."""
    difference = (pl.col(f"{metric}_b") - pl.col(metric)).alias("difference")
    moved = pl.col("difference") < -_TIE_UNITS * EXACT_UNIT if worst else pl.col("difference") > _TIE_UNITS * EXACT_UNIT
    return _top(paired.select(_GROUP, *keys, pl.col(metric).alias("score_a"), pl.col(f"{metric}_b").alias("score_b"),
                              difference).filter(moved), keys, top, worst=worst)


def _top(frame: pl.LazyFrame, keys: list[str], top: int, *, worst: bool) -> pl.LazyFrame:
    return (frame.sort([_GROUP, "difference", *keys], descending=[False, not worst, *([False] * len(keys))],
                       nulls_last=True)
            .group_by(_GROUP, maintain_order=True).head(top))


def _fold(joins: list[Join], run: Run, pairing: Pairing, metrics: list[str], gate_metric: str, top: int,
          ) -> tuple[list[GroupChange], list[MetricDifference], tuple[pl.DataFrame, pl.DataFrame]]:
    """Pairing counts, clustered differences and the extreme pairs, each partition's results merged."""
    keys, groups = pairing.keys, pairing.groups
    latencies = ("latency_s", "latency_s_b")
    item_columns = [_GROUP, CLUSTER, *(f"{m}:{part}" for m in metrics for part in ("n", "d"))]

    def queries(joined: pl.LazyFrame) -> list[pl.LazyFrame]:
        paired = joined.filter(_BOTH)
        return [_per_item(joined, groups, metrics), _extremes(paired, keys, gate_metric, top, worst=True),
                _extremes(paired, keys, gate_metric, top, worst=False),
                *(quantiles.histogram(paired, column, (_GROUP,)) for column in latencies)]

    def split(found: list[pl.DataFrame]) -> list[pl.DataFrame]:
        """A partition's per-item rows as its group totals and the items' cluster sums (all that is kept)."""
        items, *rest = found
        totals = items.group_by(_GROUP, *groups).agg(
            pl.exclude(CLUSTER).sum(), (pl.col("pairs") > 0).sum().alias("items"),
            (pl.col("pairs") == 0).sum().alias("unpaired_items"))
        scored = pl.any_horizontal([pl.col(f"{m}:n") > 0 for m in metrics])
        return [totals, items.filter(scored).select(item_columns), *rest]

    def sum_totals(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.group_by(_GROUP, *groups).agg(pl.all().sum())

    def stack(frame: pl.DataFrame) -> pl.DataFrame:  # partitions hold disjoint items
        return frame

    def merge_top(worst: bool) -> Merge:
        return lambda frame: _top(frame.lazy(), keys, top, worst=worst).collect()

    def merge_histograms(frame: pl.DataFrame) -> pl.DataFrame:
        return quantiles.merge_histograms(frame, (_GROUP,))

    merges: list[Merge] = [sum_totals, stack, merge_top(True), merge_top(False), merge_histograms, merge_histograms]
    totals, items, worst, best, *histograms = _over(joins, run, queries, merges, split)
    # Split by group, and dropped: each group's items are then sorted on their own, the stack never copied whole.
    by_group = {label: frame for (label,), frame in items.partition_by(_GROUP, as_dict=True).items()}
    del items
    located = {column: quantiles.locate(hist, (_GROUP,), (0.5,))
               for column, hist in zip(latencies, histograms, strict=True)}
    medians = _medians(joins, run, located)
    totals = totals.sort(_GROUP)
    changes = _changes(totals, groups, medians)
    return changes, _differences(totals, by_group, groups, metrics), (worst, best)


def _over(joins: list[Join], run: Run, queries: Callable[[pl.LazyFrame], list[pl.LazyFrame]],
          merges: Sequence[Merge],
          split: Callable[[list[pl.DataFrame]], list[pl.DataFrame]] | None = None) -> list[pl.DataFrame]:
    """`queries` over each partition's join (their results reshaped by `split`, when given), each folded
    into the partitions before with its merge."""
    merged: list[pl.DataFrame] = []
    for join in joins:
        found = collect_all(queries(collect(join(), run).lazy()), run)  # joined once, read by every query
        found = split(found) if split is not None else found
        merged = found if not merged else [merge(pl.concat([so_far, frame], how="diagonal_relaxed"))
                                           for merge, so_far, frame in zip(merges, merged, found, strict=True)]
    return merged


def _medians(joins: list[Join], run: Run, located: dict[str, quantiles.Located],
             ) -> dict[str, dict[tuple[object, ...], list[float | None]]]:
    """Each side's median latency over the pairs per group, with a second pass only when one needs it."""
    pending = [column for column, where in located.items() if not where.pending.is_empty()]
    refined: dict[str, pl.DataFrame] = {}
    if pending:
        def queries(joined: pl.LazyFrame) -> list[pl.LazyFrame]:
            return [quantiles.refine(joined.filter(_BOTH), column, located[column]) for column in pending]

        def merge(column: str) -> Merge:
            return lambda frame: quantiles.merge_refined(frame, (_GROUP,), column)

        refined = dict(zip(pending, _over(joins, run, queries, [merge(column) for column in pending]), strict=True))
    return {column: quantiles.finish(where, column, refined.get(column)) for column, where in located.items()}


def _group_of(record: Mapping[str, object], groups: Sequence[str]) -> dict[str, str]:
    return {g: "—" if record[g] is None else str(record[g]) for g in groups}


def _changes(totals: pl.DataFrame, groups: Sequence[str],
             medians: dict[str, dict[tuple[object, ...], list[float | None]]]) -> list[GroupChange]:
    def median(column: str, label: str) -> float | None:
        return medians[column].get((label,), [None])[0]

    return [GroupChange(_group_of(r, groups), r["pairs"], r["items"], r["unpaired_items"], r["only_in_a"],
                        r["only_in_b"], (r["cost_a"] or 0) * EXACT_UNIT, (r["cost_b"] or 0) * EXACT_UNIT,
                        median("latency_s", r[_GROUP]), median("latency_s_b", r[_GROUP]))
            for r in totals.iter_rows(named=True)]


def _differences(totals: pl.DataFrame, by_group: dict[str, pl.DataFrame], groups: Sequence[str],
                 metrics: list[str]) -> list[MetricDifference]:
    """Per group, one clustered bootstrap over its items (`by_group`: the group label's items, each dropped once
    used) for every metric (one set of item weights), items in id order."""
    found = []
    for r in totals.iter_rows(named=True):
        label = r[_GROUP]
        frame = by_group.pop(label, None)
        estimates: dict[str, Estimate] = {}
        if frame is not None:
            frame = frame.sort(CLUSTER)
            sums = frame.select([pl.col(f"{m}:d").cast(pl.Float64) * EXACT_UNIT for m in metrics]).to_numpy()
            counts = frame.select([pl.col(f"{m}:n").cast(pl.Float64) for m in metrics]).to_numpy()
            estimates = clustered_means(sums, counts, metrics, key=label)
        for m in metrics:
            pairs, wins, losses = r[f"{m}:n"], r[f"{m}:wins"], r[f"{m}:losses"]
            estimate = estimates.get(m) or Estimate(math.nan, math.nan, math.nan, 0, "none", 0)
            mean_a = r[f"{m}:a"] * EXACT_UNIT / pairs if pairs else math.nan
            mean_b = r[f"{m}:b"] * EXACT_UNIT / pairs if pairs else math.nan
            found.append(MetricDifference(_group_of(r, groups), m, pairs, r["pairs"] - pairs, mean_a, mean_b,
                                          estimate, wins, pairs - wins - losses, losses))
    return found


def _with_texts(extremes: tuple[pl.DataFrame, pl.DataFrame], side_a: Side, side_b: Side, pairing: Pairing,
                ) -> tuple[dict[str, list[NotablePair]], dict[str, list[NotablePair]]]:
    """The most regressed and the most improved pairs per group with the prompt and both answers, in the order
    found (the texts of both read in one pass over each side)."""
    keys = pairing.keys
    wanted = pl.concat([found.select(keys) for found in extremes])
    if wanted.is_empty():
        return {}, {}
    texts_a = _texts(side_a, wanted, pairing, {})
    texts_b = _texts(side_b, wanted, pairing, pairing.backend_map).rename({"response": "response_b"}).drop("prompt")
    worst, best = (_notable(found, texts_a, texts_b, pairing) for found in extremes)
    return worst, best


def _notable(extremes: pl.DataFrame, texts_a: pl.DataFrame, texts_b: pl.DataFrame,
             pairing: Pairing) -> dict[str, list[NotablePair]]:
    if extremes.is_empty():
        return {}
    keys = pairing.keys
    table = (extremes.with_row_index("_order")
             .join(texts_a, on=keys, how="left", nulls_equal=True)
             .join(texts_b, on=keys, how="left", nulls_equal=True)
             .sort("_order"))
    found: dict[str, list[NotablePair]] = {}
    for r in table.iter_rows(named=True):
        found.setdefault(r[_GROUP], []).append(NotablePair(
            _group_of(r, pairing.groups), {k: r[k] for k in (CLUSTER, *pairing.within_item)}, r["score_a"],
            r["score_b"], r["difference"], r["prompt"], r["response"], r["response_b"]))
    return found


def _texts(side: Side, wanted: pl.DataFrame, pairing: Pairing, mapping: Mapping[str, str]) -> pl.DataFrame:
    """The prompt and answer of the `wanted` pairs on `side`, read one part at a time: a scan of every part at
    once reads ahead in several parts' texts."""
    keys = pairing.keys
    found = []
    for part in side.run.parts:
        frame = side.scan([*keys, "prompt", "response", "task_index"], [part])
        if mapping:
            frame = frame.with_columns(pl.col("backend_id").replace(dict(mapping)))
        found.append(collect(frame.join(wanted.lazy(), on=keys, how="semi", nulls_equal=True), side.run))
    texts = pl.concat(found, how="vertical_relaxed").lazy()
    if pairing.pair_on == "item":  # one representative answer per item: its first task
        texts = texts.sort("task_index").group_by(keys, maintain_order=True).first()
    return texts.select(*keys, "prompt", "response").collect()
