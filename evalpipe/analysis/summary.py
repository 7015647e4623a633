"""`evalpipe summary`: per backend and parameter set, how good, how reliable, how fast and how costly.

Queries over the projected score and timing columns (never prompts or answers), run together on polars'
streaming engine, each an aggregation it streams: one pass of sums and counts, the error classes, the
value counts of each score column (all a bootstrap interval needs, see `stats`), and the latency
histograms from which `quantiles` finds exact quantiles, with a short second pass over a few buckets.
Memory therefore follows the number of groups, distinct scores and latency buckets, not the number of
rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from evalpipe.analysis import quantiles
from evalpipe.analysis.runs import Merge, Run, collect, collect_per_part
from evalpipe.analysis.stats import Estimate, FloatArray, IntArray, mean_ci

GROUP_KEYS = ("backend_id", "param_set")
_OK = pl.col("status") == "ok"


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
    scores: dict[str, Estimate]  # score column -> mean with its interval, over the rows that have the score
    pass_rate: float | None  # over ok rows with a verdict
    latency_p50_s: float | None
    latency_p95_s: float | None
    ttft_p50_s: float | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    best_of_wins: int | None = None  # only when the best-of table names parameter sets

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
    # Best-of wins per backend when the best-of table has no parameter set column; else in the groups.
    best_of_wins_by_backend: dict[str, int] = field(default_factory=dict)
    best_of_contests: int = 0

    @property
    def partial(self) -> bool:
        """Whether rows are (or may be) missing."""
        return bool(self.warnings)


LATENCY_QUANTILES = {"latency_s": (0.5, 0.95), "ttft_s": (0.5,)}


def summarize(run: Run) -> RunSummary:
    """The summary of `run`."""
    metrics = run.metrics
    columns = [*GROUP_KEYS, "task_index", "model", "temperature", "top_p", "status", "error_type", "passed",
               "latency_s", "ttft_s", "input_tokens", "output_tokens", "cost_usd", *metrics]
    timed = [column for column in LATENCY_QUANTILES if run.has(column)]

    def queries(part: pl.LazyFrame) -> list[pl.LazyFrame]:
        return [part.group_by(GROUP_KEYS).agg(_aggregates()),
                part.filter(pl.col("status") == "error")
                .group_by([*GROUP_KEYS, pl.col("error_type").fill_null("unknown")]).len(),
                *(quantiles.histogram(part.filter(_OK), column, GROUP_KEYS) for column in timed),
                *value_count_queries(part, metrics, GROUP_KEYS)]

    def merge_histogram(frame: pl.DataFrame) -> pl.DataFrame:
        return quantiles.merge_histograms(frame, GROUP_KEYS)

    def merge_counts(frame: pl.DataFrame) -> pl.DataFrame:
        return merge_value_counts(frame, GROUP_KEYS)

    totals, errors_frame, *rest = collect_per_part(run, columns, queries, [
        _merge_totals, _merge_errors, *([merge_histogram] * len(timed)), *([merge_counts] * len(metrics))])
    histograms, counts = rest[:len(timed)], rest[len(timed):]
    timing = _quantiles(run, columns, dict(zip(timed, histograms, strict=True)))
    errors = _errors_by_type(errors_frame)
    estimates = estimates_from(value_counts_from(counts, GROUP_KEYS))
    wins, wins_by_backend, contests = _best_of_wins(run)
    groups = []
    for record in _finish_totals(totals).iter_rows(named=True):
        key = (record["backend_id"], record["param_set"])
        latency = timing.get("latency_s", {}).get(key, [None, None])
        ttft = timing.get("ttft_s", {}).get(key, [None])
        groups.append(GroupSummary(
            backend_id=key[0] or "", param_set=key[1] or "", model=record["model"],
            temperature=record["temperature"], top_p=record["top_p"], rows=record["rows"], ok=record["ok"],
            errors=record["errors"], skipped=record["skipped"], errors_by_type=errors.get(key, {}),
            scores={metric: estimates[(*key, metric)] if (*key, metric) in estimates else mean_ci([], key="")
                    for metric in metrics},
            pass_rate=record["pass_rate"], latency_p50_s=latency[0], latency_p95_s=latency[1],
            ttft_p50_s=ttft[0], input_tokens=record["input_tokens"] or 0,
            output_tokens=record["output_tokens"] or 0, cost_usd=record["cost_usd"] or 0.0,
            best_of_wins=None if wins is None else wins.get(key, 0)))
    state = run.manifest.state if run.manifest is not None else "unknown"
    return RunSummary(run.name, str(run.path), state, run.warnings, metrics, groups, wins_by_backend, contests)


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


def _aggregates() -> list[pl.Expr]:
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
        pl.when(_OK).then(pl.col("passed")).cast(pl.Int64).sum().alias("passed"),
        pl.when(_OK).then(pl.col("passed")).count().alias("verdicts"),
        pl.col("input_tokens").sum(),
        pl.col("output_tokens").sum(),
        exact_units("cost_usd"),
    ]


def _merge_totals(totals: pl.DataFrame) -> pl.DataFrame:
    """`_aggregates` of consecutive parts, stacked in part order, as one row per group."""
    return totals.group_by(GROUP_KEYS, maintain_order=True).agg(
        pl.col("first_task").min(), *(pl.col(name).drop_nulls().first() for name in ("model", "temperature", "top_p")),
        *(pl.col(name).sum() for name in ("rows", "ok", "errors", "skipped", "passed", "verdicts", "input_tokens",
                                          "output_tokens", "cost_usd")))


def _finish_totals(totals: pl.DataFrame) -> pl.DataFrame:
    """The merged totals with the pass rate and cost in dollars, in the order of the job's tasks."""
    pass_rate = pl.when(pl.col("verdicts") > 0).then(pl.col("passed") / pl.col("verdicts"))
    return totals.with_columns(pass_rate.alias("pass_rate"),
                               (pl.col("cost_usd") * EXACT_UNIT).alias("cost_usd")).sort("first_task")


def _merge_errors(errors: pl.DataFrame) -> pl.DataFrame:
    return errors.group_by([*GROUP_KEYS, "error_type"]).agg(pl.col("len").sum())


def _errors_by_type(frame: pl.DataFrame) -> dict[tuple[str, str], dict[str, int]]:
    found: dict[tuple[str, str], dict[str, int]] = {}
    for record in frame.sort("len", descending=True).iter_rows(named=True):
        found.setdefault((record["backend_id"], record["param_set"]), {})[record["error_type"]] = record["len"]
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


PARAM_SET_COLUMN = "winner_param_set"  # the best-of table's column (evalpipe.pipeline.best_of)


def _best_of_wins(run: Run) -> tuple[dict[tuple[str, str], int] | None, dict[str, int], int]:
    """Wins per (backend, parameter set) when the best-of table names parameter sets, else per backend;
    and the number of contests."""
    best_of = run.scan_best_of()
    if best_of is None:
        return None, {}, 0
    names = best_of.collect_schema().names()
    with_sets = PARAM_SET_COLUMN in names
    keys = ["winner_backend_id", PARAM_SET_COLUMN] if with_sets else ["winner_backend_id"]
    wins = collect(best_of.group_by(keys).len(), run)
    contests = int(wins["len"].sum())
    if with_sets:
        return ({(r["winner_backend_id"], r[PARAM_SET_COLUMN]): r["len"] for r in wins.iter_rows(named=True)}, {},
                contests)
    return None, {r["winner_backend_id"]: r["len"] for r in wins.iter_rows(named=True)}, contests
