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
import json
import signal
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import NoReturn

import anyio
import structlog
from rich.markup import escape
from rich.table import Table

from evalpipe import __version__, logs
from evalpipe._command_start import log_format_asked, started_as_command
from evalpipe.backends.registry import LLMBackend, provider_class
from evalpipe.cli_analysis import (
    add_analysis_commands,
    err,
    out,
    path_or_uri,
    positive_int,
    resolved_run_dir,
    say,
    say_error,
    table_console,
    warn,
)
from evalpipe.cli_batch import add_batch_commands, job_of_run
from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.confirmation import confirmation_needed
from evalpipe.pipeline.job.expand import Plan, plan_job
from evalpipe.pipeline.job.load import LoadedJob, ignored_sweeps, limited_items, load_job
from evalpipe.pipeline.job.projection import TOOL_RESULT_TOKENS
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.output.manifest import resume_command
from evalpipe.pipeline.output.remote_rundir import is_uri, join_uri
from evalpipe.pipeline.output.runlock import RunDirLockedError
from evalpipe.pipeline.output.store import STORE_FILENAME, WriteFailed
from evalpipe.pipeline.running.event_loop import loop_options
from evalpipe.pipeline.running.executor import choose_executor, run_with
from evalpipe.pipeline.running.interrupts import SIGNALS, Interrupts
from evalpipe.pipeline.running.outcome import RunOutcome
from evalpipe.pipeline.running.runner import RunOptions
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
    if log_format_asked(sys.argv[1:] if argv is None else argv) == "json":
        logs.configure("json")  # before anything can say a word: a bad option, a `.env` it cannot read
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
        # Soft-wrapped: a long line stays one line for grep and copy-paste, whatever the width.
        say_error(error.message)
        return EXIT_BAD_INPUT
    except Exception:
        if not logs.json_lines():
            raise
        # A bug, as one JSON line with its traceback rather than a traceback in the middle of JSON lines.
        structlog.get_logger("evalpipe.cli").exception("unexpected error")
        return 1
    except KeyboardInterrupt:  # before the runner took over the signals: nothing was started
        resumable = args is not None and isinstance(getattr(args, "resume", None), Path) and \
            (args.resume / STORE_FILENAME).is_file()
        say(f"interrupted: resume with  {resume_command(args.job, args.resume)}" if args is not None and resumable
             else "interrupted")
        return EXIT_INTERRUPTED


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose complaint about the command line is a JSON line with `--log-format json`."""

    def error(self, message: str) -> NoReturn:
        if logs.json_lines():
            logs.say(f"{self.prog}: {message}", "error", usage=self.format_usage().strip())
            self.exit(EXIT_BAD_INPUT)
        super().error(message)


_LOG_FORMATS = ("console", "json")
_LOG_FORMAT_HELP = "log lines for people (default) or one JSON object per line for machines"
_VERBOSE_HELP = "also log each retry"


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="evalpipe", description="Evaluate LLMs with job files.")
    parser.add_argument("--log-format", choices=_LOG_FORMATS, default="console", help=_LOG_FORMAT_HELP)
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    parser.add_argument("--version", action="version", version=f"evalpipe {__version__}")
    commands: argparse._SubParsersAction[argparse.ArgumentParser] = parser.add_subparsers(
        dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run a job file")
    run.add_argument("job", type=Path)
    run.add_argument("--resume", type=path_or_uri, metavar="RUN_DIR", help="continue this run (results/<job>/latest: "
                     "the job's newest; a URI such as s3://bucket/run with --executor ray); finished tasks are skipped")
    run.add_argument("--retry-errors", action="store_true", help="when resuming, run error rows again")
    run.add_argument("--concurrency", type=positive_int, help="override the job's global concurrency")
    run.add_argument("--out", type=path_or_uri, help="results root (default: the job's output.dir; a URI such as "
                     "s3://bucket/results with --executor ray)")
    run.add_argument("--force", action="store_true", help="resume even though the job file changed")
    run.add_argument("--dry-run", action="store_true", help="validate and plan, call nothing")
    run.add_argument("--limit", type=positive_int, metavar="N", help="run the first N items only (a smoke run)")
    run.add_argument("--yes", action="store_true", help=_YES_HELP)
    run.add_argument("--executor", choices=["local", "ray"], help="where tasks run: in this process (the default) "
                     "or sharded over a Ray cluster (pip install 'evalpipe[ray]'); overrides the job's executor")
    run.add_argument("--address", help="the Ray cluster to join: auto, or ray://HOST:PORT (default: the job's "
                     "executor.address, else a local Ray started for the run)")
    run.add_argument("--shards", type=positive_int, metavar="N", help="split the tasks into N shards (default: "
                     "the cluster's CPUs); a resumed run keeps its count")
    run.add_argument("--fail-on-error", type=_rate, metavar="RATE",
                     help=f"exit {EXIT_FAILED_GATE} when more than RATE (0-1) of the run's rows from a call are errors")
    run.add_argument("--detach", action="store_true", help="backends in batch mode: submit the batches and exit "
                     "(collect them later with `evalpipe collect RUN_DIR`)")
    run.set_defaults(handler=_run, job_from_run=False)

    collect = commands.add_parser("collect", help="poll and collect a run's batches, score and write their rows "
                                  "(the run's job file, resumed)")
    collect.add_argument("resume", type=Path, metavar="RUN_DIR")
    collect.add_argument("--retry-errors", action="store_true", help="submit the error rows' tasks again")
    collect.add_argument("--force", action="store_true", help="resume even though the job file changed")
    collect.add_argument("--detach", action="store_true", help="submit what is left and exit again")
    collect.set_defaults(handler=_run, job_from_run=True, job=None, concurrency=None, out=None, dry_run=False,
                         limit=None, yes=True, fail_on_error=None, executor=None, address=None, shards=None)

    for name, handler, text in (("validate", _validate, "check a job file; call nothing"),
                                ("plan", _plan, "tasks, calls, tokens and cost a job would take")):
        command = commands.add_parser(name, help=text)
        command.add_argument("job", type=Path)
        if name == "plan":
            command.add_argument("--yes", action="store_true", help=_YES_HELP)
        command.set_defaults(handler=handler)

    add_analysis_commands(commands)
    add_batch_commands(commands)
    _add_start_commands(commands)
    commands.add_parser("backends", help="the backends and which keys are set").set_defaults(handler=_backends)
    commands.add_parser("schema", help="the JSON Schema of job files").set_defaults(handler=_schema)
    # Its options are python -m evalpipe.testing's, passed on as they are (`_parse`); -h prints them.
    fake = commands.add_parser("fake-server", help="run the fake provider server (python -m evalpipe.testing; "
                               "fake-server -h lists its options)", add_help=False)
    fake.set_defaults(handler=_fake_server, rest=[])
    # The global flags after the subcommand too (`evalpipe run job.yaml --log-format json`); there, without a
    # default, so that one given before the subcommand stands.
    for command in commands.choices.values():
        command.add_argument("--log-format", choices=_LOG_FORMATS, default=argparse.SUPPRESS, help=_LOG_FORMAT_HELP)
        command.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP)
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
        say(f"skipped backend {backend_id} (optional): {reason}", "warning")
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
    steps = f" × up to {plan.max_steps} model calls (tool loop)" if plan.max_steps > 1 else ""
    table = Table(title=escape(f"{args.job}: {count(plan.tasks, 'task')} ({count(plan.items, 'item')} × "
                               f"{count(plan.param_sets, 'parameter set')} × {count(plan.repeats, 'repeat')} "
                               f"per backend){steps}"))
    batch = any(b.live_cost_usd is not None for b in plan.backends)
    columns = ("backend", "model", "calls", "input tokens", "output tokens", "cost (USD)", *(("live (USD)",) * batch))
    for column in columns:
        # Names are never folded: a model name cut in two cannot be copied into a job file.
        table.add_column(column, justify="left" if column in ("backend", "model") else "right",
                         no_wrap=column in ("backend", "model"))
    for b in plan.backends:
        live = [f"{b.cost_usd if b.live_cost_usd is None else b.live_cost_usd:.4f}"] * batch
        table.add_row(b.backend_id, escape(b.model), f"{b.calls:,}", f"≈{b.input_tokens:,}", f"≤{b.output_tokens:,}",
                      f"{b.cost_usd:.4f}", *live)
    table.add_row("total", "", f"{plan.calls:,}", f"≈{plan.input_tokens:,}", f"≤{plan.output_tokens:,}",
                  f"{plan.cost_usd:.4f}", *[f"{plan.cost_usd + plan.batch_saving_usd:.4f}"] * batch)
    table_console().print(table)
    for line in plan_notes(plan):
        say(line)
    if plan.tasks_skipped:
        say(f"{count(plan.tasks_skipped, 'task')} of skipped backends {'is' if plan.tasks_skipped == 1 else 'are'} "
             "not counted above")
    over = plan.over_budget()
    for line in over:
        say(f"over budget: {line}; the run stops starting tasks before its spend could cross the budget, so it "
            "may not finish (raise the budget, or lower max_tokens, items or repeats)", "warning")
    # Non-zero, so that a script running `plan` before `run` stops before a run that cannot finish.
    if over:
        return EXIT_BUDGET
    return 0 if _confirmed(args, loaded, plan) else EXIT_BAD_INPUT


def plan_notes(plan: Plan) -> list[str]:
    """What the plan's figures are over, beyond the table: a tool loop's worst and one-call cases, what
    batch mode saves, and the share of the input that is tool definitions and images."""
    notes = []
    if plan.max_steps > 1:
        one = plan.one_step
        notes.append(f"worst case above: every task takes all {plan.max_steps} steps, each step's prompt grown by the "
                     f"earlier answers (at max_tokens) and tool results (≈{TOOL_RESULT_TOKENS} tokens each, an "
                     "estimate); the budget guard counts this worst case")
        notes.append(f"if every task answers in one call: {one.calls:,} calls, ≈{one.input_tokens:,} input and "
                     f"≤{one.output_tokens:,} output tokens, {one.cost_usd:.4f} USD")
    if any(b.live_cost_usd is not None for b in plan.backends):
        live_total = plan.cost_usd + plan.batch_saving_usd
        share = plan.batch_saving_usd / live_total if live_total else 0.0
        notes.append(f"batch saves ${plan.batch_saving_usd:.4f} ({share:.0%}) against the same calls live; answers "
                     "come within the vendors' batch windows (up to 24 h), not at once")
    if plan.tool_tokens or plan.image_tokens:
        parts = [f"tool definitions ≈{plan.tool_tokens:,}"] if plan.tool_tokens else []
        if plan.image_tokens:
            parts.append(f"{count(plan.images, 'image')} ≈{plan.image_tokens:,} (each vendor's image rule)")
        notes.append(f"input tokens include {' and '.join(parts)}")
    return notes


def _confirmed(args: argparse.Namespace, loaded: LoadedJob, plan: Plan | None = None) -> bool:
    """False, with a line saying how to go ahead, for a job past its `confirm_above` without `--yes`."""
    if getattr(args, "yes", False):
        return True
    reason = confirmation_needed(loaded.spec, plan or plan_job(loaded))
    if reason is not None:
        say_error(reason)
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
        warn(warning)


def _run(args: argparse.Namespace) -> int:
    if args.job_from_run:  # `collect RUN_DIR`: the job file the run was started from
        args.resume = resolved_run_dir(args.resume)
        args.job = job_of_run(args.resume)
    loaded = load_job(args.job)  # every mistake in the job file stops here, before any call
    _warn_ignored_sweeps(loaded)
    _warn_concurrency_cap(loaded, args.concurrency)
    if args.limit is not None:
        loaded = limited_items(loaded, args.limit)
    # A URI (s3://...) is the ray executor's to read and write; everything local stays a Path.
    run_uri: str | None = args.resume if is_uri(args.resume) else None
    out_uri: str | None = args.out if is_uri(args.out) else None
    if args.out is None and args.resume is None and is_uri(loaded.spec.output.dir):
        out_uri = loaded.spec.output.dir
    if run_uri is not None:
        args.resume = None
    if out_uri is not None:
        args.out = None
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
                         retry_errors=args.retry_errors, force=args.force, interrupts=interrupts, detach=args.detach)
    executor = choose_executor(loaded.spec.executor, args.resume, kind=args.executor, address=args.address,
                               shards=args.shards, uri=run_uri or out_uri)
    with ProgressDisplay(err) as on_row:
        outcome = anyio.run(partial(run_with, executor, loaded, options, on_row, item_limit=args.limit,
                                    out_uri=out_uri, run_uri=run_uri), backend_options=loop_options())
    # A run at a URI was finished in a scratch copy: what the user sees is the URI.
    where: str | Path = run_uri or (join_uri(out_uri, loaded.spec.name, outcome.run_id) if out_uri else
                                    outcome.run_dir)
    _summary(outcome, loaded, where)
    if outcome.write_failure is not None:
        say(f"stopped: {outcome.write_failure}; make room, then resume with  {outcome.resume_command}")
        return EXIT_WRITE_FAILED
    if interrupts.count and outcome.state == "completed":  # a signal after the last task: nothing to resume
        say(f"interrupted after the run completed: {where}")
        return EXIT_INTERRUPTED
    if outcome.state == "submitted" and not interrupts.count:
        say(f"batches submitted: collect them with  evalpipe collect {outcome.run_dir}  "
            f"(see them with  evalpipe status {outcome.run_dir})")
        return 0
    if outcome.state == "interrupted" or interrupts.count:
        say(f"interrupted: resume with  {outcome.resume_command}")
        return EXIT_INTERRUPTED
    if outcome.state == "budget_exhausted":
        budget = loaded.spec.budget
        limits = ", ".join(f"{name} {value:g}" for name, value in (("max_cost_usd", budget.max_cost_usd),
                                                                  ("max_tokens", budget.max_tokens)) if value)
        say(f"stopped at the budget ({limits}): {outcome.executed} of {outcome.total_tasks} tasks ran, "
             f"${outcome.cost_usd:.4f} and {outcome.input_tokens + outcome.output_tokens:,} tokens spent; raise it "
             f"and resume with  {outcome.resume_command}", "warning")
        return EXIT_BUDGET
    if outcome.executed == 0:
        say("nothing ran: the run has no row from a call")
        return EXIT_NOTHING_RAN
    if args.fail_on_error is not None and outcome.error_rate > args.fail_on_error:
        say(f"error rate {outcome.error_rate:.1%} ({outcome.counts.get('error', 0)} of {outcome.executed} rows) "
             f"is above --fail-on-error {args.fail_on_error:g}")
        return EXIT_FAILED_GATE
    return 0


def _summary(outcome: RunOutcome, loaded: LoadedJob, where: str | Path) -> None:
    for backend_id, reason in outcome.skipped_backends.items():
        if backend_id not in loaded.skipped:  # already said before the run started
            say(f"skipped backend {backend_id} (optional): {reason}", "warning")
    table = Table(title=f"run {outcome.run_id}: {outcome.state}")
    for column in ("tasks", "ok", "errors", "skipped", "cost (USD)"):
        table.add_column(column, justify="right")
    table.add_row(str(outcome.total_tasks), str(outcome.counts.get("ok", 0)), str(outcome.counts.get("error", 0)),
                  str(outcome.counts.get("skipped", 0)), f"{outcome.cost_usd:.4f}")
    out.print(table)
    for name, path in outcome.outputs.items():
        shown = join_uri(where, str(path.relative_to(outcome.run_dir))) if isinstance(where, str) else path
        out.print(f"{name}: {shown}", highlight=False, markup=False, soft_wrap=True)
    if outcome.counts.get("ok", 0):
        out.print(f"next: evalpipe summary {where}  (or: evalpipe report {where} -o report.html)",
                  highlight=False, markup=False, soft_wrap=True)

def _load_dotenv() -> None:
    """Variables from `.env` in the working directory (python-dotenv's format); one already set wins.

    Values are never printed: `evalpipe backends` names the variable a key came from, not the key."""
    path = Path.cwd() / ".env"
    if path.is_file():
        from dotenv import load_dotenv

        load_dotenv(path, override=False)


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
    warn(f"{source} {asked} is more than the backends allow in flight together ({ceiling}; "
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
