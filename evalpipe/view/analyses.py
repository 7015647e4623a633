"""The analysis pages' contents: the summary, a comparison and a job's history, computed by
`evalpipe.analysis` and put in the shape the templates show (the same cells as the terminal tables)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from markupsafe import Markup

from evalpipe.analysis.catalog import run_path
from evalpipe.analysis.compare import Comparison, NotablePair, compare_sides, metric_column
from evalpipe.analysis.history import History, HistoryCache, build_history
from evalpipe.analysis.pairing import PairOn, Side, parse_condition
from evalpipe.analysis.report import trend_charts
from evalpipe.analysis.runs import Run, RunDirError, open_run
from evalpipe.analysis.summary import RunSummary, summarize
from evalpipe.analysis.tables import (
    comparison_tables,
    gate_message,
    summary_cells,
    summary_columns,
    summary_text,
)


@dataclass(frozen=True, slots=True)
class SummaryView:
    """The summary table of a run, as the terminal shows it."""

    summary: RunSummary
    columns: list[str]
    rows: list[list[str]]


def summary_view(run: Run) -> SummaryView:
    """`run`'s summary with its intervals (items resampled, with their repeats)."""
    summary = summarize(run)
    return SummaryView(summary, summary_columns(summary), [summary_cells(summary, g) for g in summary.groups])


def summary_json(run: Run) -> str:
    """`run`'s summary as `evalpipe summary --format json` gives it."""
    return summary_text(summarize(run), "json")


@dataclass(frozen=True, slots=True)
class CompareForm:
    """What the compare page was asked: two runs (`job/run_id`; B defaults to A) and each side's conditions."""

    a: str
    b: str
    conditions_a: tuple[str, ...]
    conditions_b: tuple[str, ...]
    metric: str
    pair_on: PairOn

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> CompareForm:
        """The form from a query string (`ca` and `cb`: `COLUMN=VALUE`, several separated by `;`)."""
        def conditions(name: str) -> tuple[str, ...]:
            return tuple(text.strip() for text in params.get(name, "").split(";") if text.strip())

        pair_on: PairOn = "item" if params.get("pair_on") == "item" else "task"
        a = params.get("a", "").strip()
        return cls(a, params.get("b", "").strip() or a, conditions("ca"), conditions("cb"),
                   params.get("metric", "").strip() or "score_total", pair_on)


@dataclass(frozen=True, slots=True)
class ComparisonView:
    """A comparison and its tables."""

    comparison: Comparison
    tables: list[tuple[str, list[str], list[list[str]]]]  # differences, pairing
    regressions: list[NotablePair]
    improvements: list[NotablePair]
    gate: str | None


def _open(results: Path, reference: str) -> Run:
    job, _, run_id = reference.partition("/")
    if not run_id:
        raise RunDirError(f"{reference!r} does not name a run: expected JOB/RUN_ID")
    return open_run(run_path(results, job, run_id))


def compare_view(results: Path, form: CompareForm) -> ComparisonView:
    """B − A for `form`'s sides; RunDirError or ValueError naming what is wrong with the form."""
    run_a = _open(results, form.a)
    run_b = run_a if form.b == form.a else _open(results, form.b)
    if run_a is run_b and not (form.conditions_a and form.conditions_b):
        raise RunDirError("comparing a run with itself compares two selections of its rows: give both sides a "
                          "condition, such as backend_id=gpt-4.1 and backend_id=gpt-4.1-mini")
    side_a = Side(run_a, tuple(parse_condition(text) for text in form.conditions_a), "A")
    side_b = Side(run_b, tuple(parse_condition(text) for text in form.conditions_b), "B")
    comparison = compare_sides(side_a, side_b, pair_on=form.pair_on, gate_metric=metric_column(form.metric))
    return ComparisonView(comparison, comparison_tables(comparison)[:2],
                          [p for pairs in comparison.regressions.values() for p in pairs],
                          [p for pairs in comparison.improvements.values() for p in pairs], gate_message(comparison))


@dataclass(frozen=True, slots=True)
class HistoryView:
    """A job's history and its trend charts (SVG drawn by `analysis.svg`, its text escaped there)."""

    history: History
    charts: list[Markup]


def history_view(job_dir: Path, cache: HistoryCache | None = None) -> HistoryView:
    """The metrics of every run of the job in `job_dir`, in start order (runs in `cache` not read again)."""
    history = build_history(job_dir, cache=cache)
    latest = history.runs[-1].name if history.runs else None
    return HistoryView(history, trend_charts(history, latest))
