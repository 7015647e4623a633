"""The executor seam: where a job's tasks run. `local` (the default) is the in-process runner; `ray`
shards the job over a Ray cluster (`ray_executor`, imported only when asked for, so Ray stays optional).

The job file's `executor:` says which, the command line's `--executor`, `--address` and `--shards`
override it, and a resumed sharded run goes on sharded with the shard count it started with. A run
directory at a filesystem URI (`s3://...`, `output.remote_rundir`) is a sharded run's: the in-process
runner needs a local directory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.load import LoadedJob
from evalpipe.pipeline.job.spec import ExecutorSpec
from evalpipe.pipeline.output.remote_rundir import is_uri
from evalpipe.pipeline.output.sharded import SHARD_COUNT_META
from evalpipe.pipeline.output.store import STORE_FILENAME, RunStore
from evalpipe.pipeline.running.outcome import RunOutcome, RunProgress
from evalpipe.pipeline.running.runner import RunOptions, run_job


def sharded_run(run_dir: Path | None) -> bool:
    """Whether `run_dir` holds a run that was sharded (and so resumes sharded)."""
    if run_dir is None or not (run_dir / STORE_FILENAME).is_file():
        return False
    return SHARD_COUNT_META in RunStore.read_meta(run_dir)


def choose_executor(job: ExecutorSpec, run_dir: Path | None, *, kind: str | None = None, address: str | None = None,
                    shards: int | None = None, uri: str | None = None) -> ExecutorSpec:
    """The executor to run with: the job file's, overridden by the command line's; `ray` for a sharded run
    and for a run at the filesystem URI `uri`."""
    chosen = job.model_copy(update={key: value for key, value in (("kind", kind), ("address", address),
                                                                   ("shards", shards)) if value is not None})
    if chosen.kind == "local" and uri is not None:
        if kind is not None:
            raise ConfigError(f"{uri}: a run directory at a URI is written by the ray executor (its shards work in "
                              "local scratch and copy there); run with --executor ray, or give a local path")
        chosen = chosen.model_copy(update={"kind": "ray"})
    if chosen.kind == "local" and sharded_run(run_dir):
        if kind is not None:
            raise ConfigError(f"{run_dir} is a sharded run: its rows are in its shards' stores; resume it with "
                              "--executor ray")
        chosen = chosen.model_copy(update={"kind": "ray"})
    return chosen


async def run_with(executor: ExecutorSpec, loaded: LoadedJob, options: RunOptions,
                   on_row: Callable[[RunProgress], None] | None = None, *, item_limit: int | None = None,
                   out_uri: str | None = None, run_uri: str | None = None) -> RunOutcome:
    """Run `loaded` on `executor`; `out_uri` / `run_uri`: the results root or the run directory as a
    filesystem URI (for the ray executor), standing for `options.out_root` / `options.run_dir`."""
    if out_uri is None and run_uri is None and options.out_root is None and options.run_dir is None \
            and is_uri(loaded.spec.output.dir):
        out_uri = loaded.spec.output.dir
    if executor.kind == "local":
        if out_uri is not None or run_uri is not None:
            raise ConfigError(f"{out_uri or run_uri}: a run directory at a URI is written by the ray executor; "
                              "run with --executor ray, or give a local path")
        return await run_job(loaded, options, on_row)
    batch = [b.id for b in loaded.spec.backends if b.mode == "batch"]
    if batch:  # a batch is submitted, polled and collected by one process: shards would each submit their own
        raise ConfigError(f"backends in batch mode ({', '.join(batch)}) run in one process: run the job with "
                          "--executor local (the vendor does the work in parallel)")
    from evalpipe.pipeline.running.ray_executor import run_sharded

    return await run_sharded(loaded, options, executor, on_row, item_limit=item_limit, out_uri=out_uri,
                             run_uri=run_uri)


__all__ = ["choose_executor", "run_with", "sharded_run"]
