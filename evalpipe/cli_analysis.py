"""The CLI's commands over finished runs: summary, compare, report, history, runs and view; and the
parts of the command line every command shares (its consoles, `JOB_DIR/latest`, argument types).

Printing only: the numbers come from `evalpipe.analysis`, imported on use, so `evalpipe run` does not pay
for polars-based modules it never calls."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from evalpipe import logs
from evalpipe.errors import ConfigError
from evalpipe.pipeline.output.remote_rundir import is_uri
from evalpipe.progress import count

EXIT_REGRESSION = 1  # `compare --fail-on-regression`: B is worse than A beyond the threshold
out = Console(emoji=False)
err = Console(stderr=True, emoji=False)  # `job.yaml:100:` is a location, not the :100: emoji


def say(text: str, level: str = "info", **fields: Any) -> None:
    """One plain line on stderr (with `--log-format json`, a JSON object: `event` the text, with `fields`)."""
    if logs.json_lines():
        logs.say(text, level, **fields)
    else:
        err.print(text, highlight=False, markup=False, soft_wrap=True)


def warn(text: str) -> None:
    """`warning: TEXT` on stderr (a JSON object of level warning with `--log-format json`)."""
    if logs.json_lines():
        logs.say(text, "warning")
    else:
        say(f"warning: {text}")


def say_error(text: str) -> None:
    """`error: TEXT` on stderr, the word in red on a terminal (a JSON object of level error with
    `--log-format json`)."""
    if logs.json_lines():
        logs.say(text, "error")
    else:
        # Escaped: messages quote the user's own text, and `[/x]` in it must print, not break the markup.
        err.print(f"[red]error:[/red] {escape(text)}", highlight=False, markup=True, soft_wrap=True)


def add_analysis_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register summary, compare, report, history, runs and view."""
    formats = ["table", "csv", "json", "markdown"]
    summary = commands.add_parser("summary", help="per backend and parameter set: scores with 95%% CIs, errors, "
                                  "latency, tokens, cost")
    summary.add_argument("run_dir", type=path_or_uri, help="a run directory, or a run's URI (s3://bucket/run)")
    summary.add_argument("--format", choices=formats, default="table", help="output format (default: table)")
    summary.set_defaults(handler=_summary_command)

    compare = commands.add_parser(
        "compare", help="is B better than A? paired differences with 95%% CIs that resample items",
        description="Compare two runs (RUN_A RUN_B), or two selections of one run's rows (RUN --a COLUMN=VALUE "
                    "--b COLUMN=VALUE). Pairs share the item, repeat and turn, and every backend_id and param_set "
                    "that --a/--b do not choose; intervals of B − A resample items, not pairs.")
    compare.add_argument("run_a", type=path_or_uri,
                         help="the baseline run directory (or the one run --a and --b choose from)")
    compare.add_argument("run_b", type=path_or_uri, nargs="?",
                         help="the run directory compared with it (default: RUN_A)")
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
    compare.add_argument("--top", type=positive_int, default=5,
                         help="most regressed and most improved pairs shown per group (default: 5)")
    compare.add_argument("--format", choices=formats, default="table", help="output format (default: table)")
    compare.set_defaults(handler=_compare_command)

    report = commands.add_parser("report", help="a self-contained HTML report of a run (and its comparison)")
    report.add_argument("run_dir", type=path_or_uri)
    report.add_argument("--compare", type=path_or_uri, metavar="RUN_B", help="also compare RUN_B against RUN_DIR")
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
    runs = commands.add_parser("runs", help="the runs under a results directory, newest first")
    runs.add_argument("directory", type=Path, nargs="?", default=Path("results"),
                      help="the results directory with <job>/<run_id>/ folders (default: results)")
    runs.set_defaults(handler=_runs)
    view = commands.add_parser("view", help="browse runs in a local web app (read-only; Ctrl-C stops it)")
    view.add_argument("directory", type=Path, nargs="?", default=Path("results"),
                      help="the results directory with <job>/<run_id>/ folders (default: results)")
    view.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine "
                      "only)")
    view.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    view.set_defaults(handler=_view)


# The analysis commands import polars-based modules on use: `evalpipe run` should not pay for them.
def _summary_command(args: argparse.Namespace) -> int:
    from evalpipe.analysis.runs import open_run
    from evalpipe.analysis.summary import summarize
    from evalpipe.analysis.tables import summary_renderable, summary_text

    with contextlib.ExitStack() as stack:
        summary = summarize(open_run(_local_run_dir(stack, args.run_dir)))
    if args.format == "table":
        table_console().print(summary_renderable(summary))
    else:
        if summary.partial and args.format == "csv":  # CSV has no room for the label
            say("partial: " + "; ".join(summary.warnings), "warning")
        sys.stdout.write(summary_text(summary, args.format))
    return 0


def _compare_command(args: argparse.Namespace) -> int:
    from evalpipe.analysis.compare import compare_sides, metric_column
    from evalpipe.analysis.pairing import Side, parse_condition
    from evalpipe.analysis.runs import open_run
    from evalpipe.analysis.tables import comparison_renderable, comparison_text, gate_message

    if args.run_b is None and not (args.a and args.b):
        raise ConfigError("compare with one run compares two selections of its rows: give both --a and --b, "
                          "e.g. --a backend_id=gpt-4.1 --b backend_id=gpt-4.1-mini")
    with contextlib.ExitStack() as stack:
        run_a = open_run(_local_run_dir(stack, args.run_a))
        run_b = run_a if args.run_b is None else open_run(_local_run_dir(stack, args.run_b))
        side_a = Side(run_a, tuple(parse_condition(text) for text in args.a), "--a")
        side_b = Side(run_b, tuple(parse_condition(text) for text in args.b), "--b")
        comparison = compare_sides(side_a, side_b, pair_on=args.pair_on, gate_metric=metric_column(args.metric),
                                   threshold=args.fail_on_regression, top=args.top)
    if args.format == "table":
        table_console().print(comparison_renderable(comparison))
    else:
        sys.stdout.write(comparison_text(comparison, args.format))
        message = gate_message(comparison)
        if message and args.format == "csv":
            say(message, "warning" if comparison.gate_failed else "info")
    return EXIT_REGRESSION if comparison.gate_failed else 0


def _report_command(args: argparse.Namespace) -> int:
    from evalpipe.analysis.compare import compare_runs, metric_column
    from evalpipe.analysis.history import build_history
    from evalpipe.analysis.report import write_report
    from evalpipe.analysis.runs import open_run
    from evalpipe.analysis.summary import summarize

    with contextlib.ExitStack() as stack:
        run = open_run(_local_run_dir(stack, args.run_dir))
        comparison = None
        if args.compare is not None:
            comparison = compare_runs(run, open_run(_local_run_dir(stack, args.compare)), pair_on=args.pair_on,
                                      gate_metric=metric_column(args.metric), threshold=args.fail_on_regression)
        history = build_history(_job_dir(args.history)) if args.history is not None else None
        path = write_report(run, summarize(run), args.output, comparison, history=history)
    out.print(f"report: {path}", highlight=False, markup=False, soft_wrap=True)
    return 0


def _history_command(args: argparse.Namespace) -> int:
    from evalpipe.analysis.history import build_history
    from evalpipe.analysis.tables import history_renderable, history_text

    history = build_history(_job_dir(args.job_dir))
    if args.format == "table":
        table_console().print(history_renderable(history))
    else:
        if args.format == "csv":  # CSV has no room for the labels
            for run in history.runs:
                if run.label:
                    say(f"{run.name}: {run.label}", "warning")
        sys.stdout.write(history_text(history, args.format))
    return 0


def _view(args: argparse.Namespace) -> int:
    # Before polars loads (the view package imports it): a long-running viewer's footprint is then that of
    # the query at hand, not of its largest.
    from evalpipe.view.allocator import return_freed_memory

    return_freed_memory()
    try:
        import uvicorn

        from evalpipe.view.app import create_app
    except ImportError as error:
        raise ConfigError(f"evalpipe view needs the 'view' extra ({error.name} is missing): "
                          "pip install 'evalpipe[view]'") from None

    app = create_app(args.directory)  # ConfigError for a directory that does not exist, before listening
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        warn(f"listening on {args.host}: anyone who can reach it can read every answer in {args.directory}")
    out.print(f"evalpipe view: http://{args.host}:{args.port}/ (Ctrl-C to stop)", highlight=False, markup=False,
              soft_wrap=True)
    # With JSON lines, uvicorn's records go to the root logger, where `logs` renders them as JSON.
    if logs.json_lines():
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", log_config=None)
    else:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _runs(args: argparse.Namespace) -> int:
    from evalpipe.analysis.catalog import LATEST, check_results_dir, list_runs

    entries = list_runs(check_results_dir(args.directory))
    if not entries:
        say(f"no runs under {args.directory}")
        return 0
    table = Table(title=escape(f"runs under {args.directory}: {count(len(entries), 'run')}"))
    for column in ("run directory", "state", "started", "rows", "errors", "cost (USD)"):
        table.add_column(column, no_wrap=column == "run directory",
                         justify="left" if column in ("run directory", "state", "started") else "right")
    for entry in entries:
        path = args.directory / entry.job / entry.run_id
        table.add_row(escape(f"{path}" + (f"  ({LATEST})" if entry.latest else "")), entry.state,
                      entry.started_at or "", "" if entry.rows is None else f"{entry.rows:,}",
                      "" if entry.errors is None else f"{entry.errors:,}",
                      "" if entry.cost_usd is None else f"{entry.cost_usd:.4f}")
    table_console().print(table)
    return 0


def resolved_run_dir(run_dir: Path) -> Path:
    """`run_dir`, with `JOB_DIR/latest` standing for the job's newest run."""
    from evalpipe.analysis.catalog import LATEST, resolve_latest

    return resolve_latest(run_dir) if run_dir.name == LATEST else run_dir


def _local_run_dir(stack: contextlib.ExitStack, location: str | Path) -> Path:
    """A run directory to read: `location` itself (`JOB_DIR/latest` resolved), or for a run at a URI its
    manifest and Parquet files downloaded to a temporary directory that `stack` removes."""
    if isinstance(location, str):
        from evalpipe.pipeline.output.remote_rundir import downloaded_for_analysis

        return stack.enter_context(downloaded_for_analysis(location))
    return resolved_run_dir(location)


def path_or_uri(text: str) -> str | Path:
    """An argparse type: a filesystem URI (`s3://bucket/prefix`, `file:///abs/path`) as it is, else a path."""
    return text if is_uri(text) else Path(text)


def _job_dir(path: Path) -> Path:
    """A job's results directory; `JOB_DIR/latest` (no such directory) stands for JOB_DIR itself."""
    from evalpipe.analysis.catalog import LATEST

    return path.parent if path.name == LATEST and not path.exists() else path


def table_console() -> Console:
    """The terminal's console; for a pipe or a file, one wide enough that a table keeps its natural width
    (rich assumes 80 columns there, which would fold every number of a wide table)."""
    return out if out.is_terminal else Console(width=250)


def _condition(text: str) -> str:
    """`COLUMN=VALUE` as given (checked against the run's columns once it is open)."""
    column, equals, _ = text.partition("=")
    if not equals or not column.strip():
        raise argparse.ArgumentTypeError(f"expected COLUMN=VALUE (like backend_id=gpt-4.1 or param_set=calm), "
                                         f"got {text!r}")
    return text


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of at least 0, got {text!r}")
    return value
