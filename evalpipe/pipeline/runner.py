"""The runner: tasks flow from the lazy expansion through bounded workers to one writer.

    expand_job ─▶ dispatcher ──(global cap)──▶ workers: execute(task) ─▶ bounded stream ─▶ writer
                     │ budget guard, stop on SIGINT/SIGTERM                 store.record ─▶ sinks

A row counts as done once the writer has committed it to the run store; the sinks are written
after the commit, and rebuilt from the store when a run resumes, so every task ends as exactly
one row whatever moment the process dies at.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from evalpipe.backends.base import Provider
from evalpipe.backends.retry import RetryPolicy
from evalpipe.builder import LLMBuilder
from evalpipe.errors import ConfigError
from evalpipe.pipeline.execute import Backend, Criterion, execute, expected_output_tokens
from evalpipe.pipeline.expand import count_tasks, expand_job
from evalpipe.pipeline.limits import BackendLimiter, estimate_tokens
from evalpipe.pipeline.load import LoadedJob
from evalpipe.pipeline.manifest import RunState, build_manifest, resume_command, write_manifest
from evalpipe.pipeline.rows import row_schema
from evalpipe.pipeline.rundir import prepare_run_dir
from evalpipe.pipeline.sinks import Sinks
from evalpipe.pipeline.spec import BackendSpec
from evalpipe.pipeline.store import RunStore
from evalpipe.pipeline.task import Task
from evalpipe.scoring.registry import build_scorer

log = structlog.get_logger("evalpipe.run")
Row = dict[str, Any]
_WRITER_BATCH = 256


@dataclass(frozen=True, slots=True)
class RunOptions:
    """How to run a job, beyond what the job file says."""

    out_root: Path | None = None  # default: the job's output.dir
    run_dir: Path | None = None  # resume this run (or start a new run in this empty directory)
    concurrency: int | None = None  # overrides the job's global concurrency
    retry_errors: bool = False  # on resume, run again the tasks that ended as error rows
    force: bool = False  # resume even though the job changed
    period_s: float = 60.0  # the "minute" of rpm/tpm limits (tests shorten it)
    handle_signals: bool = True  # SIGINT/SIGTERM stop dispatching (main thread only)


@dataclass(slots=True)
class RunProgress:
    """Counters the runner updates as rows are committed; a display reads them."""

    total: int = 0
    done: int = 0
    errors: int = 0
    calls: int = 0  # answers paid for in this process (not from the cache)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    started: float = field(default_factory=time.monotonic)

    def add(self, row: Mapping[str, Any]) -> None:
        self.done += 1
        self.errors += row.get("status") == "error"
        if row.get("status") == "ok" and not row.get("cached"):
            self.calls += 1
            self.input_tokens += row.get("input_tokens") or 0
            self.output_tokens += row.get("output_tokens") or 0
            self.cost_usd += row.get("cost_usd") or 0.0


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run ended and where its results are."""

    run_dir: Path
    run_id: str
    state: RunState
    counts: dict[str, int]
    total_tasks: int
    cost_usd: float
    outputs: dict[str, Path]
    skipped_backends: dict[str, str]
    resume_command: str


def open_backends(
    loaded: LoadedJob, period_s: float, environ: Mapping[str, str] | None = None
) -> tuple[dict[str, Backend], dict[str, str]]:
    """A provider and limiter per backend whose key is present; the others with the reason they are skipped."""
    environ = os.environ if environ is None else environ
    backends: dict[str, Backend] = {}
    skipped: dict[str, str] = {}
    for spec in loaded.spec.backends:
        try:
            provider = _provider(spec, environ)
        except ConfigError as error:
            skipped[spec.id] = error.message
            continue
        backends[spec.id] = Backend(spec, provider, BackendLimiter.from_spec(spec, period_s=period_s))
    return backends, skipped


def _provider(spec: BackendSpec, environ: Mapping[str, str]) -> Provider:
    builder = LLMBuilder().backend(spec.backend).timeout(spec.timeout_s).max_retries(0)  # the runner retries
    if spec.api_key_env:
        if not environ.get(spec.api_key_env):
            raise ConfigError(f"{spec.api_key_env} is not set")
        builder.api_key(environ[spec.api_key_env])
    if spec.model:
        builder.model(spec.model)
    if spec.base_url:
        builder.base_url(spec.base_url)
    for name, value in spec.options.items():
        builder.option(name, value)
    return builder.build()


def criteria_of(loaded: LoadedJob) -> list[Criterion]:
    """The job's scorers, built (their options were checked when the job was loaded)."""
    criteria = []
    for spec in loaded.spec.scorers:
        options = {k: v for k, v in (spec.model_extra or {}).items()}
        scorer = build_scorer(spec.type, spec.name, options)
        criteria.append(Criterion(scorer, spec.weight, spec.threshold))
    return criteria


class _StoreCache:
    """The response cache in the run store; a `put` is committed before it returns."""

    def __init__(self, store: RunStore) -> None:
        self._store = store

    async def get(self, key: str) -> dict[str, Any] | None:
        return await anyio.to_thread.run_sync(self._store.cached_response, key)

    async def put(self, key: str, payload: dict[str, Any]) -> None:
        # Shielded: an answer that was paid for is recorded even when the run is being cancelled.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._store.cache_response, key, payload)


class JobRun:
    """One execution of a loaded job into a run directory."""

    def __init__(self, loaded: LoadedJob, options: RunOptions, on_row: Callable[[RunProgress], None] | None = None):
        self.loaded = loaded
        self.options = options
        self.on_row = on_row
        self.progress = RunProgress()
        self.stop_reason: RunState | None = None
        self._in_flight_cost = 0.0
        self._in_flight_tokens = 0

    async def run(self) -> RunOutcome:
        spec = self.loaded.spec
        backends, skipped = open_backends(self.loaded, self.options.period_s)
        for backend_id, reason in skipped.items():
            log.warning("backend skipped", backend=backend_id, reason=reason)
        criteria = criteria_of(self.loaded)
        schema = row_schema([c.name for c in criteria])
        run_dir = prepare_run_dir(spec, root=self.options.out_root, run_dir=self.options.run_dir,
                                  force=self.options.force, inputs={"job_sha256": self.loaded.sha256})
        started_at = datetime.now(UTC)
        store = RunStore.open(run_dir.path, run_dir.run_id, schema)
        sinks = Sinks.for_run(run_dir.path, schema, spec.output.formats)
        try:
            run_dir.remember(store)
            if run_dir.resumed:
                sinks.rebuild_from(store)
            finished = store.finished_ids(retry_errors=self.options.retry_errors)
            total = count_tasks(self.loaded, backend_ids=set(backends))
            self.progress = RunProgress(total=total, done=min(len(finished), total))
            write_manifest(run_dir.path, build_manifest(
                spec, store, run_dir=run_dir.path, state="running", started_at=started_at,
                job_file=self.loaded.path, tasks_total=total, outputs=sinks.paths))
            log.info("run started", job=spec.name, run_dir=str(run_dir.path), tasks=total,
                     already_done=self.progress.done, backends=sorted(backends))
            await self._execute(backends, criteria, store, sinks, finished, run_dir.run_id)
        finally:
            with anyio.CancelScope(shield=True):
                sinks.close()
                state: RunState = self.stop_reason or "completed"
                counts = store.counts()
                if state == "completed" and sum(counts.values()) < self.progress.total:
                    state = "interrupted"
                manifest = build_manifest(spec, store, run_dir=run_dir.path, state=state, started_at=started_at,
                                          finished_at=datetime.now(UTC), job_file=self.loaded.path,
                                          tasks_total=self.progress.total, outputs=sinks.paths)
                write_manifest(run_dir.path, manifest)
                store.close()
                for backend in backends.values():
                    await backend.provider.aclose()
        log.info("run finished", state=state, counts=counts, cost_usd=round(manifest.cost_usd, 6))
        return RunOutcome(run_dir.path, run_dir.run_id, state, counts, self.progress.total, manifest.cost_usd,
                          sinks.paths, skipped, resume_command(self.loaded.path, run_dir.path))

    async def _execute(self, backends: dict[str, Backend], criteria: Sequence[Criterion], store: RunStore,
                       sinks: Sinks, finished: set[str], run_id: str) -> None:
        cache = _StoreCache(store)
        policy = RetryPolicy(max_retries=max((b.spec.max_retries for b in backends.values()), default=0))
        concurrency = self.options.concurrency or self.loaded.spec.concurrency
        send, receive = anyio.create_memory_object_stream[Row](max_buffer_size=concurrency)
        async with anyio.create_task_group() as run:
            if self.options.handle_signals:
                run.start_soon(self._watch_signals, run.cancel_scope)
            async with anyio.create_task_group() as pipeline:
                pipeline.start_soon(self._write, receive, store, sinks)
                async with send:  # closing it lets the writer drain what is left and end
                    await self._dispatch(backends, criteria, finished, run_id, policy, cache, send, concurrency)
            run.cancel_scope.cancel()  # everything is written: stop watching for signals

    async def _dispatch(self, backends: dict[str, Backend], criteria: Sequence[Criterion], finished: set[str],
                        run_id: str, policy: RetryPolicy, cache: _StoreCache,
                        send: MemoryObjectSendStream[Row], concurrency: int) -> None:
        slots = anyio.Semaphore(concurrency)  # acquired here, released by the worker: bounds tasks in memory
        budget = self.loaded.spec.budget
        async with anyio.create_task_group() as workers:
            for task in expand_job(self.loaded, backend_ids=set(backends)):
                if task.task_id in finished:
                    continue
                if self.stop_reason is not None:
                    break
                backend = backends[task.backend_id]
                cost, tokens = self._projection(task, backend)
                if self._over_budget(cost, tokens, budget.max_cost_usd, budget.max_tokens):
                    self.stop_reason = "budget_exhausted"
                    log.warning("budget reached: no more tasks are started; running ones finish",
                                spent_usd=round(self.progress.cost_usd, 6), max_cost_usd=budget.max_cost_usd,
                                max_tokens=budget.max_tokens)
                    break
                await slots.acquire()
                self._in_flight_cost += cost
                self._in_flight_tokens += tokens
                workers.start_soon(self._work, task, backend, criteria, run_id, policy, cache, send.clone(),
                                   slots, cost, tokens)

    def _projection(self, task: Task, backend: Backend) -> tuple[float, int]:
        input_tokens = sum(estimate_tokens(m.content) for m in task.messages)
        output_tokens = expected_output_tokens(task, backend)
        spec = backend.spec
        cost = (input_tokens * spec.price_input_per_1m + output_tokens * spec.price_output_per_1m) / 1_000_000
        return cost, input_tokens + output_tokens

    def _over_budget(self, cost: float, tokens: int, max_cost: float | None, max_tokens: int | None) -> bool:
        spent_tokens = self.progress.input_tokens + self.progress.output_tokens
        if max_cost is not None and self.progress.cost_usd + self._in_flight_cost + cost > max_cost:
            return True
        return max_tokens is not None and spent_tokens + self._in_flight_tokens + tokens > max_tokens

    async def _work(self, task: Task, backend: Backend, criteria: Sequence[Criterion], run_id: str,
                    policy: RetryPolicy, cache: _StoreCache, send: MemoryObjectSendStream[Row],
                    slots: anyio.Semaphore, cost: float, tokens: int) -> None:
        async with send:
            try:
                row = await execute(task, backend, criteria, run_id=run_id, policy=policy, cache=cache,
                                    timeout_s=self.loaded.spec.task_timeout_s)
                await send.send(row)
            finally:
                self._in_flight_cost -= cost
                self._in_flight_tokens -= tokens
                slots.release()

    async def _write(self, receive: MemoryObjectReceiveStream[Row], store: RunStore, sinks: Sinks) -> None:
        """The one writer: commit a batch to the store, then append it to the sinks."""
        async with receive:
            async for first in receive:
                batch = [first]
                while len(batch) < _WRITER_BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                with anyio.CancelScope(shield=True):  # a batch is committed and written whole, or not at all
                    rows = await anyio.to_thread.run_sync(store.record, batch)
                    await anyio.to_thread.run_sync(sinks.write, rows)
                for row in rows:
                    self.progress.add(row)
                if self.on_row is not None:
                    self.on_row(self.progress)

    async def _watch_signals(self, run: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if self.stop_reason == "interrupted":
                    log.warning("second signal: cancelling the calls in flight", signal=signum)
                    run.cancel()  # answers already paid for are in the response cache: a resume reuses them
                    return
                self.stop_reason = "interrupted"
                log.warning("stopping: no new tasks; calls in flight finish (signal again to cancel them)",
                            signal=signum)


async def run_job(
    loaded: LoadedJob, options: RunOptions | None = None, on_row: Callable[[RunProgress], None] | None = None
) -> RunOutcome:
    """Run `loaded` to the end (or until the budget or a signal stops it)."""
    return await JobRun(loaded, options or RunOptions(), on_row).run()


__all__ = ["JobRun", "RunOptions", "RunOutcome", "RunProgress", "open_backends", "run_job"]
