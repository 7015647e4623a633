"""`evalpipe report`: one self-contained HTML file with the summary, charts, a comparison and every row.

Charts are inline SVG (see `svg`), the styles and the small filtering script are inline, and nothing
is fetched: the file opens the same offline, from an e-mail attachment or a CI artifact. Data goes into
the page only as escaped HTML (Jinja autoescaping), never into a script, so no answer can break it.
The per-item table holds at most `max_rows` rows (the first tasks in job order), and says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import polars as pl
from markupsafe import Markup

from evalpipe.analysis import svg
from evalpipe.analysis.compare import Comparison
from evalpipe.analysis.history import History
from evalpipe.analysis.runs import Run, collect
from evalpipe.analysis.summary import GroupSummary, RunSummary
from evalpipe.analysis.tables import (
    format_difference,
    format_metric,
    history_metric_label,
    metric_label,
    summary_cells,
    summary_columns,
    verdict,
)

MAX_ROWS = 2_000
HISTOGRAM_BINS = 10
TEMPLATE = "report.html.jinja"


@dataclass(frozen=True, slots=True)
class ItemRow:
    """One row of the per-item table, with its full texts for the details view."""

    cells: list[str]
    status: str
    backend_id: str
    prompt: str
    response: str
    details: list[tuple[str, str]]  # (label, text): explanations, error message


def write_report(run: Run, summary: RunSummary, output: str | Path, comparison: Comparison | None = None,
                 max_rows: int = MAX_ROWS, *, history: History | None = None) -> Path:
    """Render the report of `run` (and its comparison with another run, and its job's history) to `output`."""
    output = Path(output)
    html = render_report(run, summary, comparison, max_rows, history=history)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(html, encoding="utf-8")
    return output


def render_report(run: Run, summary: RunSummary, comparison: Comparison | None = None,
                  max_rows: int = MAX_ROWS, *, history: History | None = None) -> str:
    """The report as HTML text."""
    environment = jinja2.Environment(loader=jinja2.PackageLoader("evalpipe.analysis", "."),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    backends = list(dict.fromkeys(g.backend_id for g in summary.groups))
    item_columns, items = _item_rows(run, max_rows)
    return environment.get_template(TEMPLATE).render(
        summary=summary,
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        summary_columns=summary_columns(summary),
        summary_rows=[summary_cells(summary, g) for g in summary.groups],
        histograms=_histograms(run, backends),
        scatters=_scatters(summary, backends),
        heatmaps=_heatmaps(summary),
        comparison=comparison,
        comparison_chart=_comparison_chart(comparison) if comparison is not None else None,
        difference_rows=_difference_rows(comparison) if comparison is not None else [],
        history=history,
        history_labels=[f"{r.name}: {r.label}" for r in history.runs if r.label] if history is not None else [],
        trends=_trends(history, summary.run_name) if history is not None else [],
        backends=backends,
        item_columns=item_columns,
        items=items,
        total_rows=run.rows,
    )


def _histograms(run: Run, backends: list[str]) -> list[Markup]:
    """The distribution of the total score per backend, on shared bins."""
    frame = collect(run.scan(["backend_id", "score_total"]).filter(pl.col("score_total").is_finite()), run)
    if frame.is_empty():
        return []
    low, high = float(frame["score_total"].min()), float(frame["score_total"].max())  # type: ignore[arg-type]
    if high <= low:
        high = low + 1.0
    edges = [low + (high - low) * i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)]
    binned = frame.with_columns(
        ((pl.col("score_total") - low) / (high - low) * HISTOGRAM_BINS).floor().clip(0, HISTOGRAM_BINS - 1)
        .cast(pl.Int64).alias("bin")).group_by("backend_id", "bin").len()
    charts = []
    for index, backend in enumerate(backends):
        counts = [0] * HISTOGRAM_BINS
        for record in binned.filter(pl.col("backend_id") == backend).iter_rows(named=True):
            counts[record["bin"]] = record["len"]
        charts.append(Markup(svg.histogram(counts, edges, f"{backend}: total score", index)))
    return charts


def _scatters(summary: RunSummary, backends: list[str]) -> list[Markup]:
    """Mean total score against latency and against cost per row, one point per backend × parameter set."""
    def latency(g: GroupSummary) -> float | None:
        return g.latency_p50_s

    def cost_per_row(g: GroupSummary) -> float | None:
        return g.cost_usd / g.rows if g.rows else None

    charts = []
    for title, x_label, x_of in (("score vs latency", "latency p50 (s)", latency),
                                 ("score vs cost", "cost per row (USD)", cost_per_row)):
        points = []
        for g in summary.groups:
            x, estimate = x_of(g), g.scores["score_total"]
            if x is None or estimate.n == 0:
                continue
            points.append(svg.Point(x, estimate.mean, estimate.low, estimate.high, backends.index(g.backend_id),
                                    f"{g.backend_id} / {g.param_set}: {estimate.mean:.3f} at {x:.4g}"))
        if points:
            charts.append(Markup(svg.scatter(points, x_label, "mean total score (95% CI)", title, backends)))
    return charts


def _heatmaps(summary: RunSummary) -> list[Markup]:
    """Per backend, mean total score over temperature × top_p, when the run sweeps them."""
    charts = []
    for backend in dict.fromkeys(g.backend_id for g in summary.groups):
        cells = {(g.temperature, g.top_p): g.scores["score_total"].mean for g in summary.groups
                 if g.backend_id == backend and g.temperature is not None and g.top_p is not None}
        temperatures = sorted({t for t, _ in cells if t is not None})
        top_ps = sorted({p for _, p in cells if p is not None})
        if len(cells) < 2 or (len(temperatures) < 2 and len(top_ps) < 2):
            continue
        values = {(t, p): v for (t, p), v in cells.items() if t is not None and p is not None}
        charts.append(Markup(svg.heatmap(temperatures, top_ps, values, "temperature", "top_p",
                                         f"{backend}: mean total score")))
    return charts


def _comparison_chart(comparison: Comparison) -> Markup:
    intervals = [svg.Interval(f"{d.label} · {metric_label(d.metric)}", d.difference.mean, d.difference.low,
                              d.difference.high) for d in comparison.differences if d.difference.n]
    return Markup(svg.interval_chart(intervals, "B − A per group and metric (95% CI, items resampled)",
                                     comparison.threshold))


def _trends(history: History, current: str) -> list[Markup]:
    """Per group and metric, the estimate of every run with its interval, significant changes marked."""
    names = [run.name for run in history.runs]
    # Nightly runs are told apart by their day; runs sharing a day by their time too.
    days = [run.started_at[5:10] if run.started_at else run.name[:8] for run in history.runs]
    ticks = days if len(set(days)) == len(days) else [
        run.started_at[5:16].replace("T", " ") if run.started_at else run.name[:8] for run in history.runs]
    charts = []
    for backend, param_set in history.groups:
        for metric in history.metrics:
            points = []
            for run, tick in zip(history.runs, ticks, strict=True):
                group = next((g for g in run.groups if (g.backend_id, g.param_set) == (backend, param_set)), None)
                point = group.metrics.get(metric) if group is not None else None
                if point is None or point.estimate.n == 0:
                    points.append(svg.TrendPoint(tick, math.nan, math.nan, math.nan, None, run.name))
                    continue
                change = point.change
                mark = change.verdict if change is not None and change.significant else None
                label = f"{run.name}: {format_metric(metric, point.estimate)}"
                if change is not None:
                    label += f"; change from {change.since}: {format_metric(metric, change.difference, signed=True)}"
                points.append(svg.TrendPoint(tick, point.estimate.mean, point.estimate.low, point.estimate.high, mark,
                                             label))
            if any(math.isfinite(p.value) for p in points):
                charts.append(Markup(svg.trend(points, f"{backend} / {param_set}: {history_metric_label(metric)}",
                                               history_metric_label(metric),
                                               names.index(current) if current in names else None)))
    return charts


def trend_charts(history: History, current: str | None = None) -> list[Markup]:
    """The report's trend charts (per group and metric, every run with its interval), `current` shaded."""
    return _trends(history, current or "")


def _difference_rows(comparison: Comparison) -> list[list[str]]:
    return [[d.label, metric_label(d.metric), f"{d.pairs:,}", f"{d.difference.items:,}",
             f"{d.difference.repeats:.3g}" if d.difference.items else "—", _fixed(d.mean_a), _fixed(d.mean_b),
             format_difference(d.difference), f"{d.wins}/{d.ties}/{d.losses}", verdict(d)]
            for d in comparison.differences]


def _fixed(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3f}"


def _item_rows(run: Run, max_rows: int) -> tuple[list[str], list[ItemRow]]:
    """The first `max_rows` rows in job order, with the columns the table shows and the texts behind them."""
    scores = run.metrics
    explanations = [f"explanation_{name}" for name in run.criteria]
    frame = collect(run.scan().sort("task_index").head(max_rows).select(
        "backend_id", "param_set", "item_id", "repeat", "turn", "status", "error_type", "error_message", *scores,
        "latency_s", "prompt", "response", *explanations), run)
    columns = ["backend", "param set", "item", "repeat", "turn", "status", *(metric_label(m) for m in scores),
               "latency s"]
    rows = []
    for r in frame.iter_rows(named=True):
        status = r["status"] or ""
        cells = [r["backend_id"] or "", r["param_set"] or "", r["item_id"] or "", str(r["repeat"]),
                 str(r["turn"]), status + (f" ({r['error_type']})" if r["error_type"] else ""),
                 *(_score(r[m]) for m in scores), "—" if r["latency_s"] is None else f"{r['latency_s']:.2f}"]
        details = [(name.removeprefix("explanation_"), r[name]) for name in explanations if r[name]]
        if r["error_message"]:
            details.append(("error", r["error_message"]))
        rows.append(ItemRow(cells, status, r["backend_id"] or "", r["prompt"] or "", r["response"] or "", details))
    return columns, rows


def _score(value: Any) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.3f}"
