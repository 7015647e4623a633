"""`evalpipe`: run, check and plan jobs from the shell. Parsing and printing only: the work is in
the pipeline.

Exit codes: 0 done; 1 a gate failed (`compare --fail-on-regression`, `run --fail-on-error`); 2 a bad
job file or option, a backend that cannot run (its key unset, its model file absent) and is not
`optional`, or a job past its `confirm_above` (tasks, projected cost) without `--yes` (nothing was
called); 3 nothing to run (every backend skipped, or the run has no row from a call); 4 the budget:
the run stopped at it, or `plan` projects more than it allows; 5 the run directory is in use by
another `evalpipe run` (nothing was called); 6 a write failed (disk full): the run stopped and can be
resumed once there is room; 130 interrupted (SIGINT or SIGTERM, at any moment)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import anyio
from rich.markup import escape
from rich.table import Table

from evalpipe import __version__, logs
from evalpipe._command_start import started_as_command
from evalpipe.backends.registry import LLMBackend, provider_class
from evalpipe.cli_analysis import (
    add_analysis_commands,
    err,
    out,
    positive_int,
    resolved_run_dir,
    say,
    table_console,
)
from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.confirmation import confirmation_needed
from evalpipe.pipeline.job.dataset import Dataset
from evalpipe.pipeline.job.expand import Plan, plan_job
from evalpipe.pipeline.job.load import LoadedJob, ignored_sweeps, load_job
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.output.manifest import resume_command
from evalpipe.pipeline.output.runlock import RunDirLockedError
from evalpipe.pipeline.output.store import STORE_FILENAME, WriteFailed
from evalpipe.pipeline.running.event_loop import loop_options
from evalpipe.pipeline.running.interrupts import SIGNALS, Interrupts
from evalpipe.pipeline.running.runner import RunOptions, RunOutcome, run_job
from evalpipe.progress import ProgressDisplay, count
from evalpipe.redaction import header_value_problem

EXIT_FAILED_GATE = 1  # `run --fail-on-error`: the run's error rate is above the rate given
EXIT_BAD_INPUT = 2
EXIT_NOTHING_RAN = 3
EXIT_BUDGET = 4
EXIT_RUN_DIR_BUSY = 5
EXIT_WRITE_FAILED = 6
EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `evalpipe` command."""
    # From here to the exit one handler takes SIGINT and SIGTERM: before a run it raises KeyboardInterrupt
    # (caught below), during a run the runner stops, after it the final lines still print.
    interrupts = Interrupts().install()
    try:
        code = _main(argv, interrupts)
    finally:
        if started_as_command():
            # Python resets every handler but "ignore" while it exits, and a signal then (its worker threads
            # still take them) would end the process with -2 and no word.
            for signum in SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
        else:
            interrupts.uninstall()
    if interrupts.count and code not in (EXIT_INTERRUPTED, EXIT_WRITE_FAILED):  # came after the last line was decided
        say("interrupted")
        return EXIT_INTERRUPTED
    return code


def _main(argv: Sequence[str] | None, interrupts: Interrupts) -> int:
    args: argparse.Namespace | None = None
    try:
        _load_dotenv()
        args = _parse(argv)
        logs.configure(args.log_format, args.verbose)
        args.interrupts = interrupts
        code: int = args.handler(args)
        return code
    except RunDirLockedError as error:
        say(f"error: {error.message}")
        return EXIT_RUN_DIR_BUSY
    except WriteFailed as error:  # before the run could record anything
        say(f"stopped: {error.message}")
        return EXIT_WRITE_FAILED
    except ConfigError as error:
        # Escaped: messages quote the user's own text, and `[/x]` in it must print, not break the markup.
        # Soft-wrapped: a long line stays one line for grep and copy-paste, whatever the width.
        err.print(f"[red]error:[/red] {escape(error.message)}", highlight=False, markup=True, soft_wrap=True)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:  # before the runner took over the signals: nothing was started
        resumable = args is not None and getattr(args, "resume", None) is not None and \
            (args.resume / STORE_FILENAME).is_file()
        say(f"interrupted: resume with  {resume_command(args.job, args.resume)}" if args is not None and resumable
             else "interrupted")
        return EXIT_INTERRUPTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evalpipe", description="Evaluate LLMs with job files.")
    parser.add_argument("--log-format", choices=["console", "json"], default="console",
                        help="log lines for people (default) or one JSON object per line for machines")
    parser.add_argument("-v", "--verbose", action="store_true", help="also log each retry")
    parser.add_argument("--version", action="version", version=f"evalpipe {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a job file")
    run.add_argument("job", type=Path)
    run.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue this run (results/<job>/latest: the "
                     "job's newest); finished tasks are skipped")
    run.add_argument("--retry-errors", action="store_true", help="when resuming, run error rows again")
    run.add_argument("--concurrency", type=positive_int, help="override the job's global concurrency")
    run.add_argument("--out", type=Path, help="results root (default: the job's output.dir)")
    run.add_argument("--force", action="store_true", help="resume even though the job file changed")
    run.add_argument("--dry-run", action="store_true", help="validate and plan, call nothing")
    run.add_argument("--limit", type=positive_int, metavar="N", help="run the first N items only (a smoke run)")
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

    add_analysis_commands(commands)
    _add_start_commands(commands)
    commands.add_parser("backends", help="the backends and which keys are set").set_defaults(handler=_backends)
    commands.add_parser("schema", help="the JSON Schema of job files").set_defaults(handler=_schema)
    # Its options are python -m evalpipe.testing's, passed on as they are (`_parse`); -h prints them.
    fake = commands.add_parser("fake-server", help="run the fake provider server (python -m evalpipe.testing; "
                               "fake-server -h lists its options)", add_help=False)
    fake.set_defaults(handler=_fake_server, rest=[])
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; what follows `fake-server` goes to the fake server's own parser (an argparse
    REMAINDER would refuse an option like `--port` there)."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "fake-server":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.rest = [*getattr(args, "rest", []), *extra] if args.command == "fake-server" else getattr(args, "rest", None)
    return args


_YES_HELP = "go ahead with a job past its confirm_above (default: 100,000 tasks or $10 projected)"


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a rate between 0 and 1, got {text!r}")
    return value


def _skipped(loaded: LoadedJob) -> bool:
    """Print a line per optional backend that cannot run here; True when no evaluated backend is left."""
    for backend_id, reason in loaded.skipped.items():
        say(f"skipped backend {backend_id} (optional): {reason}")
    if all(b.id in loaded.skipped for b in loaded.spec.backends):
        say("nothing to run: every backend of the job is skipped")
        return True
    return False


def _validate(args: argparse.Namespace) -> int:
    loaded = load_job(args.job)
    spec = loaded.spec
    _warn_ignored_sweeps(loaded)
    _warn_concurrency_cap(loaded, None)
    if _skipped(loaded):
        return EXIT_NOTHING_RAN
    runnable = len(spec.backends) - sum(b.id in loaded.skipped for b in spec.backends)
    out.print(f"{args.job}: valid — {count(len(loaded.dataset), 'item')}, {runnable} of "
              f"{count(len(spec.backends), 'backend')} can run here, "
              f"{count(len(spec.parameters.expanded()), 'parameter set')}, {count(spec.repeats, 'repeat')}",
              highlight=False, markup=False, soft_wrap=True)
    return 0


def _plan(args: argparse.Namespace, loaded: LoadedJob | None = None) -> int:
    loaded = loaded or load_job(args.job)
    if _skipped(loaded):
        return EXIT_NOTHING_RAN
    plan = plan_job(loaded)
    table = Table(title=escape(f"{args.job}: {count(plan.tasks, 'task')} ({count(plan.items, 'item')} × "
                               f"{count(plan.param_sets, 'parameter set')} × {count(plan.repeats, 'repeat')} "
                               "per backend)"))
    for column in ("backend", "model", "calls", "input tokens", "output tokens", "cost (USD)"):
        # Names are never folded: a model name cut in two cannot be copied into a job file.
        table.add_column(column, justify="left" if column in ("backend", "model") else "right",
                         no_wrap=column in ("backend", "model"))
    for b in plan.backends:
        table.add_row(b.backend_id, escape(b.model), f"{b.calls:,}", f"≈{b.input_tokens:,}", f"≤{b.output_tokens:,}",
                      f"{b.cost_usd:.4f}")
    table.add_row("total", "", f"{plan.calls:,}", f"≈{plan.input_tokens:,}", f"≤{plan.output_tokens:,}",
                  f"{plan.cost_usd:.4f}")
    table_console().print(table)
    if plan.tasks_skipped:
        say(f"{count(plan.tasks_skipped, 'task')} of skipped backends {'is' if plan.tasks_skipped == 1 else 'are'} "
             "not counted above")
    over = plan.over_budget()
    for line in over:
        say(f"over budget: {line}; the run stops starting tasks before its spend could cross the budget, so it "
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
        table.add_column(column, no_wrap=column != "key")
    for backend in LLMBackend:
        cls = provider_class(backend)
        variables = " or ".join(v for v in (cls.api_key_env, *cls.api_key_env_aliases) if v)
        found = cls.key_from_environment()
        state = "not needed" if not cls.requires_api_key else (f"set ({found[0]})" if found else "missing")
        if found and (problem := header_value_problem(found[1])):  # refused by build(): say so here too
            state = f"unusable: {found[0]} {problem}"
        table.add_row(backend.value, cls.default_model or "(required)", variables, state)  # never the key itself
    table_console().print(table)
    return 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(JobSpec.model_json_schema(), indent=2))
    return 0


def _fake_server(args: argparse.Namespace) -> int:
    from evalpipe.testing.__main__ import main as fake_main

    return fake_main(args.rest)


def _warn_ignored_sweeps(loaded: LoadedJob) -> None:
    for warning in ignored_sweeps(loaded.spec):
        say(f"warning: {warning}")


def _run(args: argparse.Namespace) -> int:
    loaded = load_job(args.job)  # every mistake in the job file stops here, before any call
    _warn_ignored_sweeps(loaded)
    _warn_concurrency_cap(loaded, args.concurrency)
    if args.limit is not None:
        loaded = _limited(loaded, args.limit)
    if args.resume is not None:
        args.resume = resolved_run_dir(args.resume)
    if args.dry_run:
        return _plan(args, loaded)
    if _skipped(loaded):
        return EXIT_NOTHING_RAN
    if not _confirmed(args, loaded):
        return EXIT_BAD_INPUT
    interrupts: Interrupts = args.interrupts
    options = RunOptions(out_root=args.out, run_dir=args.resume, concurrency=args.concurrency,
                         retry_errors=args.retry_errors, force=args.force, interrupts=interrupts)
    with ProgressDisplay(err) as on_row:
        outcome = anyio.run(run_job, loaded, options, on_row, backend_options=loop_options())
    _summary(outcome, loaded)
    if outcome.write_failure is not None:
        say(f"stopped: {outcome.write_failure}; make room, then resume with  {outcome.resume_command}")
        return EXIT_WRITE_FAILED
    if interrupts.count and outcome.state == "completed":  # a signal after the last task: nothing to resume
        say(f"interrupted after the run completed: {outcome.run_dir}")
        return EXIT_INTERRUPTED
    if outcome.state == "interrupted" or interrupts.count:
        err.print(f"interrupted: resume with  {outcome.resume_command}", highlight=False, markup=False, soft_wrap=True)
        return EXIT_INTERRUPTED
    if outcome.state == "budget_exhausted":
        budget = loaded.spec.budget
        limits = ", ".join(f"{name} {value:g}" for name, value in (("max_cost_usd", budget.max_cost_usd),
                                                                  ("max_tokens", budget.max_tokens)) if value)
        say(f"stopped at the budget ({limits}): {outcome.executed} of {outcome.total_tasks} tasks ran, "
             f"${outcome.cost_usd:.4f} and {outcome.input_tokens + outcome.output_tokens:,} tokens spent; raise it "
             f"and resume with  {outcome.resume_command}")
        return EXIT_BUDGET
    if outcome.executed == 0:
        say("nothing ran: the run has no row from a call")
        return EXIT_NOTHING_RAN
    if args.fail_on_error is not None and outcome.error_rate > args.fail_on_error:
        say(f"error rate {outcome.error_rate:.1%} ({outcome.counts.get('error', 0)} of {outcome.executed} rows) "
             f"is above --fail-on-error {args.fail_on_error:g}")
        return EXIT_FAILED_GATE
    return 0


def _summary(outcome: RunOutcome, loaded: LoadedJob) -> None:
    for backend_id, reason in outcome.skipped_backends.items():
        if backend_id not in loaded.skipped:  # already said before the run started
            say(f"skipped backend {backend_id} (optional): {reason}")
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

def _load_dotenv() -> None:
    """Variables from `.env` in the working directory (python-dotenv's format); one already set wins.

    Values are never printed: `evalpipe backends` names the variable a key came from, not the key."""
    path = Path.cwd() / ".env"
    if path.is_file():
        from dotenv import load_dotenv

        load_dotenv(path, override=False)


def _limited(loaded: LoadedJob, limit: int) -> LoadedJob:
    """`loaded` with only its first `limit` items (the job's own `dataset.limit` if smaller)."""
    dataset = loaded.spec.dataset
    limited = dataset.model_copy(update={"limit": min(limit, dataset.limit or limit)})
    return dataclasses.replace(loaded, spec=loaded.spec.model_copy(update={"dataset": limited}),
                               dataset=Dataset(limited, loaded.base_dir))


def _warn_concurrency_cap(loaded: LoadedJob, override: int | None) -> None:
    """Say when the concurrency asked for (job file or --concurrency) is more than the backends allow in flight.

    Each backend's `max_concurrency` (default 8) protects that vendor's rate limits, so a job-wide value does
    not raise it: the user raises it per backend, knowing their limits. What must not happen is a silent cap."""
    spec = loaded.spec
    if override is None and "concurrency" not in spec.model_fields_set:
        return  # the default job-wide cap is not a request
    asked = override or spec.concurrency
    runnable = [b for b in spec.backends if b.id not in loaded.skipped]
    ceiling = sum(b.max_concurrency for b in runnable)
    if not runnable or asked <= ceiling:
        return
    limits = ", ".join(f"{b.id}: {b.max_concurrency}" + ("" if "max_concurrency" in b.model_fields_set
                                                         else " (the default)") for b in runnable)
    source = "--concurrency" if override else "concurrency"
    say(f"warning: {source} {asked} is more than the backends allow in flight together ({ceiling}; "
         f"max_concurrency {limits}): at most {ceiling} calls run at once; set max_concurrency on a backend to "
         "raise its share")


def _add_start_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    init = commands.add_parser("init", help="write a small job and dataset to start from (runs on the local "
                               "backend as written)")
    init.add_argument("directory", type=Path, nargs="?", default=Path(),
                      help="where to write job.yaml and items.jsonl (default: here)")
    init.set_defaults(handler=_init)


def _init(args: argparse.Namespace) -> int:
    from evalpipe.starter import write_starter

    paths = write_starter(args.directory)
    for path in paths:
        out.print(f"wrote {path}", highlight=False, markup=False, soft_wrap=True)
    out.print(f"next: evalpipe validate {paths[0]}  then  evalpipe run {paths[0]} --limit 1", highlight=False,
              markup=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
