"""The Ray executor: one job sharded over a cluster, each shard the same runner on a Ray worker.

    driver: run dir (lock, fingerprint, shard count) ─▶ LimitsActor per backend, BudgetActor
       │                                                      ▲ leases, 429s, budget pieces
       ├─▶ shard 0: run_job(tasks with hash(id) % N == 0) ─────┤  RUN_DIR/shards/0/ (store, parts)
       ├─▶ shard k: ...                                        ┘  RUN_DIR/shards/k/
       └─▶ merged manifest, rows.csv, best_of.parquet from every shard's store

A backend whose server each node runs itself (the embedded llama-server of `local`) gets one server per
node and a lease actor per node instead (`running.node_servers`): the shards on a node share both.

A worker that dies mid-shard is replaced by Ray (`max_retries`), and the shard resumes from its own
store: rows committed there are not run again and answers in its response cache are not paid again.
A driver that dies leaves every shard resumable: `evalpipe run JOB --resume RUN_DIR` runs them all
again, each from its store, with the shard count the run started with.

RUN_DIR may be a filesystem URI (`s3://bucket/prefix`, `file:///abs/path`: `output.remote_rundir`):
the driver and each shard then work in a local scratch directory with the same code, and copy it to
the URI (a shard every `executor.sync_s` and at its end, from where a shard run again resumes).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import structlog

from evalpipe.backends.registry import provider_class
from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.availability import job_backends
from evalpipe.pipeline.job.expand import count_tasks
from evalpipe.pipeline.job.load import LoadedJob, limited_items, load_job
from evalpipe.pipeline.job.spec import BackendSpec, ExecutorSpec
from evalpipe.pipeline.output.best_of import BEST_OF_FILENAME
from evalpipe.pipeline.output.manifest import (
    MANIFEST_FILENAME,
    RunState,
    build_manifest,
    file_sha256,
    read_manifest,
    resume_command,
    write_manifest,
)
from evalpipe.pipeline.output.remote_rundir import (
    CREDENTIAL_VARIABLES,
    SYNC_S,
    RemoteDir,
    RunDirSync,
    join_uri,
    pull_stores,
    push_files,
    remote_access,
    remote_progress,
    scratch_dir,
)
from evalpipe.pipeline.output.rows import row_schema
from evalpipe.pipeline.output.rundir import RunDir, prepare_run_dir
from evalpipe.pipeline.output.sharded import (
    SHARD_COUNT_META,
    SHARDS_DIRNAME,
    ShardedRows,
    committed_counts,
    shard_dir,
    write_merged_outputs,
)
from evalpipe.pipeline.output.sinks import CSV_FILENAME, JSONL_FILENAME
from evalpipe.pipeline.output.store import STORE_FILENAME, RunStore
from evalpipe.pipeline.running import ray_cluster
from evalpipe.pipeline.running.budget_share import LeasedBudget
from evalpipe.pipeline.running.leased_limits import LeasedLimiter
from evalpipe.pipeline.running.limits import BackendLimiter, GlobalLimiter, Limiter
from evalpipe.pipeline.running.node_servers import (
    NodeBackends,
    all_actors,
    attached_providers,
    leave_other_nodes,
    node_stats,
    start_node_backends,
    stop_servers,
)
from evalpipe.pipeline.running.outcome import RunOutcome, RunProgress
from evalpipe.pipeline.running.ray_actors import ActorBudget, ActorLeases, BudgetActor, LimitsActor
from evalpipe.pipeline.running.runner import RunOptions, criteria_of, run_job
from evalpipe.pipeline.running.shards import Shard

log = structlog.get_logger("evalpipe.run")
PROGRESS_S = 1.0
SHARD_RETRIES = 3  # a shard whose worker dies is run again this many times, each resuming from its store
_STATE_RANK: dict[RunState, int] = {"completed": 0, "running": 1, "budget_exhausted": 2, "interrupted": 3}


def per_node(spec: BackendSpec) -> bool:
    """Whether each node runs this backend's server itself (the embedded llama-server of `local`): its
    server and limits are then per node, shared by the node's shards, not by the cluster."""
    return spec.base_url is None and not provider_class(spec.backend).default_base_url


@dataclass(frozen=True, slots=True)
class ShardWork:
    """What a worker needs to run one shard (sent to it by Ray, so plain data and actor handles)."""

    job_path: Path
    item_limit: int | None
    shard: Shard
    directory: Path
    period_s: float
    concurrency: int | None
    retry_errors: bool
    limits: dict[str, ray_cluster.Actor] = field(default_factory=dict)  # backend id -> its LimitsActor
    budget: ray_cluster.Actor | None = None
    nodes: NodeBackends = field(default_factory=NodeBackends)  # per-node backends: each node's server, limits
    remote: str | None = None  # the shard's URI (`RUN_URI/shards/<k>`): it runs in scratch and copies there
    sync_s: float = SYNC_S
    run_id: str = ""


@dataclass(frozen=True, slots=True)
class ShardResult:
    """How a shard ended, and the process that ran it last."""

    index: int
    state: RunState
    counts: dict[str, int]
    write_failure: str | None
    pid: int


def run_shard(work: ShardWork) -> ShardResult:
    """Run one shard to its end on this worker (what the Ray task executes)."""
    return anyio.run(_run_shard, work)


async def _run_shard(work: ShardWork) -> ShardResult:
    if work.remote is None:
        return await _run_shard_in(work, work.directory)
    # Named after the run and the shard: whoever looks at a node's temp directory can tell whose it is.
    with scratch_dir(f"evalpipe-{work.run_id}-shard-{work.shard.index}-") as scratch:
        sync = RunDirSync(scratch / "run", RemoteDir(work.remote), work.sync_s)
        await anyio.to_thread.run_sync(sync.restore)
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(sync.every)
                result = await _run_shard_in(work, sync.local)
                group.cancel_scope.cancel()
        finally:  # after a failure too: what the store holds is consistent, and saves the next try its calls
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(sync.push)
    return result


async def _run_shard_in(work: ShardWork, directory: Path) -> ShardResult:
    loaded = load_job(work.job_path)
    if work.item_limit is not None:
        loaded = limited_items(loaded, work.item_limit)
    leased: list[LeasedLimiter] = []
    budget = loaded.spec.budget
    share = None
    if work.budget is not None:
        share = LeasedBudget(ActorBudget(work.budget), budget.max_cost_usd, budget.max_tokens)
    node = ray_cluster.current_node()
    worker = f"shard-{work.shard.index}"
    await leave_other_nodes(work.nodes, worker, node)
    providers = attached_providers(work.nodes, (spec for _, spec in job_backends(loaded.spec)), node)
    async with anyio.create_task_group() as group:
        def limiter_for(spec: BackendSpec, shared: GlobalLimiter, period_s: float) -> Limiter:
            actor = work.limits.get(spec.id) or work.nodes.limits_on(spec.id, node)
            if actor is None:  # per node, on a node without actors: this worker's own server and limits
                return BackendLimiter.from_spec(spec, shared=shared, period_s=period_s)
            limiter = LeasedLimiter(ActorLeases(actor), name=spec.id, shared=shared, period_s=period_s,
                                    rated=bool(spec.rpm or spec.tpm), worker=worker)
            leased.append(limiter)
            group.start_soon(limiter.maintain)
            return limiter

        options = RunOptions(run_dir=directory, concurrency=work.concurrency, retry_errors=work.retry_errors,
                             force=True, period_s=work.period_s, handle_signals=False, quiet=True,
                             shard=work.shard, limiters=limiter_for, budget_share=share, providers=providers)
        try:
            outcome = await run_job(loaded, options)
        finally:
            with anyio.CancelScope(shield=True):
                for limiter in leased:
                    await limiter.close()
                if share is not None:
                    await share.release()
                for provider in providers.values():
                    await provider.aclose()
            group.cancel_scope.cancel()
    return ShardResult(work.shard.index, outcome.state, outcome.counts, outcome.write_failure, os.getpid())


def _schema_of(loaded: LoadedJob) -> pa.Schema:
    """The row schema the shards write: the job's criteria (built without model calls: names only)."""
    return row_schema([criterion.name for criterion in criteria_of(loaded)])


def _secrets_for(loaded: LoadedJob) -> dict[str, str]:
    """The job's key variables that are set here: the workers need them (they travel in Ray's runtime env)."""
    return {spec.api_key_env: os.environ[spec.api_key_env] for _, spec in job_backends(loaded.spec)
            if spec.api_key_env and os.environ.get(spec.api_key_env)}


async def run_sharded(loaded: LoadedJob, options: RunOptions, executor: ExecutorSpec,
                      on_row: Callable[[RunProgress], None] | None = None, *, item_limit: int | None = None,
                      num_cpus: int | None = None, shard_cpus: float = 1.0,
                      on_limits: Callable[[dict[str, dict[str, Any]]], None] | None = None,
                      out_uri: str | None = None, run_uri: str | None = None) -> RunOutcome:
    """Run `loaded` sharded over the Ray cluster `executor` names; the outcome of the run as a whole.

    `num_cpus`: of a local Ray started for the run; `shard_cpus`: the CPUs Ray reserves for a shard (an
    IO-bound job may run several shards per CPU); `on_limits` is given each lease actor's counters at the end
    (a per-node backend's as `backend@node`, with its node's server's). `out_uri` (a new run under
    `URI/<job>/<run_id>`) or `run_uri` (resume the run there, or start one there): the run lives at a
    filesystem URI, its outcome's `run_dir` is then the local scratch copy it was finished in."""
    if loaded.path is None:
        raise ConfigError("the ray executor runs job files: its workers load the job from its path")
    spec = loaded.spec
    dataset = loaded.dataset.path
    inputs = {"dataset_sha256": file_sha256(dataset)} if dataset is not None else None
    scratch = Path(tempfile.mkdtemp(prefix="evalpipe-run-")) if out_uri or run_uri else None
    remote: RemoteDir | None = None
    if scratch is None:
        run_dir = prepare_run_dir(spec, root=options.out_root, run_dir=options.run_dir, force=options.force,
                                  inputs=inputs)
    else:
        try:
            run_dir, remote = _open_remote_run(loaded, options, scratch / "run", inputs, out_uri, run_uri)
        except BaseException:
            shutil.rmtree(scratch, ignore_errors=True)
            raise
    connected = ray_cluster.connect(executor.address, num_cpus=num_cpus)
    actors: list[ray_cluster.Actor] = []
    nodes = NodeBackends()
    try:
        top = RunStore.open(run_dir.path, run_dir.run_id, row_schema([]))
        try:
            recorded = top.get_meta(SHARD_COUNT_META)
            count = _shard_count(recorded, executor)
            if recorded is None:
                top.set_meta(SHARD_COUNT_META, str(count))
            run_dir.remember(top)
            started_at = datetime.now(UTC)
            fresh = [index for index in range(count) if not (shard_dir(run_dir.path, index) / STORE_FILENAME).is_file()]
            for index in range(count):  # each shard's store carries the run's id from the start
                RunStore.open(shard_dir(run_dir.path, index), run_dir.run_id, row_schema([])).close()
            limits = {}
            for _, backend in job_backends(spec):
                if backend.id in loaded.skipped or per_node(backend) or backend.id in limits:
                    continue
                actor = ray_cluster.start_actor(LimitsActor, backend.rpm, backend.tpm, options.period_s,
                                                backend.max_concurrency)
                actors.append(actor)
                limits[backend.id] = actor
            nodes = start_node_backends((backend for _, backend in job_backends(spec)
                                         if backend.id not in loaded.skipped and per_node(backend)),
                                        run_dir.run_id, options.period_s)
            actors.extend(all_actors(nodes))
            budget_actor = None
            if spec.budget.max_cost_usd is not None or spec.budget.max_tokens is not None:
                rows = ShardedRows.open(run_dir.path, run_dir.run_id, row_schema([]))
                spent = rows.totals()
                rows.close()
                budget_actor = ray_cluster.start_actor(BudgetActor, spec.budget.max_cost_usd, spec.budget.max_tokens,
                                                       spent.cost_usd, spent.input_tokens + spent.output_tokens)
                actors.append(budget_actor)
            for actor in actors:  # up before the shards start: their first calls would wait for it
                await actor.call("stats" if actor is not budget_actor else "left")
            tasks_skipped = count_tasks(loaded, backend_ids=set(loaded.skipped)) if loaded.skipped else 0
            evaluated = {b.id for b in spec.backends if b.id not in loaded.skipped}
            total = count_tasks(loaded, backend_ids=evaluated)
            manifest = build_manifest(spec, top, run_dir=run_dir.path, state="running", started_at=started_at,
                                      job_file=loaded.path, tasks_total=total + tasks_skipped,
                                      skipped_backends=loaded.skipped, tasks_skipped=tasks_skipped)
            write_manifest(run_dir.path, dataclasses.replace(manifest, shards=count))
            if remote is not None:  # before any shard starts: each downloads its store from there
                _point_manifest_at(run_dir.path, loaded, remote.uri)
                with remote_access(remote.uri):
                    await anyio.to_thread.run_sync(push_files, run_dir.path, remote, [
                        STORE_FILENAME, MANIFEST_FILENAME,
                        *(f"{SHARDS_DIRNAME}/{index}/{STORE_FILENAME}" for index in fresh)])
            log.info("sharded run started", job=spec.name, run_dir=remote.uri if remote else str(run_dir.path),
                     tasks=total, shards=count)
            secrets = _secrets_for(loaded)
            if remote is not None:  # the shards read and write the URI themselves
                secrets.update({name: os.environ[name] for name in CREDENTIAL_VARIABLES if os.environ.get(name)})
            submitted = [ray_cluster.submit(run_shard, ShardWork(
                loaded.path.resolve(), item_limit, Shard(index, count), shard_dir(run_dir.path, index).resolve(),
                options.period_s, options.concurrency, options.retry_errors, limits, budget_actor, nodes,
                join_uri(remote.uri, SHARDS_DIRNAME, str(index)) if remote else None, executor.sync_s,
                run_dir.run_id), num_cpus=shard_cpus, max_retries=SHARD_RETRIES, env_vars=secrets)
                for index in range(count)]
            results: list[ShardResult] = []
            failures: list[str] = []
            async with anyio.create_task_group() as group:
                if on_row is not None:
                    # A run at a URI: the shards' copies change every sync_s, and each look is a request there.
                    group.start_soon(_report_progress, _committed_counter(run_dir.path, remote, count), total,
                                     on_row, PROGRESS_S if remote is None else max(PROGRESS_S, executor.sync_s))
                for index, task in enumerate(submitted):
                    try:
                        results.append(await task.result())
                    except ray_cluster.task_error_types() as error:
                        failures.append(f"shard {index}: {str(error).strip().splitlines()[0]}")
                group.cancel_scope.cancel()
            if on_limits is not None:
                on_limits({**{backend_id: await actor.call("stats") for backend_id, actor in limits.items()},
                           **await node_stats(nodes)})
            if remote is None:
                return _finish(loaded, run_dir.path, run_dir.run_id, top, results, failures, count, started_at,
                               total, tasks_skipped)
            # Each shard's last copy of its store: what the merged outputs are written from.
            await anyio.to_thread.run_sync(partial(pull_stores, remote, run_dir.path, shards_only=True))
            outcome = _finish(loaded, run_dir.path, run_dir.run_id, top, results, failures, count, started_at,
                              total, tasks_skipped)
            _point_manifest_at(run_dir.path, loaded, remote.uri)
            await anyio.to_thread.run_sync(push_files, run_dir.path, remote, [
                CSV_FILENAME, JSONL_FILENAME, BEST_OF_FILENAME, STORE_FILENAME, MANIFEST_FILENAME])
            return dataclasses.replace(outcome, resume_command=resume_command(loaded.path, remote.uri))
        finally:
            top.close()
    finally:
        with anyio.CancelScope(shield=True):
            await stop_servers(nodes)
        for actor in actors:
            actor.kill()
        if connected:
            ray_cluster.disconnect()
        run_dir.release()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _open_remote_run(loaded: LoadedJob, options: RunOptions, local: Path, inputs: dict[str, str] | None,
                     out_uri: str | None, run_uri: str | None) -> tuple[RunDir, RemoteDir]:
    """The run directory of a run at a URI, prepared in `local` from what the URI holds (a resume's store,
    manifest and shard stores): the same checks as a local one (a changed job refused unless forced)."""
    if run_uri is not None:
        with remote_access(run_uri):
            pull_stores(RemoteDir(run_uri), local)
    run_dir = prepare_run_dir(loaded.spec, run_dir=local, force=options.force, inputs=inputs)
    uri = run_uri if run_uri is not None else join_uri(out_uri or "", loaded.spec.name, run_dir.run_id)
    return run_dir, RemoteDir(uri)


def _point_manifest_at(local: Path, loaded: LoadedJob, uri: str) -> None:
    """The manifest in `local` saying how to resume the run at `uri`, not the scratch copy."""
    manifest = read_manifest(local)
    write_manifest(local, dataclasses.replace(manifest, resume_command=resume_command(loaded.path, uri)))


def _committed_counter(path: Path, remote: RemoteDir | None, count: int) -> Callable[[], dict[str, int]]:
    """Rows per status committed by every shard: read from their stores, or for a run at a URI, from what
    each shard's last copy there says."""
    if remote is None:
        return lambda: committed_counts(path)
    return lambda: remote_progress(remote, count)


async def _report_progress(counter: Callable[[], dict[str, int]], total: int,
                           on_row: Callable[[RunProgress], None], every_s: float) -> None:
    """Every `every_s`, the rows every shard has committed, for a progress display."""
    progress = RunProgress(total=total)
    while True:
        counts = await anyio.to_thread.run_sync(counter)
        progress.done = counts["ok"] + counts["error"]
        progress.errors = counts["error"]
        on_row(progress)
        await anyio.sleep(every_s)


def _shard_count(recorded: str | None, executor: ExecutorSpec) -> int:
    if recorded is None:
        return executor.shards or ray_cluster.cluster_cpus()
    if executor.shards is not None and executor.shards != int(recorded):
        raise ConfigError(f"this run was started with {recorded} shards, not {executor.shards}: a run keeps its "
                          "shard count (another count would run finished tasks again)")
    return int(recorded)


def _finish(loaded: LoadedJob, path: Path, run_id: str, top: RunStore, results: list[ShardResult],
            failures: list[str], count: int, started_at: datetime, total: int, tasks_skipped: int) -> RunOutcome:
    """Merge the shards' outputs and write the run's manifest."""
    spec = loaded.spec
    states: list[RunState] = [result.state for result in results]
    if failures or len(results) < count:
        states.append("interrupted")
    state = max(states, key=_STATE_RANK.__getitem__) if states else "interrupted"
    schema = _schema_of(loaded)
    rows = ShardedRows.open(path, run_id, schema)
    try:
        counts = rows.counts()
        if state == "completed" and counts["ok"] + counts["error"] < total:
            state = "interrupted"
        outputs = write_merged_outputs(path, rows, schema, spec.output.formats, spec.best_of and bool(spec.scorers))
        totals = rows.totals()
    finally:
        rows.close()
    counts["skipped"] = counts.get("skipped", 0) + tasks_skipped
    manifest = build_manifest(spec, top, run_dir=path, state=state, started_at=started_at,
                              finished_at=datetime.now(UTC), job_file=loaded.path, tasks_total=total + tasks_skipped,
                              outputs=outputs, skipped_backends=loaded.skipped, tasks_skipped=tasks_skipped)
    manifest = dataclasses.replace(
        manifest, counts=counts, input_tokens=totals.input_tokens, output_tokens=totals.output_tokens,
        cost_usd=round(totals.cost_usd, 6), shards=count,
        budget={**manifest.budget, "spent_usd": round(totals.cost_usd, 6),
                "spent_tokens": totals.input_tokens + totals.output_tokens})
    write_manifest(path, manifest)
    for lost in failures:
        log.warning("shard failed", detail=lost)
    log.info("sharded run finished", state=state, counts=counts, cost_usd=manifest.cost_usd)
    failure = "; ".join(failures) or next((r.write_failure for r in results if r.write_failure), None)
    return RunOutcome(path, run_id, state, counts, total + tasks_skipped, manifest.cost_usd, outputs,
                      dict(loaded.skipped), resume_command(loaded.path, path), totals.input_tokens,
                      totals.output_tokens, failure)


__all__ = ["ShardResult", "ShardWork", "per_node", "run_shard", "run_sharded"]
