"""The executor seam: where a job's tasks run. `local` (the default) is the in-process runner; `ray`
shards the job over a Ray cluster (`ray_executor`, imported only when asked for, so Ray stays optional).

The job file's `executor:` says which, the command line's `--executor`, `--address` and `--shards`
override it, and a resumed sharded run goes on sharded with the shard count it started with."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.load import LoadedJob
from evalpipe.pipeline.job.spec import ExecutorSpec
from evalpipe.pipeline.output.sharded import SHARD_COUNT_META
from evalpipe.pipeline.output.store import STORE_FILENAME, RunStore
from evalpipe.pipeline.running.runner import RunOptions, RunOutcome, RunProgress, run_job


def sharded_run(run_dir: Path | None) -> bool:
    """Whether `run_dir` holds a run that was sharded (and so resumes sharded)."""
    if run_dir is None or not (run_dir / STORE_FILENAME).is_file():
        return False
    return SHARD_COUNT_META in RunStore.read_meta(run_dir)


def choose_executor(job: ExecutorSpec, run_dir: Path | None, *, kind: str | None = None, address: str | None = None,
                    shards: int | None = None) -> ExecutorSpec:
    """The executor to run with: the job file's, overridden by the command line's; `ray` for a sharded run."""
    chosen = job.model_copy(update={key: value for key, value in (("kind", kind), ("address", address),
                                                                   ("shards", shards)) if value is not None})
    if chosen.kind == "local" and sharded_run(run_dir):
        if kind is not None:
            raise ConfigError(f"{run_dir} is a sharded run: its rows are in its shards' stores; resume it with "
                              "--executor ray")
        chosen = chosen.model_copy(update={"kind": "ray"})
    return chosen


async def run_with(executor: ExecutorSpec, loaded: LoadedJob, options: RunOptions,
                   on_row: Callable[[RunProgress], None] | None = None, *, item_limit: int | None = None) -> RunOutcome:
    """Run `loaded` on `executor`."""
    if executor.kind == "local":
        return await run_job(loaded, options, on_row)
    batch = [b.id for b in loaded.spec.backends if b.mode == "batch"]
    if batch:  # a batch is submitted, polled and collected by one process: shards would each submit their own
        raise ConfigError(f"backends in batch mode ({', '.join(batch)}) run in one process: run the job with "
                          "--executor local (the vendor does the work in parallel)")
    from evalpipe.pipeline.running.ray_executor import run_sharded

    return await run_sharded(loaded, options, executor, on_row, item_limit=item_limit)


__all__ = ["choose_executor", "run_with", "sharded_run"]
