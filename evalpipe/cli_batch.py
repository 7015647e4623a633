"""`evalpipe status RUN_DIR`: a run's batches (backends in `mode: batch`) as its store last recorded them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from evalpipe.cli_analysis import out, resolved_run_dir, table_console
from evalpipe.errors import ConfigError
from evalpipe.pipeline.output.manifest import read_manifest
from evalpipe.pipeline.output.store import BatchChunk, RunStore


def add_batch_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser("status", help="a run's state and its batches (submitted, running, collected)")
    status.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    status.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    run_dir = resolved_run_dir(args.run_dir)
    chunks = RunStore.read_batch_chunks(run_dir)
    try:
        manifest = read_manifest(run_dir)
    except ConfigError:
        manifest = None  # killed before its first manifest: the store still tells the batches
    if manifest is not None:
        counts = ", ".join(f"{n:,} {status}" for status, n in manifest.counts.items())
        total = f" of {manifest.tasks_total:,} tasks" if manifest.tasks_total is not None else ""
        out.print(f"run {manifest.run_id}: {manifest.state}; rows{total}: {counts}; ${manifest.cost_usd:.4f}",
                  highlight=False, markup=False, soft_wrap=True)
    if not chunks:
        out.print("no batches", highlight=False, markup=False)
        return 0
    table = Table(title=f"batches of {escape(str(run_dir))} (as last polled)")
    for column in ("backend", "batch", "vendor status", "step", "requests", "counts", "submitted"):
        table.add_column(column, no_wrap=column in ("backend", "batch"))
    now = time.time()
    for chunk in chunks:
        table.add_row(chunk.backend_id, escape(chunk.batch_id or "-"), escape(chunk.vendor_status or "-"),
                      chunk.step, f"{len(chunk.entries):,}", _counts(chunk), _age(chunk, now))
    table_console().print(table)
    for chunk in chunks:
        if chunk.detail:
            out.print(f"{chunk.batch_id or chunk.chunk_id}: {chunk.detail}", highlight=False, markup=False,
                      soft_wrap=True)
    if any(chunk.step != "collected" for chunk in chunks):
        out.print(f"collect with  evalpipe collect {run_dir}", highlight=False, markup=False, soft_wrap=True)
    return 0


def _counts(chunk: BatchChunk) -> str:
    return " ".join(f"{name} {n:,}" for name, n in (chunk.counts or {}).items()) or "-"


def _age(chunk: BatchChunk, now: float) -> str:
    """How long ago the batch was submitted: `3h 12m ago`."""
    if chunk.submitted_at is None:
        return "not yet"
    seconds = int(max(now - chunk.submitted_at, 0))
    hours, minutes = seconds // 3600, seconds % 3600 // 60
    return f"{hours}h {minutes:02d}m ago" if hours else f"{minutes}m {seconds % 60:02d}s ago"


def job_of_run(run_dir: Path) -> Path:
    """The job file `run_dir` was started from (its manifest says), for `evalpipe collect`."""
    manifest = read_manifest(run_dir)
    if manifest.job_file is None:
        raise ConfigError(f"{run_dir} was not started from a job file: resume it with  evalpipe run JOB --resume "
                          f"{run_dir}")
    job = Path(manifest.job_file)
    if not job.is_file():
        raise ConfigError(f"{run_dir} was started from {job}, which is gone: resume it with  evalpipe run JOB "
                          f"--resume {run_dir}")
    return job
