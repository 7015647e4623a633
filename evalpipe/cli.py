"""`evalpipe`: run, check and plan jobs from the shell. Parsing and printing only: the work is in
the pipeline.

Exit codes: 0 done; 1 a gate failed (`compare --fail-on-regression`, `run --fail-on-error`); 2 a bad
job file or option, a backend that cannot run (its key unset, its model file absent) and is not
`optional`, or a job past its `confirm_above` (tasks, projected cost) without `--yes` (nothing was
called); 3 nothing to run (every backend skipped, or the run has no row from a call); 4 the budget:
the run stopped at it, or `plan` projects more than it allows; 130 interrupted."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from evalpipe import logs
from evalpipe.backends.registry import LLMBackend, provider_class
from evalpipe.errors import ConfigError
from evalpipe.pipeline.confirmation import confirmation_needed
from evalpipe.pipeline.expand import Plan, plan_job
from evalpipe.pipeline.load import LoadedJob, ignored_sweeps, load_job
from evalpipe.pipeline.runner import RunOptions, RunOutcome, RunProgress, run_job
from evalpipe.pipeline.spec import JobSpec
from evalpipe.redaction import header_value_problem

EXIT_REGRESSION = 1  # `compare --fail-on-regression`: B is worse than A beyond the threshold
EXIT_FAILED_GATE = 1  # `run --fail-on-error`: the run's error rate is above the rate given
EXIT_BAD_INPUT = 2
EXIT_NOTHING_RAN = 3
EXIT_BUDGET = 4
EXIT_INTERRUPTED = 130
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)  # `job.yaml:100:` is a location, not the :100: emoji


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `evalpipe` command."""
    args = _parser().parse_args(argv)
    logs.configure(args.log_format, args.verbose)
    try:
        code: int = args.handler(args)
        return code
    except ConfigError as error:
        # Escaped: messages quote the user's own text, and `[/x]` in it must print, not break the markup.
        # Soft-wrapped: a long line stays one line for grep and copy-paste, whatever the width.
        err.print(f"[red]error:[/red] {escape(error.message)}", highlight=False, markup=True, soft_wrap=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # before the runner took over the signals: nothing was started
        err.print("interrupted", highlight=False, markup=False, soft_wrap=True)
        return EXIT_INTERRUPTED


def _condition(text: str) -> str:
    """`COLUMN=VALUE` as given (checked against the run's columns once it is open)."""
    column, equals, _ = text.partition("=")
    if not equals or not column.strip():
        raise argparse.ArgumentTypeError(f"expected COLUMN=VALUE (like backend_id=gpt-4.1 or param_set=calm), "
                                         f"got {text!r}")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evalpipe", description="Evaluate LLMs with job files.")
    parser.add_argument("--log-format", choices=["console", "json"], default="console",
                        help="log lines for people (default) or one JSON object per line for machines")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log each retry")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a job file")
    run.add_argument("job", type=Path)
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run; finished tasks are skipped")
    run.add_argument("--retry-errors", action="store_true", help="when resuming, run error rows again")
    run.add_argument("--concurrency", type=_positive_int, help="override the job's global concurrency")
    run.add_argument("--out", type=Path, help="results root (default: the job's output.dir)")
    run.add_argument("--force", action="store_true", help="resume even though the job file changed")
    run.add_argument("--dry-run", action="store_true", help="validate and plan, call nothing")
    run.add_argument("--yes", action="store_true", help=_YES_HELP)
    run.add_argument("--fail-on-error", type=_rate, metavar="RATE",
                     help=f"exit {EXIT_FAILED_GATE} when more than RATE (0-1) of the run's rows from a call are errors")
    run.set_defaults(handler=_run)

    for name, handler, text in (("validate", _validate, "check a job file; call nothing"),
                                ("plan", _plan, "tasks, calls, tokens and cost a job would take")):
        command = commands.add_parser(name, help=text)
        command.add_argument("job", type=Path)
        if name == "plan":
            command.add_argument("--yes", action="store_true", help=_YES_HELP)
        command.set_defaults(handler=handler)

    _add_analysis_commands(commands)
    commands.add_parser("backends", help="the backends and which keys are set").set_defaults(handler=_backends)
    commands.add_parser("schema", help="the JSON Schema of job files").set_defaults(handler=_schema)
    fake = commands.add_parser("fake-server", help="run the fake provider server (python -m evalpipe.testing)")
    fake.add_argument("rest", nargs=argparse.REMAINDER, help="options of python -m evalpipe.testing")
    fake.set_defaults(handler=_fake_server)
    return parser


_YES_HELP = "go ahead with a job past its confirm_above (default: 100,000 tasks or $10 projected)"


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a rate between 0 and 1, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text!r}")
    return value


def _add_analysis_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    formats = ["table", "csv", "json", "markdown"]
    summary = commands.add_parser("summary", help="per backend and parameter set: scores with 95%% CIs, errors, "
                                  "latency, tokens, cost")
    summary.add_argument("run_dir", type=Path)
    summary.add_argument("--format", choices=formats, default="table", help="output format (default: table)")
    summary.set_defaults(handler=_summary_command)

    compare = commands.add_parser(
        "compare", help="is B better than A? paired differences with 95%% CIs that resample items",
        description="Compare two runs (RUN_A RUN_B), or two selections of one run's rows (RUN --a COLUMN=VALUE "
                    "--b COLUMN=VALUE). Pairs share the item, repeat and turn, and every backend_id and param_set "
                    "that --a/--b do not choose; intervals of B − A resample items, not pairs.")
    compare.add_argument("run_a", type=Path, help="the baseline run directory (or the one run --a and --b choose from)")
    compare.add_argument("run_b", type=Path, nargs="?", help="the run directory compared with it (default: RUN_A)")
    compare.add_argument("--a", dest="a", action="append", type=_condition, default=[], metavar="COLUMN=VALUE",
                         help="keep A's rows whose COLUMN equals VALUE (backend_id=, param_set=, model=, ...); "
                              "repeat to AND conditions")
    compare.add_argument("--b", dest="b", action="append", type=_condition, default=[], metavar="COLUMN=VALUE",
                         help="the same for B's rows")
    compare.add_argument("--pair-on", choices=["task", "item"], default="task",
                         help="pair rows on item, repeat and turn (task, default) or on item only, averaging each "
                              "side per item first")
    compare.add_argument("--fail-on-regression", type=_non_negative_float, metavar="THRESHOLD",
                         help=f"exit {EXIT_REGRESSION} when the 95%% CI of B − A on --metric lies entirely below "
                              "−THRESHOLD for any backend or parameter set compared")
    compare.add_argument("--metric", default="score_total",
                         help="the metric of the gate and of the most regressed and improved pairs "
                              "(default: score_total)")
    compare.add_argument("--top", type=_positive_int, default=5,
                         help="most regressed and most improved pairs shown per group (default: 5)")
    compare.add_argument("--format", choices=formats, default="table", help="output format (default: table)")
    compare.set_defaults(handler=_compare_command)

    report = commands.add_parser("report", help="a self-contained HTML report of a run (and its comparison)")
    report.add_argument("run_dir", type=Path)
    report.add_argument("--compare", type=Path, metavar="RUN_B", help="also compare RUN_B against RUN_DIR")
    report.add_argument("--pair-on", choices=["task", "item"], default="task")
    report.add_argument("--fail-on-regression", type=_non_negative_float, metavar="THRESHOLD",
                        help="mark the gate in the report (the exit code stays 0)")
    report.add_argument("--metric", default="score_total")
    report.add_argument("--history", type=Path, metavar="JOB_DIR",
                        help="add trend charts over the runs in JOB_DIR (results/<job>/)")
    report.add_argument("-o", "--output", type=Path, default=Path("report.html"))
    report.set_defaults(handler=_report_command)

    history = commands.add_parser("history", help="every run of a job in start order: each metric with its 95%% "
                                  "CI per run, and where it changed significantly from the run before")
    history.add_argument("job_dir", type=Path, help="the job's results directory (results/<job>/)")
    history.add_argument("--format", choices=formats, default="table", help="output format (default: table)")
    history.set_defaults(handler=_history_command)


def _table_console() -> Console:
    """The terminal's console; for a pipe or a file, one wide enough that a table keeps its natural width
    (rich assumes 80 columns there, which would fold every number of a wide table)."""
    return out if out.is_terminal else Console(width=250)


# The analysis commands import polars-based modules on use: `evalpipe run` should not pay for them.
def _summary_command(args: argparse.Namespace) -> int:
    from evalpipe.analysis.runs import open_run
    from evalpipe.analysis.summary import summarize
    from evalpipe.analysis.tables import summary_renderable, summary_text

    summary = summarize(open_run(args.run_dir))
    if args.format == "table":
        _table_console().print(summary_renderable(summary))
    else:
        if summary.partial and args.format == "csv":  # CSV has no room for the label
            err.print("partial: " + "; ".join(summary.warnings), highlight=False, markup=False, soft_wrap=True)
        sys.stdout.write(summary_text(summary, args.format))
    return 0


def _compare_command(args: argparse.Namespace) -> int:
    from evalpipe.analysis.compare import compare_sides, metric_column
    from evalpipe.analysis.pairing import Side, parse_condition
    from evalpipe.analysis.runs import open_run
    from evalpipe.analysis.tables import comparison_renderable, comparison_text, gate_message

    run_a = open_run(args.run_a)
    if args.run_b is None and not (args.a and args.b):
        raise ConfigError("compare with one run compares two selections of its rows: give both --a and --b, "
                          "e.g. --a backend_id=gpt-4.1 --b backend_id=gpt-4.1-mini")
    run_b = run_a if args.run_b is None else open_run(args.run_b)
    side_a = Side(run_a, tuple(parse_condition(text) for text in args.a), "--a")
    side_b = Side(run_b, tuple(parse_condition(text) for text in args.b), "--b")
    comparison = compare_sides(side_a, side_b, pair_on=args.pair_on, gate_metric=metric_column(args.metric),
                               threshold=args.fail_on_regression, top=args.top)
    if args.format == "table":
        _table_console().print(comparison_renderable(comparison))
    else:
        sys.stdout.write(comparison_text(comparison, args.format))
        message = gate_message(comparison)
        if message and args.format == "csv":
            err.print(message, highlight=False, markup=False, soft_wrap=True)
    return EXIT_REGRESSION if comparison.gate_failed else 0


def _report_command(args: argparse.Namespace) -> int:
    from evalpipe.analysis.compare import compare_runs, metric_column
    from evalpipe.analysis.history import build_history
    from evalpipe.analysis.report import write_report
    from evalpipe.analysis.runs import open_run
    from evalpipe.analysis.summary import summarize

    run = open_run(args.run_dir)
    comparison = None
    if args.compare is not None:
        comparison = compare_runs(run, open_run(args.compare), pair_on=args.pair_on,
                                  gate_metric=metric_column(args.metric), threshold=args.fail_on_regression)
    history = build_history(args.history) if args.history is not None else None
    path = write_report(run, summarize(run), args.output, comparison, history=history)
    out.print(f"report: {path}", highlight=False, markup=False, soft_wrap=True)
    return 0


def _history_command(args: argparse.Namespace) -> int:
    from evalpipe.analysis.history import build_history
    from evalpipe.analysis.tables import history_renderable, history_text

    history = build_history(args.job_dir)
    if args.format == "table":
        _table_console().print(history_renderable(history))
    else:
        if args.format == "csv":  # CSV has no room for the labels
            for run in history.runs:
                if run.label:
                    err.print(f"{run.name}: {run.label}", highlight=False, markup=False, soft_wrap=True)
        sys.stdout.write(history_text(history, args.format))
    return 0


def _say(text: str) -> None:
    err.print(text, highlight=False, markup=False, soft_wrap=True)


def _skipped(loaded: LoadedJob) -> bool:
    """Print a line per optional backend that cannot run here; True when no evaluated backend is left."""
    for backend_id, reason in loaded.skipped.items():
        _say(f"skipped backend {backend_id} (optional): {reason}")
    if all(b.id in loaded.skipped for b in loaded.spec.backends):
        _say("nothing to run: every backend of the job is skipped")
        return True
    return False


def _validate(args: argparse.Namespace) -> int:
    loaded = load_job(args.job)
    spec = loaded.spec
    _warn_ignored_sweeps(loaded)
    if _skipped(loaded):
        return EXIT_NOTHING_RAN
    runnable = len(spec.backends) - sum(b.id in loaded.skipped for b in spec.backends)
    out.print(f"{args.job}: valid — {len(loaded.dataset)} items, {runnable} of {len(spec.backends)} backends "
              f"can run here, {len(spec.parameters.expanded())} parameter sets, {spec.repeats} repeats",
              highlight=False, markup=False, soft_wrap=True)
    return 0


def _plan(args: argparse.Namespace, loaded: LoadedJob | None = None) -> int:
    loaded = loaded or load_job(args.job)
    if _skipped(loaded):
        return EXIT_NOTHING_RAN
    plan = plan_job(loaded)
    table = Table(title=escape(f"{args.job}: {plan.tasks} tasks ({plan.items} items × {plan.param_sets} "
                               f"parameter sets × {plan.repeats} repeats per backend)"))
    for column in ("backend", "model", "calls", "input tokens", "output tokens", "cost (USD)"):
        table.add_column(column, justify="left" if column in ("backend", "model") else "right")
    for b in plan.backends:
        table.add_row(b.backend_id, escape(b.model), f"{b.calls:,}", f"≈{b.input_tokens:,}", f"≤{b.output_tokens:,}",
                      f"{b.cost_usd:.4f}")
    table.add_row("total", "", f"{plan.calls:,}", f"≈{plan.input_tokens:,}", f"≤{plan.output_tokens:,}",
                  f"{plan.cost_usd:.4f}")
    out.print(table)
    if plan.tasks_skipped:
        _say(f"{plan.tasks_skipped} tasks of skipped backends are not counted above")
    over = plan.over_budget()
    for line in over:
        _say(f"over budget: {line}; the run stops starting tasks before its spend could cross the budget, so it "
             "may not finish (raise the budget, or lower max_tokens, items or repeats)")
    # Non-zero, so that a script running `plan` before `run` stops before a run that cannot finish.
    if over:
        return EXIT_BUDGET
    return 0 if _confirmed(args, loaded, plan) else EXIT_BAD_INPUT


def _confirmed(args: argparse.Namespace, loaded: LoadedJob, plan: Plan | None = None) -> bool:
    """False, with a line saying how to go ahead, for a job past its `confirm_above` without `--yes`."""
    if getattr(args, "yes", False):
        return True
    reason = confirmation_needed(loaded.spec, plan or plan_job(loaded))
    if reason is not None:
        err.print(f"[red]error:[/red] {escape(reason)}", highlight=False, markup=True, soft_wrap=True)
    return reason is None


def _backends(args: argparse.Namespace) -> int:
    table = Table(title="backends")
    for column in ("backend", "default model", "key variable", "key"):
        table.add_column(column)
    for backend in LLMBackend:
        cls = provider_class(backend)
        variables = " or ".join(v for v in (cls.api_key_env, *cls.api_key_env_aliases) if v)
        found = cls.key_from_environment()
        state = "not needed" if not cls.requires_api_key else (f"set ({found[0]})" if found else "missing")
        if found and (problem := header_value_problem(found[1])):  # refused by build(): say so here too
            state = f"unusable: {found[0]} {problem}"
        table.add_row(backend.value, cls.default_model or "(required)", variables, state)  # never the key itself
    out.print(table)
    return 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(JobSpec.model_json_schema(), indent=2))
    return 0


def _fake_server(args: argparse.Namespace) -> int:
    from evalpipe.testing.__main__ import main as fake_main

    return fake_main(args.rest)


def _warn_ignored_sweeps(loaded: LoadedJob) -> None:
    for warning in ignored_sweeps(loaded.spec):
        _say(f"warning: {warning}")


def _run(args: argparse.Namespace) -> int:
    loaded = load_job(args.job)  # every mistake in the job file stops here, before any call
    _warn_ignored_sweeps(loaded)
    if args.dry_run:
        return _plan(args, loaded)
    if _skipped(loaded):
        return EXIT_NOTHING_RAN
    if not _confirmed(args, loaded):
        return EXIT_BAD_INPUT
    options = RunOptions(out_root=args.out, run_dir=args.resume, concurrency=args.concurrency,
                         retry_errors=args.retry_errors, force=args.force)
    with _progress_display() as on_row:
        outcome = anyio.run(run_job, loaded, options, on_row)
    _summary(outcome, loaded)
    if outcome.state == "interrupted":
        err.print(f"interrupted: resume with  {outcome.resume_command}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    if outcome.state == "budget_exhausted":
        budget = loaded.spec.budget
        limits = ", ".join(f"{name} {value:g}" for name, value in (("max_cost_usd", budget.max_cost_usd),
                                                                  ("max_tokens", budget.max_tokens)) if value)
        _say(f"stopped at the budget ({limits}): {outcome.executed} of {outcome.total_tasks} tasks ran, "
             f"${outcome.cost_usd:.4f} and {outcome.input_tokens + outcome.output_tokens:,} tokens spent; raise it "
             f"and resume with  {outcome.resume_command}")
        return EXIT_BUDGET
    if outcome.executed == 0:
        _say("nothing ran: the run has no row from a call")
        return EXIT_NOTHING_RAN
    if args.fail_on_error is not None and outcome.error_rate > args.fail_on_error:
        _say(f"error rate {outcome.error_rate:.1%} ({outcome.counts.get('error', 0)} of {outcome.executed} rows) "
             f"is above --fail-on-error {args.fail_on_error:g}")
        return EXIT_FAILED_GATE
    return 0


class _progress_display:  # noqa: N801 - used as a context manager like a function
    """A rich progress bar on a terminal; a plain line every few seconds otherwise (logs, CI)."""

    def __init__(self) -> None:
        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                             TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=err)
        self._task = self._bar.add_task("running", total=None, stats="")
        self._last_line = 0.0

    def __enter__(self) -> Callable[[RunProgress], None]:
        if err.is_terminal:
            self._bar.start()
        return self.update

    def __exit__(self, *exc_info: object) -> None:
        self._bar.stop()

    def update(self, progress: RunProgress) -> None:
        elapsed = max(time.monotonic() - progress.started, 1e-9)
        stats = (f"{progress.errors} errors · {progress.calls / elapsed:.1f} calls/s · "
                 f"{progress.input_tokens + progress.output_tokens:,} tokens · ${progress.cost_usd:.4f}")
        if err.is_terminal:
            self._bar.update(self._task, total=progress.total, completed=progress.done, stats=stats)
        elif time.monotonic() - self._last_line >= 5 or progress.done == progress.total:
            self._last_line = time.monotonic()
            err.print(f"{progress.done}/{progress.total} done · {stats}", highlight=False, markup=False, soft_wrap=True)


def _summary(outcome: RunOutcome, loaded: LoadedJob) -> None:
    for backend_id, reason in outcome.skipped_backends.items():
        if backend_id not in loaded.skipped:  # already said before the run started
            _say(f"skipped backend {backend_id} (optional): {reason}")
    table = Table(title=f"run {outcome.run_id}: {outcome.state}")
    for column in ("tasks", "ok", "errors", "skipped", "cost (USD)"):
        table.add_column(column, justify="right")
    table.add_row(str(outcome.total_tasks), str(outcome.counts.get("ok", 0)), str(outcome.counts.get("error", 0)),
                  str(outcome.counts.get("skipped", 0)), f"{outcome.cost_usd:.4f}")
    out.print(table)
    for name, path in outcome.outputs.items():
        out.print(f"{name}: {path}", highlight=False, markup=False, soft_wrap=True)
    if outcome.counts.get("ok", 0):
        out.print(f"next: evalpipe summary {outcome.run_dir}  (or: evalpipe report {outcome.run_dir} -o report.html)",
                  highlight=False, markup=False, soft_wrap=True)


if __name__ == "__main__":
    sys.exit(main())
