"""`evalpipe summary`: per backend and parameter set, how good, how reliable, how fast and how costly.

Queries over the projected score and timing columns (never prompts or answers), run one Parquet part at
a time on polars' streaming engine, each an aggregation it streams: one pass of sums and counts, the
error classes, per item the sum and count of each score column (all a cluster bootstrap needs, see
`stats.clustered_means`: the repeats and turns of one item are not independent draws), and the latency
histograms from which `quantiles` finds exact quantiles, with a short second pass over a few buckets.
Memory therefore follows items × groups and latency buckets, not the number of rows.

What the numbers are over, so that none flatters a run:
- a score's mean is over the rows that have the score (scored rows), shown as "scored of rows";
- the pass rate is over every attempted row (all but skipped ones): an error row is not a pass. It is
  shown only when the run's rows carry verdicts (`passed` non-null somewhere), else "—";
- cost is generation plus scoring (judges, scorer calls), each also given on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from evalpipe.analysis import quantiles
from evalpipe.analysis.best_of_counts import count_best_of
from evalpipe.analysis.runs import Merge, Run, collect_per_part
from evalpipe.analysis.stats import Estimate, FloatArray, IntArray, clustered_means, mean_ci

GROUP_KEYS = ("backend_id", "param_set")
ITEM_KEY = "item_id"
PASSED = "passed"  # the pass rate's column among the per-item sums: 1 per pass, over attempted rows
_OK = pl.col("status") == "ok"
_NO_ESTIMATE = Estimate(math.nan, math.nan, math.nan, 0, "none", 0)


@dataclass(frozen=True, slots=True)
class GroupSummary:
    """The numbers of one backend with one parameter set."""

    backend_id: str
    param_set: str
    model: str | None
    temperature: float | None
    top_p: float | None
    rows: int
    ok: int
    errors: int
    skipped: int
    errors_by_type: dict[str, int]
    items: int  # distinct items (clusters of repeats and turns)
    scores: dict[str, Estimate]  # score column -> mean over the rows that have the score, interval over items
    pass_rate: Estimate | None  # passes over attempted rows (errors count as fails); None: the run has no verdicts
    latency_p50_s: float | None
    latency_p95_s: float | None
    ttft_p50_s: float | None
    input_tokens: int
    output_tokens: int
    generation_cost_usd: float
    scoring_cost_usd: float
    best_of_wins: int | None = None  # only when the best-of table names parameter sets
    best_of_ties: int | None = None  # contests whose top total this group shared with others
    # Of the input: read from / written to the vendor's prompt cache; of the output: reasoning.
    token_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def attempted(self) -> int:
        """Rows that should have an answer and a verdict: all but the skipped ones."""
        return self.rows - self.skipped

    @property
    def cost_usd(self) -> float:
        """Everything the group cost: generation plus scoring."""
        return self.generation_cost_usd + self.scoring_cost_usd

    @property
    def repeats(self) -> float:
        """Rows per item."""
        return self.rows / self.items if self.items else 0.0

    @property
    def error_rate(self) -> float:
        """Errors over all rows (skipped rows were never attempted but count as rows)."""
        return self.errors / self.rows if self.rows else 0.0


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Every group of a run, in job order, with what the run's output lacks."""

    run_name: str
    run_path: str
    state: str
    warnings: tuple[str, ...]
    metrics: list[str]
    groups: list[GroupSummary]
    # Best-of wins and ties per backend when the best-of table has no parameter set column; else in the groups.
    best_of_wins_by_backend: dict[str, int] = field(default_factory=dict)
    best_of_ties_by_backend: dict[str, int] = field(default_factory=dict)
    best_of_contests: int = 0
    best_of_tied_contests: int = 0

    @property
    def partial(self) -> bool:
        """Whether rows are (or may be) missing."""
        return bool(self.warnings)


LATENCY_QUANTILES = {"latency_s": (0.5, 0.95), "ttft_s": (0.5,)}
COST_COLUMNS = ("cost_usd", "scoring_cost_usd")  # generation, then scorers and judges (absent in older runs)
TOKEN_KINDS = ("cached_input_tokens", "cache_write_input_tokens", "reasoning_tokens")  # absent in older runs


def summarize(run: Run) -> RunSummary:
    """The summary of `run`."""
    metrics = run.metrics
    costs = [column for column in COST_COLUMNS if run.has(column)]
    kinds = [column for column in TOKEN_KINDS if run.has(column)]
    columns = [*GROUP_KEYS, ITEM_KEY, "task_index", "model", "temperature", "top_p", "status", "error_type", "passed",
               "latency_s", "ttft_s", "input_tokens", "output_tokens", *kinds, *costs, *metrics]
    timed = [column for column in LATENCY_QUANTILES if run.has(column)]

    def queries(part: pl.LazyFrame) -> list[pl.LazyFrame]:
        return [part.group_by(GROUP_KEYS).agg(_aggregates(costs, kinds)),
                part.filter(pl.col("status") == "error")
                .group_by([*GROUP_KEYS, pl.col("error_type").fill_null("unknown")]).len(),
                item_sum_query(part, [*metrics, PASSED], GROUP_KEYS),
                *(quantiles.histogram(part.filter(_OK), column, GROUP_KEYS) for column in timed)]

    def merge_histogram(frame: pl.DataFrame) -> pl.DataFrame:
        return quantiles.merge_histograms(frame, GROUP_KEYS)

    def merge_items(frame: pl.DataFrame) -> pl.DataFrame:
        return merge_item_sums(frame, GROUP_KEYS)

    totals, errors_frame, item_sums, *histograms = collect_per_part(
        run, columns, queries, [_merge_totals, _merge_errors, merge_items, *([merge_histogram] * len(timed))])
    timing = _quantiles(run, columns, dict(zip(timed, histograms, strict=True)))
    errors = _errors_by_type(errors_frame)
    totals = _finish_totals(totals)
    with_verdicts = int(totals["verdicts"].sum()) > 0  # else no criterion has a threshold: no pass rate at all
    estimates = clustered_estimates(item_sums, [*metrics, PASSED], GROUP_KEYS)
    best_of = count_best_of(run)
    groups = []
    for record in totals.iter_rows(named=True):
        key = (record["backend_id"], record["param_set"])
        latency = timing.get("latency_s", {}).get(key, [None, None])
        ttft = timing.get("ttft_s", {}).get(key, [None])
        found, items = estimates.get(key, ({}, 0))
        groups.append(GroupSummary(
            backend_id=key[0] or "", param_set=key[1] or "", model=record["model"],
            temperature=record["temperature"], top_p=record["top_p"], rows=record["rows"], ok=record["ok"],
            errors=record["errors"], skipped=record["skipped"], errors_by_type=errors.get(key, {}), items=items,
            scores={metric: found.get(metric, _NO_ESTIMATE) for metric in metrics},
            pass_rate=found.get(PASSED, _NO_ESTIMATE) if with_verdicts else None,
            latency_p50_s=latency[0], latency_p95_s=latency[1], ttft_p50_s=ttft[0],
            input_tokens=record["input_tokens"] or 0, output_tokens=record["output_tokens"] or 0,
            generation_cost_usd=record["cost_usd"] or 0.0, scoring_cost_usd=record["scoring_cost_usd"] or 0.0,
            best_of_wins=None if best_of.wins is None else best_of.wins.get(key, 0),
            best_of_ties=None if best_of.ties is None else best_of.ties.get(key, 0),
            token_kinds={kind: record[kind] or 0 for kind in kinds}))
    state = run.manifest.state if run.manifest is not None else "unknown"
    return RunSummary(run.name, str(run.path), state, run.warnings, metrics, groups, best_of.wins_by_backend,
                      best_of.ties_by_backend, best_of.contests, best_of.tied_contests)


def _quantiles(run: Run, columns: list[str], histograms: dict[str, pl.DataFrame],
               ) -> dict[str, dict[tuple[Any, ...], list[float | None]]]:
    """The latency quantiles per group from the per-part histograms, with a pass 2 when one needs it."""
    located = {column: quantiles.locate(quantiles.merge_histograms(hist, GROUP_KEYS), GROUP_KEYS,
                                        LATENCY_QUANTILES[column]) for column, hist in histograms.items()}
    pending = [column for column, where in located.items() if not where.pending.is_empty()]
    refined: dict[str, pl.DataFrame] = {}
    if pending:
        def queries(part: pl.LazyFrame) -> list[pl.LazyFrame]:
            return [quantiles.refine(part.filter(_OK), column, located[column]) for column in pending]

        def merge(column: str) -> Merge:
            return lambda frame: quantiles.merge_refined(frame, GROUP_KEYS, column)

        found = collect_per_part(run, columns, queries, [merge(column) for column in pending])
        refined = dict(zip(pending, found, strict=True))
    return {column: quantiles.finish(where, column, refined.get(column)) for column, where in located.items()}


def _aggregates(costs: list[str], kinds: list[str]) -> list[pl.Expr]:
    """Per group of one part, aggregations that polars streams (no `filter` inside them, which would gather
    each group's rows) and that merge across parts (`_merge_totals`)."""
    return [
        pl.col("task_index").min().alias("first_task"),
        pl.len().alias("rows"),
        _OK.sum().alias("ok"),
        (pl.col("status") == "error").sum().alias("errors"),
        (pl.col("status") == "skipped").sum().alias("skipped"),
        pl.col("model").drop_nulls().first().alias("model"),
        pl.col("temperature").drop_nulls().first().alias("temperature"),
        pl.col("top_p").drop_nulls().first().alias("top_p"),
        pl.when(_OK).then(pl.col("passed")).count().alias("verdicts"),
        pl.col("input_tokens").sum(),
        pl.col("output_tokens").sum(),
        *(pl.col(kind).sum() for kind in kinds),
        *(exact_units(column) for column in costs),
    ]


def _merge_totals(totals: pl.DataFrame) -> pl.DataFrame:
    """`_aggregates` of consecutive parts, stacked in part order, as one row per group."""
    sums = [name for name in ("rows", "ok", "errors", "skipped", "verdicts", "input_tokens", "output_tokens",
                              *TOKEN_KINDS, *COST_COLUMNS) if name in totals.columns]
    return totals.group_by(GROUP_KEYS, maintain_order=True).agg(
        pl.col("first_task").min(), *(pl.col(name).drop_nulls().first() for name in ("model", "temperature", "top_p")),
        *(pl.col(name).sum() for name in sums))


def _finish_totals(totals: pl.DataFrame) -> pl.DataFrame:
    """The merged totals with costs in dollars (0 for a cost column the run lacks), in job task order."""
    return totals.with_columns(
        *((pl.col(name) * EXACT_UNIT).alias(name) if name in totals.columns else pl.lit(0.0).alias(name)
          for name in COST_COLUMNS)).sort("first_task")


def _merge_errors(errors: pl.DataFrame) -> pl.DataFrame:
    return errors.group_by([*GROUP_KEYS, "error_type"]).agg(pl.col("len").sum())


def _errors_by_type(frame: pl.DataFrame) -> dict[tuple[str, str], dict[str, int]]:
    found: dict[tuple[str, str], dict[str, int]] = {}
    for record in frame.sort("len", descending=True).iter_rows(named=True):
        found.setdefault((record["backend_id"], record["param_set"]), {})[record["error_type"]] = record["len"]
    return found


def item_sum_query(frame: pl.LazyFrame, metrics: list[str], keys: tuple[str, ...]) -> pl.LazyFrame:
    """Per group of `keys` and item, each metric's sum (in exact units, `exact_units`) and count of finite
    values: `<metric>:sum`, `<metric>:n`. The metric `PASSED` counts passes over the rows with a verdict
and the errors.

    Rows without an item id (only hand-made tables lack one) form one item together."""
    def value(metric: str) -> pl.Expr:
        if metric == PASSED:
            # An error is a fail; an answer the criteria gave no verdict (`when:` left none) is not counted.
            return (pl.when(pl.col("status") == "error").then(0.0)
                    .when(_OK & pl.col("passed").is_not_null()).then(pl.col("passed").cast(pl.Float64)))
        return pl.when(pl.col(metric).is_finite()).then(pl.col(metric))

    # Units first, plain sums and counts after: polars aggregates bare columns fastest.
    units = frame.select(*keys, ITEM_KEY, *((value(m) / EXACT_UNIT).round().cast(pl.Int64).alias(m) for m in metrics))
    return units.group_by([*keys, ITEM_KEY]).agg(*(pl.col(m).sum().alias(f"{m}:sum") for m in metrics),
                                                 *(pl.col(m).count().cast(pl.UInt32).alias(f"{m}:n") for m in metrics))


_MERGED = "_merged"  # marks item sums already added up; parts' new rows have null there


def merge_item_sums(frame: pl.DataFrame, keys: tuple[str, ...]) -> pl.DataFrame:
    """Per-part item sums (`item_sum_query`) stacked under those of the parts before, added up once the rows
    not yet added are as many as those that are: amortised linear time, and at most twice the run's item
    sums in memory. `finish_item_sums` adds up what is left."""
    pending = frame[_MERGED].null_count() if _MERGED in frame.columns else frame.height
    return frame if pending < frame.height - pending else finish_item_sums(frame, keys)


def finish_item_sums(frame: pl.DataFrame, keys: tuple[str, ...]) -> pl.DataFrame:
    """One row per group and item with its sums and counts over the whole run."""
    if _MERGED in frame.columns and frame[_MERGED].null_count() == 0:
        return frame
    # The streaming engine adds up with about two thirds of the memory the in-memory one takes.
    return (frame.lazy().group_by([*keys, ITEM_KEY]).agg(pl.exclude([*keys, ITEM_KEY, _MERGED]).sum())
            .with_columns(pl.lit(True).alias(_MERGED)).collect(engine="streaming"))


def clustered_estimates(item_sums: pl.DataFrame, metrics: list[str], keys: tuple[str, ...],
                        ) -> dict[tuple[Any, ...], tuple[dict[str, Estimate], int]]:
    """Per group of `keys`, each metric's mean with its interval over items (one `clustered_means` call, so one
    set of resamples for all its metrics, seeded from the group's key), and the group's number of items.

    Items are sorted by id first: the resamples do not depend on the order parts were read in."""
    found: dict[tuple[Any, ...], tuple[dict[str, Estimate], int]] = {}
    for key, group in finish_item_sums(item_sums, keys).partition_by(list(keys), as_dict=True).items():
        group = group.sort(ITEM_KEY)
        sums = group.select(f"{metric}:sum" for metric in metrics).to_numpy().astype(np.float64) * EXACT_UNIT
        counts = group.select(f"{metric}:n" for metric in metrics).to_numpy().astype(np.float64)
        # Every score and the pass rate lie in [0, 1].
        found[key] = (clustered_means(sums, counts, metrics, key="|".join(str(part) for part in key),
                                      proportions=metrics), group.height)
    return found


def value_count_queries(frame: pl.LazyFrame, metrics: list[str], keys: tuple[str, ...]) -> list[pl.LazyFrame]:
    """One query per metric column: its finite values per group of `keys`, with their counts.

    Separate group-bys rather than one over an unpivoted frame: polars streams these, and each holds only
    its column's distinct values per group."""
    return [frame.select(*keys, pl.col(metric).alias("value")).filter(pl.col("value").is_finite())
            .group_by([*keys, "value"]).len().with_columns(pl.lit(metric).alias("metric"))
            for metric in metrics]


def value_counts_from(frames: list[pl.DataFrame], keys: tuple[str, ...],
                      ) -> dict[tuple[Any, ...], tuple[FloatArray, IntArray]]:
    """`value_count_queries`' (merged) results keyed by (*group key values, metric), each group's values sorted."""
    found: dict[tuple[Any, ...], tuple[FloatArray, IntArray]] = {}
    for counts in frames:
        for key, group in counts.sort([*keys, "value"]).group_by([*keys, "metric"], maintain_order=True):
            found[key] = (group["value"].to_numpy(), group["len"].to_numpy().astype(np.int64))
    return dict(sorted(found.items(), key=lambda item: tuple(str(part) for part in item[0])))


def estimates_from(counts: dict[tuple[Any, ...], tuple[FloatArray, IntArray]]) -> dict[tuple[Any, ...], Estimate]:
    """Mean and bootstrap interval of each value-count entry; the seed comes from its key, so it does not
    depend on which other groups or runs are in the query."""
    return {key: mean_ci(values, counts, key="|".join(str(part) for part in key))
            for key, (values, counts) in counts.items()}


EXACT_UNIT = 1e-9


def exact_units(column: str, where: pl.Expr | None = None, unit: float = EXACT_UNIT) -> pl.Expr:
    """The sum of a float column (over rows where `where` holds) as a whole number of `unit`s: integer
    addition, so the same on every run, and partial sums add up exactly."""
    values = pl.col(column) if where is None else pl.when(where).then(pl.col(column))
    return (values / unit).round().cast(pl.Int64).sum().alias(column)


def exact_sum(column: str, where: pl.Expr | None = None, unit: float = EXACT_UNIT) -> pl.Expr:
    """The sum of a float column (over rows where `where` holds) in whole `unit`s: integer addition, so the
    same on every run, unlike a parallel float sum (its last digits follow the order chunks arrive in)."""
    return (exact_units(column, where, unit) * unit).alias(column)


def merge_value_counts(frame: pl.DataFrame, keys: tuple[str, ...]) -> pl.DataFrame:
    """Per-part value counts (`value_count_queries`) summed into the counts of the whole run."""
    return frame.group_by([*keys, "metric", "value"]).agg(pl.col("len").sum())


