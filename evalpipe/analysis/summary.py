"""`evalpipe summary`: per backend and parameter set, how good, how reliable, how fast and how costly.

Three lazy queries over the projected score and timing columns (never prompts or answers): one
aggregate pass, the error classes, and the value counts of each score column, which is all a bootstrap
interval needs (see `stats`). Memory therefore follows the number of groups and distinct scores, not
the number of rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from evalpipe.analysis.runs import Run, collect
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


def summarize(run: Run) -> RunSummary:
    """The summary of `run`."""
    metrics = run.metrics
    frame = run.scan([*GROUP_KEYS, "task_index", "model", "temperature", "top_p", "status", "error_type", "passed",
                      "latency_s", "ttft_s", "input_tokens", "output_tokens", "cost_usd", *metrics])
    totals = collect(frame.group_by(GROUP_KEYS).agg(_aggregates()).sort("first_task"), run)
    errors = _errors_by_type(collect(
        frame.filter(pl.col("status") == "error")
        .group_by([*GROUP_KEYS, pl.col("error_type").fill_null("unknown")]).len(), run))
    estimates = score_estimates(frame, metrics, GROUP_KEYS, run)
    wins, wins_by_backend, contests = _best_of_wins(run)
    groups = []
    for record in totals.iter_rows(named=True):
        key = (record["backend_id"], record["param_set"])
        groups.append(GroupSummary(
            backend_id=key[0] or "", param_set=key[1] or "", model=record["model"],
            temperature=record["temperature"], top_p=record["top_p"], rows=record["rows"], ok=record["ok"],
            errors=record["errors"], skipped=record["skipped"], errors_by_type=errors.get(key, {}),
            scores={metric: estimates[(*key, metric)] if (*key, metric) in estimates else mean_ci([], key="")
                    for metric in metrics},
            pass_rate=record["pass_rate"], latency_p50_s=record["latency_p50"], latency_p95_s=record["latency_p95"],
            ttft_p50_s=record["ttft_p50"], input_tokens=record["input_tokens"] or 0,
            output_tokens=record["output_tokens"] or 0, cost_usd=record["cost_usd"] or 0.0,
            best_of_wins=None if wins is None else wins.get(key, 0)))
    state = run.manifest.state if run.manifest is not None else "unknown"
    return RunSummary(run.name, str(run.path), state, run.warnings, metrics, groups, wins_by_backend, contests)


def _aggregates() -> list[pl.Expr]:
    def of_ok(column: str) -> pl.Expr:
        return pl.col(column).filter(_OK & pl.col(column).is_not_null())

    return [
        pl.col("task_index").min().alias("first_task"),
        pl.len().alias("rows"),
        _OK.sum().alias("ok"),
        (pl.col("status") == "error").sum().alias("errors"),
        (pl.col("status") == "skipped").sum().alias("skipped"),
        pl.col("model").drop_nulls().first().alias("model"),
        pl.col("temperature").drop_nulls().first().alias("temperature"),
        pl.col("top_p").drop_nulls().first().alias("top_p"),
        of_ok("passed").cast(pl.Float64).mean().alias("pass_rate"),
        of_ok("latency_s").quantile(0.5, "linear").alias("latency_p50"),
        of_ok("latency_s").quantile(0.95, "linear").alias("latency_p95"),
        of_ok("ttft_s").quantile(0.5, "linear").alias("ttft_p50"),
        pl.col("input_tokens").sum(),
        pl.col("output_tokens").sum(),
        exact_sum("cost_usd"),
    ]


def _errors_by_type(frame: pl.DataFrame) -> dict[tuple[str, str], dict[str, int]]:
    found: dict[tuple[str, str], dict[str, int]] = {}
    for record in frame.sort("len", descending=True).iter_rows(named=True):
        found.setdefault((record["backend_id"], record["param_set"]), {})[record["error_type"]] = record["len"]
    return found


def value_counts(frame: pl.LazyFrame, metrics: list[str], keys: tuple[str, ...], run: Run,
                 ) -> dict[tuple[Any, ...], tuple[FloatArray, IntArray]]:
    """The distinct finite values of each metric column per group of `keys`, sorted, with their counts.

    Keyed by (*group key values, metric). Sums over these are exact to the last digit on every run,
    which polars' parallel float sums are not."""
    counts = collect(
        frame.select([*keys, *metrics])
        .unpivot(on=metrics, index=list(keys), variable_name="metric", value_name="value")
        .filter(pl.col("value").is_finite())
        .group_by([*keys, "metric", "value"]).len()
        .sort([*keys, "metric", "value"]), run)
    return {key: (group["value"].to_numpy(), group["len"].to_numpy().astype(np.int64))
            for key, group in counts.group_by([*keys, "metric"], maintain_order=True)}


def score_estimates(frame: pl.LazyFrame, metrics: list[str], keys: tuple[str, ...], run: Run,
                    ) -> dict[tuple[Any, ...], Estimate]:
    """Mean and bootstrap interval of every metric column per group of `keys`, over the finite values.

    Keyed by (*group key values, metric); the interval's seed comes from the same key, so it does not
    depend on which other groups or runs are in the query."""
    return {key: mean_ci(values, counts, key="|".join(str(part) for part in key))
            for key, (values, counts) in value_counts(frame, metrics, keys, run).items()}


def exact_sum(column: str, where: pl.Expr | None = None, unit: float = 1e-9) -> pl.Expr:
    """The sum of a float column (over rows where `where` holds) in whole `unit`s: integer addition, so the
    same on every run, unlike a parallel float sum (its last digits follow the order chunks arrive in)."""
    values = pl.col(column) if where is None else pl.col(column).filter(where)
    return ((values / unit).round().cast(pl.Int64).sum() * unit).alias(column)


def _best_of_wins(run: Run) -> tuple[dict[tuple[str, str], int] | None, dict[str, int], int]:
    """Wins per (backend, parameter set) when the best-of table names parameter sets, else per backend;
    and the number of contests."""
    best_of = run.scan_best_of()
    if best_of is None:
        return None, {}, 0
    names = best_of.collect_schema().names()
    keys = ["winner_backend_id", "param_set"] if "param_set" in names else ["winner_backend_id"]
    wins = collect(best_of.group_by(keys).len(), run)
    contests = int(wins["len"].sum())
    if "param_set" in names:
        return {(r["winner_backend_id"], r["param_set"]): r["len"] for r in wins.iter_rows(named=True)}, {}, contests
    return None, {r["winner_backend_id"]: r["len"] for r in wins.iter_rows(named=True)}, contests
