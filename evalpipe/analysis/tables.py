"""Summaries and comparisons as text: a rich terminal table, CSV, JSON or Markdown.

CSV and JSON carry full precision for tools; the terminal and Markdown round for people. A partial run
is labelled in every format that has room for it (CSV has none: the CLI prints the label on stderr).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from evalpipe.analysis.compare import Comparison, MetricDifference, NotablePair
from evalpipe.analysis.history import LATENCY_METRIC, GroupPoints, History, Point, RunPoints
from evalpipe.analysis.stats import Estimate
from evalpipe.analysis.summary import GroupSummary, RunSummary

TextFormat = Literal["csv", "json", "markdown"]
_EXCERPT = 120


def metric_label(metric: str) -> str:
    """`score_total` -> `total`, `score_judge` -> `judge`."""
    return metric.removeprefix("score_")


def format_estimate(estimate: Estimate, *, signed: bool = False) -> str:
    """`0.635 [0.600, 0.671]`, `0.635 (n=1)` or `—`; `signed` for differences: `-0.165 [-0.192, -0.140]`."""
    if estimate.n == 0:
        return "—"
    number = "{:+.3f}" if signed else "{:.3f}"
    if math.isnan(estimate.low):
        return f"{number.format(estimate.mean)} (n={estimate.n})"
    return f"{number.format(estimate.mean)} [{number.format(estimate.low)}, {number.format(estimate.high)}]"


def format_difference(estimate: Estimate) -> str:
    """A signed difference with its interval: `-0.165 [-0.192, -0.140]`."""
    return format_estimate(estimate, signed=True)


def verdict(difference: MetricDifference) -> str:
    """`worse`, `better` or `no clear change`: whether the interval excludes zero."""
    if difference.difference.below(0):
        return "worse"
    if difference.difference.above(0):
        return "better"
    return "no clear change"


def _number(value: float | None, pattern: str = "{:.3f}") -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else pattern.format(value)


def _errors(group: GroupSummary) -> str:
    if not group.errors:
        return "0"
    classes = ", ".join(f"{name} {count}" for name, count in group.errors_by_type.items())
    return f"{group.errors:,} ({group.error_rate:.1%}: {classes})"


def clusters(estimate: Estimate) -> str:
    """What an interval resampled: `200 items × 3` (rows per item, one decimal when items differ)."""
    repeats = estimate.repeats
    shown = f"{repeats:.0f}" if abs(repeats - round(repeats)) < 0.05 else f"{repeats:.1f}"
    return f"{estimate.items:,} items × {shown}"


def score_cell(estimate: Estimate, rows: int) -> str:
    """A mean with its interval, its denominator and its clusters: `0.812 [0.780, 0.840] · 450/500 scored ·
    150 items × 3`."""
    if estimate.n == 0:
        return f"— · 0/{rows:,} scored"
    return f"{format_estimate(estimate)} · {estimate.n:,}/{rows:,} scored · {clusters(estimate)}"


def pass_rate_cell(estimate: Estimate | None) -> str:
    """`85.0% [80.1%, 89.2%] · 425/500 passed · 250 items × 2`, or `—` when the run has no verdicts."""
    if estimate is None or estimate.n == 0:
        return "—"
    passes = round(estimate.mean * estimate.n)
    interval = "" if math.isnan(estimate.low) else f" [{estimate.low:.1%}, {estimate.high:.1%}]"
    return f"{estimate.mean:.1%}{interval} · {passes:,}/{estimate.n:,} passed · {clusters(estimate)}"


def _cost(group: GroupSummary) -> str:
    return f"{group.cost_usd:.4f} ({group.generation_cost_usd:.4f} + {group.scoring_cost_usd:.4f})"


def _best_of_line(summary: RunSummary) -> str | None:
    """`best-of of 80 contests (12 tied): wins alpha 50, beta 18; ties alpha 12, beta 12`."""
    if not summary.best_of_wins_by_backend and not summary.best_of_ties_by_backend:
        return None
    wins = ", ".join(f"{b} {n}" for b, n in summary.best_of_wins_by_backend.items()) or "none"
    ties = ", ".join(f"{b} {n}" for b, n in summary.best_of_ties_by_backend.items()) or "none"
    return (f"best-of of {summary.best_of_contests:,} contests ({summary.best_of_tied_contests:,} tied): "
            f"wins {wins}; ties {ties}")


def _excerpt(text: str | None) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= _EXCERPT else text[:_EXCERPT - 1] + "…"


# -- summary -------------------------------------------------------------------------------------------


def _has_best_of(summary: RunSummary) -> bool:
    return any(g.best_of_wins is not None for g in summary.groups)


def summary_columns(summary: RunSummary) -> list[str]:
    """The headers of the people-facing summary table."""
    wins = ["best-of wins/ties"] if _has_best_of(summary) else []
    return ["backend", "param set", "rows", "errors", "skipped", *(metric_label(m) for m in summary.metrics),
            "pass rate", "latency p50/p95 s", "ttft p50 s", "tokens in/out", "cost USD (generation + scoring)",
            *wins]


def _tokens(group: GroupSummary) -> str:
    """`in / out`, with the cached and cache-written part of the input and the reasoning part of the output."""
    kinds = group.token_kinds

    def part(kind: str, label: str) -> str:
        return f" ({kinds[kind]:,} {label})" if kinds.get(kind) else ""

    cache = part("cached_input_tokens", "cached") + part("cache_write_input_tokens", "cache writes")
    return f"{group.input_tokens:,}{cache} / {group.output_tokens:,}{part('reasoning_tokens', 'reasoning')}"


def summary_cells(summary: RunSummary, group: GroupSummary) -> list[str]:
    """One row of the people-facing summary table."""
    wins = [f"{group.best_of_wins or 0}/{group.best_of_ties or 0}"] if _has_best_of(summary) else []
    return [group.backend_id, group.param_set, f"{group.rows:,}", _errors(group), f"{group.skipped:,}",
            *(score_cell(group.scores[m], group.rows) for m in summary.metrics),
            pass_rate_cell(group.pass_rate),
            f"{_number(group.latency_p50_s, '{:.2f}')} / {_number(group.latency_p95_s, '{:.2f}')}",
            _number(group.ttft_p50_s, "{:.2f}"), _tokens(group),
            _cost(group), *wins]


_TITLE = "means over scored rows with 95% CI over items; pass rate over judged and failed rows"


def summary_renderable(summary: RunSummary) -> RenderableType:
    """The summary as rich renderables: partial label, the table, best-of wins and ties."""
    parts: list[RenderableType] = []
    if summary.partial:
        parts.append(Text("PARTIAL: " + "; ".join(summary.warnings), style="bold yellow"))
    table = Table(title=escape(f"run {summary.run_name} ({summary.state}) — {_TITLE}"))
    for column in summary_columns(summary):
        # Folded, not cut: in a narrow terminal (or a pipe, 80 columns) a number split over lines is
        # still readable, one ending in "…" is not.
        table.add_column(column, justify="left" if column in ("backend", "param set") else "right", overflow="fold")
    for group in summary.groups:
        table.add_row(*(escape(cell) for cell in summary_cells(summary, group)))
    parts.append(table)
    best_of = _best_of_line(summary)
    if best_of:
        parts.append(Text(best_of))
    return Group(*parts)


def _estimate_record(prefix: str, mean_name: str, estimate: Estimate | None) -> dict[str, Any]:
    """`mean_name` and `<prefix>_ci_low`, `_ci_high`, `_n` (rows), `_items`, `_repeats`, `_method`."""
    names = [mean_name, *(f"{prefix}_{name}" for name in ("ci_low", "ci_high", "n", "items", "repeats", "method"))]
    if estimate is None:
        return dict.fromkeys(names)
    repeats = _finite(estimate.repeats) if estimate.items else None
    values = [_finite(estimate.mean), _finite(estimate.low), _finite(estimate.high), estimate.n, estimate.items,
              repeats, estimate.method]
    return dict(zip(names, values, strict=True))


def summary_records(summary: RunSummary) -> list[dict[str, Any]]:
    """One flat record per group, every number at full precision; each estimate with its rows (`_n`), items,
    rows per item (`_repeats`) and interval method."""
    error_types = sorted({name for g in summary.groups for name in g.errors_by_type})
    records = []
    for g in summary.groups:
        record: dict[str, Any] = {
            "backend_id": g.backend_id, "param_set": g.param_set, "model": g.model, "temperature": g.temperature,
            "top_p": g.top_p, "rows": g.rows, "items": g.items, "repeats": g.repeats, "ok": g.ok,
            "errors": g.errors, "skipped": g.skipped, "attempted": g.attempted, "error_rate": g.error_rate}
        record.update({f"errors_{name}": g.errors_by_type.get(name, 0) for name in error_types})
        for metric, estimate in g.scores.items():
            record.update(_estimate_record(metric, f"{metric}_mean", estimate))
        record.update(_estimate_record("pass_rate", "pass_rate", g.pass_rate))
        record.update({"latency_p50_s": g.latency_p50_s, "latency_p95_s": g.latency_p95_s,
                       "ttft_p50_s": g.ttft_p50_s, "input_tokens": g.input_tokens, "output_tokens": g.output_tokens,
                       **g.token_kinds,
                       "cost_usd": g.cost_usd, "generation_cost_usd": g.generation_cost_usd,
                       "scoring_cost_usd": g.scoring_cost_usd, "best_of_wins": g.best_of_wins,
                       "best_of_ties": g.best_of_ties})
        records.append(record)
    return records


def summary_text(summary: RunSummary, text_format: TextFormat) -> str:
    """The summary as CSV, JSON or Markdown."""
    records = summary_records(summary)
    if text_format == "csv":
        return _csv(records)
    if text_format == "json":
        return json.dumps({"run": summary.run_name, "path": summary.run_path, "state": summary.state,
                           "partial": summary.partial, "warnings": list(summary.warnings), "groups": records,
                           "best_of_wins_by_backend": summary.best_of_wins_by_backend,
                           "best_of_ties_by_backend": summary.best_of_ties_by_backend,
                           "best_of_contests": summary.best_of_contests,
                           "best_of_tied_contests": summary.best_of_tied_contests}, indent=2, allow_nan=False) + "\n"
    lines = [f"## Run {summary.run_name} ({summary.state})", ""]
    if summary.partial:
        lines += [f"> **Partial:** {_md('; '.join(summary.warnings))}", ""]
    lines += _markdown_table(summary_columns(summary), [summary_cells(summary, g) for g in summary.groups])
    lines += ["", f"{_TITLE[0].upper()}{_TITLE[1:]}."]
    best_of = _best_of_line(summary)
    if best_of:
        lines += ["", _md(best_of[0].upper() + best_of[1:])]
    return "\n".join(lines) + "\n"


# -- comparison ----------------------------------------------------------------------------------------


def _group_header(comparison: Comparison) -> str:
    return " · ".join(comparison.group_columns) or "group"


def _difference_cells(d: MetricDifference) -> list[str]:
    return [d.label, metric_label(d.metric), f"{d.pairs:,}", f"{d.difference.items:,}",
            _number(d.difference.repeats if d.difference.items else None, "{:.3g}"), _number(d.mean_a),
            _number(d.mean_b), format_difference(d.difference), f"{d.wins}/{d.ties}/{d.losses}", verdict(d)]


def _difference_columns(comparison: Comparison) -> list[str]:
    return [_group_header(comparison), "metric", "pairs", "items", "pairs/item", "A", "B",
            "B − A [95% CI over items]", "wins/ties/losses", "verdict"]


def _change_columns(comparison: Comparison) -> list[str]:
    return [_group_header(comparison), "pairs", "items", "unpaired items", "rows only in A", "rows only in B",
            "cost A → B USD", "latency p50 A → B s"]


def _pair_columns(comparison: Comparison) -> list[str]:
    return [_group_header(comparison), "pair", "A", "B", "B − A", "prompt", "answer A", "answer B"]


def _change_cells(comparison: Comparison) -> list[list[str]]:
    rows = []
    for c in comparison.changes:
        change = f" ({(c.cost_b_usd - c.cost_a_usd) / c.cost_a_usd:+.1%})" if c.cost_a_usd else ""
        rows.append([c.label, f"{c.pairs:,}", f"{c.items:,}", f"{c.unpaired_items:,}", f"{c.only_in_a:,}",
                     f"{c.only_in_b:,}", f"{c.cost_a_usd:.4f} → {c.cost_b_usd:.4f}{change}",
                     f"{_number(c.latency_p50_a_s, '{:.2f}')} → {_number(c.latency_p50_b_s, '{:.2f}')}"])
    return rows


def _pair_cells(found: dict[str, list[NotablePair]]) -> list[list[str]]:
    return [[p.label, " ".join(f"{k}={v}" for k, v in p.key.items()), f"{p.score_a:.3f}", f"{p.score_b:.3f}",
             f"{p.difference:+.3f}", _excerpt(p.prompt), _excerpt(p.response_a), _excerpt(p.response_b)]
            for pairs in found.values() for p in pairs]


def _sections(comparison: Comparison) -> list[tuple[str, list[str], list[list[str]]]]:
    """(heading, columns, rows) of each comparison table, in order."""
    metric = metric_label(comparison.gate_metric)
    return [
        (f"B = {comparison.run_b} vs A = {comparison.run_a}", _difference_columns(comparison),
         [_difference_cells(d) for d in comparison.differences]),
        ("pairing, cost and latency", _change_columns(comparison), _change_cells(comparison)),
        (f"most regressed pairs on {metric}", _pair_columns(comparison), _pair_cells(comparison.regressions)),
        (f"most improved pairs on {metric}", _pair_columns(comparison), _pair_cells(comparison.improvements)),
    ]


def comparison_tables(comparison: Comparison) -> list[tuple[str, list[str], list[list[str]]]]:
    """(heading, columns, rows) of each people-facing comparison table: differences, pairing, the most
    regressed and the most improved pairs (texts excerpted)."""
    return _sections(comparison)


def gate_message(comparison: Comparison) -> str | None:
    """The release gate's verdict, or None when no threshold was given."""
    if comparison.threshold is None:
        return None
    metric = metric_label(comparison.gate_metric)
    if not comparison.changes_with_pairs:
        return "REGRESSION GATE FAILED: no row of B pairs with a row of A, so nothing shows B is not worse"
    if comparison.failed_groups:
        return (f"REGRESSION GATE FAILED: the 95% CI of B − A on {metric} lies entirely below "
                f"−{comparison.threshold:g} for {', '.join(comparison.failed_groups)}")
    return f"regression gate passed: no 95% CI of B − A on {metric} lies entirely below −{comparison.threshold:g}"


def comparison_renderable(comparison: Comparison) -> RenderableType:
    """The comparison as rich renderables."""
    parts: list[RenderableType] = []
    for name, warnings in ((comparison.run_a, comparison.warnings_a), (comparison.run_b, comparison.warnings_b)):
        if warnings:
            parts.append(Text(f"PARTIAL {name}: " + "; ".join(warnings), style="bold yellow"))
    parts += [Text(note) for note in [comparison.paired_on.capitalize(), *comparison.notes]]
    for heading, columns, rows in _sections(comparison):
        if not rows:
            continue
        table = Table(title=escape(heading))
        for column in columns:
            table.add_column(column, overflow="fold")
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        parts.append(table)
    message = gate_message(comparison)
    if message:
        parts.append(Text(message, style="bold red" if comparison.gate_failed else "green"))
    return Group(*parts)


def comparison_json_data(comparison: Comparison) -> dict[str, Any]:
    """The comparison as plain JSON data (NaN as null)."""
    data = asdict(comparison)
    data["gate_failed"] = comparison.gate_failed
    for record, difference in zip(data["differences"], comparison.differences, strict=True):
        record["difference"]["repeats"] = difference.difference.repeats
    return _json_safe(data)  # type: ignore[no-any-return]


def comparison_text(comparison: Comparison, text_format: TextFormat) -> str:
    """The comparison as CSV (the differences), JSON (everything) or Markdown (everything)."""
    if text_format == "json":
        return json.dumps(comparison_json_data(comparison), indent=2, allow_nan=False) + "\n"
    if text_format == "csv":
        return _csv([{**d.group, "metric": d.metric, "pairs": d.pairs, "items": d.difference.items,
                      "pairs_per_item": d.difference.repeats if d.difference.items else None,
                      "unscored": d.unscored, "mean_a": _finite(d.mean_a), "mean_b": _finite(d.mean_b),
                      "difference": _finite(d.difference.mean), "ci_low": _finite(d.difference.low),
                      "ci_high": _finite(d.difference.high), "ci_method": d.difference.method, "wins": d.wins,
                      "ties": d.ties, "losses": d.losses, "verdict": verdict(d)} for d in comparison.differences])
    sections = _sections(comparison)
    lines = [f"## {_md(sections[0][0])}", ""]
    for name, warnings in ((comparison.run_a, comparison.warnings_a), (comparison.run_b, comparison.warnings_b)):
        if warnings:
            lines += [f"> **Partial {_md(name)}:** {_md('; '.join(warnings))}", ""]
    lines += [f"- {_md(note)}" for note in [comparison.paired_on.capitalize(), *comparison.notes]] + [""]
    for number, (heading, columns, rows) in enumerate(sections):
        if number and not rows:
            continue
        if number:
            lines += [f"### {_md(heading[0].upper() + heading[1:])}", ""]
        lines += [*_markdown_table(columns, rows), ""]
    message = gate_message(comparison)
    if message:
        lines += [f"**{message}**"]
    return "\n".join(lines).rstrip("\n") + "\n"


# -- history -------------------------------------------------------------------------------------------

_HISTORY_LABELS = {"pass_rate": "pass rate", "error_rate": "error rate", "cost_usd": "cost/row USD",
                   LATENCY_METRIC: "latency p50 s"}
_RATES = ("pass_rate", "error_rate")
_HISTORY_COLUMNS = ["run", "started", "state", "items × rows/item"]
_MARKS = {"worse": "▼ worse", "better": "▲ better"}


def history_metric_label(metric: str) -> str:
    """`score_total` -> `total`, `error_rate` -> `error rate`, `latency_p50_s` -> `latency p50 s`."""
    return _HISTORY_LABELS.get(metric, metric_label(metric))


def format_metric(metric: str, estimate: Estimate, *, signed: bool = False) -> str:
    """An estimate in the metric's unit: rates in percent (changes in points), cost and latency to 3 digits."""
    if estimate.n == 0:
        return "—"
    sign = "+" if signed else ""
    if metric in _RATES:
        pattern = "{:" + sign + ".1f}"
        scale, unit = 100.0, " pp" if signed else "%"
    elif metric.startswith("score_"):
        return format_estimate(estimate, signed=signed)
    else:
        pattern, scale, unit = "{:" + sign + ".3g}", 1.0, ""
    number = pattern.format(estimate.mean * scale) + unit
    if math.isnan(estimate.low):
        return f"{number} (n={estimate.n})"
    return f"{number} [{pattern.format(estimate.low * scale)}, {pattern.format(estimate.high * scale)}]"


def _history_cell(metric: str, point: Point | None, separator: str, listed_before: str | None) -> str:
    """The level; under it the change when significant, naming the run it is from unless it is the line above."""
    if point is None:
        return "—"
    cell = format_metric(metric, point.estimate)
    if point.change is not None and point.change.significant:
        change = format_metric(metric, point.change.difference, signed=True)
        since = "" if point.change.since == listed_before else f" vs {point.change.since}"
        cell += f"{separator}{_MARKS[point.change.verdict]} {change}{since}"
    return cell


def _state(run: RunPoints) -> str:
    return run.state + (" · partial" if run.partial and run.error is None else "")


def _group_rows(history: History, backend: str, param_set: str, separator: str) -> list[list[str]]:
    rows: list[list[str]] = []
    for run in history.runs:
        group = next((g for g in run.groups if (g.backend_id, g.param_set) == (backend, param_set)), None)
        if group is None and run.error is None:
            continue  # the run did not have this group
        size = "—" if group is None else f"{group.items:,} × {group.repeats:.3g}"
        listed_before = rows[-1][0] if rows else None
        rows.append([run.name, _short_time(run.started_at), _state(run), size,
                     *(_history_cell(m, group.metrics.get(m) if group else None, separator, listed_before)
                       for m in history.metrics)])
    return rows


def _short_time(text: str | None) -> str:
    return "—" if text is None else text[:16].replace("T", " ")


def _labels(history: History) -> list[str]:
    labels = [f"{'DAMAGED' if run.error is not None else 'PARTIAL'} {run.name}: {run.label.split(': ', 1)[1]}"
              for run in history.runs if run.label]
    labels += [f"{run.name} {g.backend_id}/{g.param_set}: {note}" for run in history.runs for g in run.groups
               for note in g.notes]
    return labels


def history_renderable(history: History) -> RenderableType:
    """The history as rich renderables: labels of damaged and partial runs, then one table per group."""
    parts: list[RenderableType] = [Text(note) for note in history.notes]
    parts += [Text(label, style="bold yellow") for label in _labels(history)]
    columns = [*_HISTORY_COLUMNS, *(history_metric_label(m) for m in history.metrics)]
    for backend, param_set in history.groups:
        table = Table(title=escape(f"{backend} / {param_set} — per run: estimate [95% CI, items resampled]; "
                                   "▲/▼ where the paired change from the run before excludes 0"))
        for column in columns:
            table.add_column(column, justify="left" if column in _HISTORY_COLUMNS[:3] else "right", overflow="fold")
        for row in _group_rows(history, backend, param_set, "\n"):
            table.add_row(*(escape(cell) for cell in row))
        parts.append(table)
    if not history.groups:
        parts.append(Text("no run could be read", style="bold red"))
    return Group(*parts)


def _point_record(metric: str, point: Point | None) -> dict[str, Any]:
    estimate, change = (point.estimate, point.change) if point else (None, None)
    return {f"{metric}_mean": _finite(estimate.mean) if estimate else None,
            f"{metric}_ci_low": _finite(estimate.low) if estimate else None,
            f"{metric}_ci_high": _finite(estimate.high) if estimate else None,
            f"{metric}_items": estimate.items if estimate else None,
            f"{metric}_n": estimate.n if estimate else None,
            f"{metric}_change": _finite(change.difference.mean) if change else None,
            f"{metric}_change_ci_low": _finite(change.difference.low) if change else None,
            f"{metric}_change_ci_high": _finite(change.difference.high) if change else None,
            f"{metric}_change_items": change.difference.items if change else None,
            f"{metric}_flag": change.verdict if change and change.significant else ""}


def history_records(history: History) -> list[dict[str, Any]]:
    """One flat record per run and group (one per damaged run), every number at full precision."""
    records = []
    for run in history.runs:
        base = {"run": run.name, "started_at": run.started_at, "state": run.state, "partial": run.partial,
                "damaged": run.error is not None, "label": run.label}
        groups: list[GroupPoints | None] = list(run.groups) or [None]
        for group in groups:
            record: dict[str, Any] = {**base, "backend_id": group.backend_id if group else None,
                                      "param_set": group.param_set if group else None,
                                      "items": group.items if group else None, "rows": group.rows if group else None,
                                      "notes": "; ".join(group.notes) if group else ""}
            for metric in history.metrics:
                record.update(_point_record(metric, group.metrics.get(metric) if group else None))
            records.append(record)
    return records


def history_json_data(history: History) -> dict[str, Any]:
    """The history as plain JSON data (NaN as null)."""
    return _json_safe({"directory": history.directory, "jobs": history.jobs, "metrics": history.metrics,  # type: ignore[no-any-return]
                       "notes": history.notes, "runs": [asdict(run) | {"partial": run.partial, "label": run.label}
                                                        for run in history.runs]})


def history_text(history: History, text_format: TextFormat) -> str:
    """The history as CSV (one record per run and group), JSON (everything) or Markdown (a table per group)."""
    if text_format == "csv":
        return _csv(history_records(history))
    if text_format == "json":
        return json.dumps(history_json_data(history), indent=2, allow_nan=False) + "\n"
    lines = [f"## History of {_md(', '.join(history.jobs) or history.directory)} ({len(history.runs)} runs)", ""]
    lines += [f"- {_md(note)}" for note in history.notes]
    lines += [f"> **{_md(label)}**" + "  " for label in _labels(history)]
    columns = [*_HISTORY_COLUMNS, *(history_metric_label(m) for m in history.metrics)]
    for backend, param_set in history.groups:
        lines += ["", f"### {_md(backend)} / {_md(param_set)}", ""]
        lines += _markdown_table(columns, _group_rows(history, backend, param_set, " "))
    lines += ["", "Estimates with 95% confidence intervals from resampling items (with all their repeats); "
              "▲/▼ marks a change from the run before whose paired, item-clustered interval excludes 0."]
    return "\n".join(lines) + "\n"


# -- plumbing ------------------------------------------------------------------------------------------


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) or math.isinf(value) else value


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return _finite(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _csv(records: Sequence[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if records:
        writer = csv.DictWriter(buffer, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    return buffer.getvalue()


def _md(text: str) -> str:
    """Text safe inside a Markdown table cell: pipes escaped, no line breaks."""
    return " ".join(text.split()).replace("|", "\\|")


def _markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows]
    return lines
