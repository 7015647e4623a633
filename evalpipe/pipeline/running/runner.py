"""The runner: tasks flow from the lazy expansion through bounded workers to one writer.

    expand_job(backend A) ─▶ dispatcher A ─┐                               ┌─▶ store.record ─▶ sinks
    expand_job(backend B) ─▶ dispatcher B ─┼─▶ workers: execute(task) ─▶ bounded stream ─▶ writer
           budget guard, stop on SIGINT/SIGTERM ─┘   (job-wide cap on calls in flight)

Each backend has its own dispatcher and its own window of tasks in memory, so a backend that is slow,
rate limited or paused by a Retry-After holds back only its own tasks; the job-wide concurrency caps
the calls in flight across all of them.

A row counts as done once the writer has committed it to the run store; the sinks are written
after the commit, and rebuilt from the store when a run resumes, so every task ends as exactly
one row whatever moment the process dies at.

One process at a time runs in a run directory (`runlock`). Signals are taken from before the run
directory exists to the end (`interrupts`): the first stops dispatching, the second cancels the calls
in flight. The first write that fails (a full disk) stops the run the same way, as interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from evalpipe.backends.base import Provider
from evalpipe.backends.batch import batch_adapter
from evalpipe.errors import EvalpipeError
from evalpipe.logs import run_log
from evalpipe.pipeline.job.batch_mode import batch_settings
from evalpipe.pipeline.job.expand import count_tasks, expand_job
from evalpipe.pipeline.job.load import LoadedJob
from evalpipe.pipeline.job.projection import Projector
from evalpipe.pipeline.job.task import Task
from evalpipe.pipeline.output.best_of import write_best_of
from evalpipe.pipeline.output.manifest import (
    MANIFEST_FILENAME,
    RunState,
    build_manifest,
    file_sha256,
    resume_command,
    write_manifest,
)
from evalpipe.pipeline.output.rows import row_schema, spend_of
from evalpipe.pipeline.output.rundir import RunDir, prepare_run_dir
from evalpipe.pipeline.output.sinks import Sinks
from evalpipe.pipeline.output.store import FinishedIds, RunStore, WriteFailed
from evalpipe.pipeline.running.backend import Backend
from evalpipe.pipeline.running.batch import BatchDispatcher, BatchHooks, answer_rows, error_row
from evalpipe.pipeline.running.batch_judges import JudgePhase
from evalpipe.pipeline.running.budget_share import BudgetShare
from evalpipe.pipeline.running.event_loop import running_loop_name
from evalpipe.pipeline.running.execute import Criterion, execute_task, expected_output_tokens
from evalpipe.pipeline.running.interrupts import Interrupts
from evalpipe.pipeline.running.job_backends import LimiterFactory, open_backends
from evalpipe.pipeline.running.limits import GlobalLimiter
from evalpipe.pipeline.running.model_calls import JobCalls
from evalpipe.pipeline.running.outcome import RunOutcome, RunProgress
from evalpipe.pipeline.running.response_cache import StoreCache
from evalpipe.pipeline.running.shards import Shard, count_shard_tasks
from evalpipe.scoring.calls import ModelCalls
from evalpipe.scoring.registry import build_scorer

log = structlog.get_logger("evalpipe.run")
Row = dict[str, Any]
_WRITER_BATCH = 256
_SKIPS_PER_CHECKPOINT = 1024  # finished tasks passed over on resume between two yields to the event loop




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
    # The process's signal handler when the caller installed one (the CLI, from its start); else the
    # runner installs its own for the run's duration.
    interrupts: Interrupts | None = None
    # Built providers to use for these backend ids instead of building them from the job (the
    # Python API's evaluator); the caller owns them: the runner does not close them.
    providers: Mapping[str, Provider] = field(default_factory=dict)
    criteria: Sequence[Criterion] = ()  # scored after the job's own scorers (plain functions, in code)
    quiet: bool = False  # no "run started/finished" lines: a library call's runs are not news
    detach: bool = False  # backends in batch mode submit their batches and the run leaves them at the vendor
    # A sharded run (`running.ray_executor`): this process runs only the shard's tasks, with limits and
    # a share of the budget that other processes draw on too.
    shard: Shard | None = None
    limiters: LimiterFactory | None = None  # default: an in-process `BackendLimiter` per backend
    budget_share: BudgetShare | None = None


def criteria_of(loaded: LoadedJob, calls: ModelCalls | None = None) -> list[Criterion]:
    """The job's scorers, built (their options were checked when the job was loaded)."""
    criteria = []
    for spec in loaded.spec.scorers:
        options = {k: v for k, v in (spec.model_extra or {}).items()}
        scorer = build_scorer(spec.type, spec.name, options, calls, base_dir=loaded.base_dir)
        criteria.append(Criterion(scorer, spec.weight, spec.threshold))
    return criteria


@dataclass(slots=True)
class _Spend:
    """What the budget guard counts: what the run spent (its answers are in the response cache even
    before their rows are committed) plus the projections of the tasks in flight."""

    cost_usd: float = 0.0
    tokens: int = 0
    in_flight: dict[str, tuple[float, int]] = field(default_factory=dict)  # task id -> projection
    in_flight_cost: float = 0.0
    in_flight_tokens: int = 0

    def start(self, task_id: str, cost: float, tokens: int) -> None:
        self.in_flight[task_id] = (cost, tokens)
        self.in_flight_cost += cost
        self.in_flight_tokens += tokens

    def settle(self, task_id: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """A task ended as `rows`: their real spend replaces its projection."""
        cost, tokens = self.in_flight.pop(task_id, (0.0, 0))
        self.in_flight_cost -= cost
        self.in_flight_tokens -= tokens
        for row in rows:  # an error row may have spent too (a chain's earlier steps)
            input_tokens, output_tokens, spent = spend_of(row)
            self.cost_usd += spent
            self.tokens += input_tokens + output_tokens


class _Pending:
    """A backend's tasks still to run, in expansion order, shared by its workers; the finished ones of
    an earlier session are passed over."""

    def __init__(self, tasks: Iterator[Task], finished: FinishedIds) -> None:
        self._tasks = tasks
        self._finished = finished
        self._fresh = len(finished) == 0  # nothing to pass over (a new run): no lookups at all
        self._skipped = 0
        # Taken with its yield to the event loop: tasks start one per pass of the loop. Workers freed by
        # answers that arrived together would otherwise send their next calls together, and calls to a
        # 100 ms server bunch into waves (wall time further from the ideal).
        self._turn = anyio.Lock()

    async def next(self) -> Task | None:
        """The next unfinished task, or None when there is none left."""
        async with self._turn:
            if self._fresh:
                return next(self._tasks, None)
            for task in self._tasks:
                if not all(row_id in self._finished for row_id in task.row_ids):
                    return task
                self._skipped += 1
                if self._skipped % _SKIPS_PER_CHECKPOINT == 0:
                    await anyio.lowlevel.checkpoint()  # a long resume scan must not starve signals or the writer
            return None


class JobRun:
    """One execution of a loaded job into a run directory."""

    def __init__(self, loaded: LoadedJob, options: RunOptions, on_row: Callable[[RunProgress], None] | None = None):
        self.loaded = loaded
        self.options = options
        self.on_row = on_row
        self.progress = RunProgress()
        self.stop_reason: RunState | None = None
        self._spend = _Spend()
        self._rows_written = 0  # in this session
        self._calls: JobCalls | None = None  # scorers' and chains' calls to the job's backends
        self._projector = Projector(loaded.spec, tools=loaded.tools)
        self._signals = 0  # received by this run
        self._working: anyio.CancelScope | None = None  # opening the backends and executing: a 2nd signal cancels it
        self.write_failure: WriteFailed | None = None
        self._shared: GlobalLimiter | None = None  # the job-wide cap: it counts the calls in flight

    async def run(self) -> RunOutcome:
        if not self.options.handle_signals:
            return await self._run()
        own = self.options.interrupts is None
        interrupts = Interrupts().install(raise_before_run=False) if own else self.options.interrupts
        assert interrupts is not None
        # The handler runs between two bytecodes of the loop's own thread: it only schedules the reaction.
        loop = asyncio.get_running_loop()
        try:
            with interrupts.listen(lambda signum: loop.call_soon_threadsafe(self._on_signal, signum)):
                if interrupts.count and interrupts.signum is not None:  # one came before the run listened
                    self._on_signal(interrupts.signum)
                return await self._run()
        finally:
            if own:
                interrupts.uninstall()

    async def _run(self) -> RunOutcome:
        spec = self.loaded.spec
        concurrency = self.options.concurrency or spec.concurrency
        self._shared = GlobalLimiter(concurrency)
        backends, skipped = open_backends(self.loaded, self.options.period_s, shared=self._shared,
                                          providers=self.options.providers, limiters=self.options.limiters)
        for backend_id, reason in skipped.items():
            log.warning("backend skipped", backend=backend_id, reason=reason)
        evaluated = {b.id for b in spec.backends if b.id in backends}
        skipped_evaluated = {b.id for b in spec.backends if b.id in skipped}
        tasks_skipped = self._count(skipped_evaluated) if skipped_evaluated else 0
        # Its cache is the run store's, opened below: the store needs the criteria, which need the calls.
        calls = self._calls = JobCalls(backends)
        criteria = [*criteria_of(self.loaded, calls), *self.options.criteria]
        schema = row_schema([c.name for c in criteria])
        # The fingerprint covers the job's content but leaves out what may change on resume (budget,
        # concurrency, limits); the job file's own hash would refuse those too, so only the dataset
        # file's content is added.
        dataset = self.loaded.dataset.path
        inputs = {"dataset_sha256": file_sha256(dataset)} if dataset is not None else None
        try:  # locks the run directory: another process running in it is refused here
            run_dir = prepare_run_dir(spec, root=self.options.out_root, run_dir=self.options.run_dir,
                                      force=self.options.force, inputs=inputs)
        except BaseException:
            await _close_all(backends, self.options.providers)
            raise
        try:
            return await self._in(run_dir, backends, skipped, evaluated, tasks_skipped, criteria, schema, concurrency)
        finally:
            run_dir.release()  # after the last write: the next process may resume it

    async def _in(self, run_dir: RunDir, backends: dict[str, Backend], skipped: dict[str, str], evaluated: set[str],
                  tasks_skipped: int, criteria: list[Criterion], schema: pa.Schema, concurrency: int) -> RunOutcome:
        """The run in its (locked) run directory."""
        spec = self.loaded.spec
        calls = self._calls
        assert calls is not None
        with run_log(run_dir.path):  # the run directory's own structured log
            started_at = datetime.now(UTC)
            try:
                store = RunStore.open(run_dir.path, run_dir.run_id, schema)
            except BaseException:
                await _close_all(backends, self.options.providers)
                raise
            sinks: Sinks | None = None
            cache: StoreCache | None = None
            state: RunState = "interrupted"
            replaces_rows = False
            try:
                sinks = Sinks.for_run(run_dir.path, schema, spec.output.formats)
                run_dir.remember(store)
                if run_dir.resumed:
                    sinks.rebuild_from(store)
                finished = store.finished(retry_errors=self.options.retry_errors)
                # Retried error rows replace rows the rebuild above already wrote to the sinks.
                replaces_rows = self.options.retry_errors and store.counts()["error"] > 0
                total = self._count(set(backends))
                self.progress = RunProgress(total=total, done=min(len(finished), total),
                                            already_done=min(len(finished), total))
                # The budget covers the whole run: what earlier sessions of it spent counts too.
                spent = store.totals()
                self._spend = _Spend(cost_usd=spent.cost_usd, tokens=spent.input_tokens + spent.output_tokens)
                write_manifest(run_dir.path, build_manifest(
                    spec, store, run_dir=run_dir.path, state="running", started_at=started_at,
                    job_file=self.loaded.path, tasks_total=total + tasks_skipped, outputs=sinks.paths,
                    skipped_backends=skipped, tasks_skipped=tasks_skipped))
                self._say("run started", job=spec.name, run_dir=str(run_dir.path), tasks=total,
                         already_done=self.progress.done, backends=sorted(backends), event_loop=running_loop_name())
                cache = calls.cache = StoreCache(store, empty=not run_dir.resumed, on_failure=self._write_failed)
                await anyio.lowlevel.checkpoint()  # a signal that came during the set-up is seen here
                with anyio.CancelScope() as self._working:
                    if self.stop_reason is None:  # a signal during set-up: start nothing
                        await _open_all(backends)
                    evaluated_backends = {backend_id: backends[backend_id] for backend_id in evaluated}
                    await self._execute(evaluated_backends, criteria, store, sinks, finished, run_dir.run_id, cache,
                                        concurrency)
                state = self.stop_reason or "completed"
            except WriteFailed as error:  # while setting up (rebuilding the outputs, the first manifest)
                self._write_failed(error)
            finally:
                with anyio.CancelScope(shield=True):
                    if cache is not None and self.write_failure is None:
                        try:  # answers queued after the writer's last batch (a run cancelled by a signal)
                            cache.flush()
                        except WriteFailed as error:
                            self._write_failed(error)
                    if sinks is not None:
                        try:
                            if replaces_rows and self._rows_written and self.write_failure is None:
                                sinks.rebuild_from(store)  # one row per task again: the retried ones as they are now
                            sinks.close()
                        except WriteFailed as error:
                            self._write_failed(error)
                    if self.write_failure is not None:
                        state = "interrupted"
                    if state == "completed" and self.progress.done < self.progress.total:
                        state = "interrupted"
                    elif state == "interrupted" and self.write_failure is None and \
                            self.progress.done >= self.progress.total:
                        state = "completed"  # the signal came after the last row: nothing is left to resume
                    outputs = sinks.paths if sinks is not None else {}
                    manifest = build_manifest(spec, store, run_dir=run_dir.path, state=state, started_at=started_at,
                                              finished_at=datetime.now(UTC), job_file=self.loaded.path,
                                              tasks_total=self.progress.total + tasks_skipped, outputs=outputs,
                                              skipped_backends=skipped, tasks_skipped=tasks_skipped)
                    counts = manifest.counts
                    try:
                        write_manifest(run_dir.path, manifest)
                    except OSError as error:
                        self._write_failed(WriteFailed(run_dir.path / MANIFEST_FILENAME, error))
                    store.close()
                    try:
                        if spec.best_of and criteria and self.write_failure is None:  # a stopped run's too: partial
                            write_best_of(run_dir.path, store)
                    except OSError as error:
                        self._write_failed(WriteFailed(run_dir.path, error))
                    await _close_all(backends, self.options.providers)
            self._say("run finished", state=state, counts=counts, cost_usd=round(manifest.cost_usd, 6))
        failure = None if self.write_failure is None else self.write_failure.message
        return RunOutcome(run_dir.path, run_dir.run_id, state, counts, self.progress.total + tasks_skipped,
                          manifest.cost_usd, outputs, skipped, resume_command(self.loaded.path, run_dir.path),
                          manifest.input_tokens, manifest.output_tokens, failure)

    def _count(self, backend_ids: set[str]) -> int:
        shard = self.options.shard
        if shard is None:
            return count_tasks(self.loaded, backend_ids=backend_ids)
        return count_shard_tasks(self.loaded, backend_ids, shard)

    def _write_failed(self, error: WriteFailed) -> None:
        """The first failed write stops the run: nothing more is started, the calls in flight are cancelled
        (their answers could not be kept), and the run ends as interrupted."""
        if self.write_failure is None:
            self.write_failure = error
            log.info("write failed", error=error.message)  # the command says it on stderr, once
        self.stop_reason = "interrupted"
        if self._working is not None:
            self._working.cancel()

    def _on_signal(self, signum: int) -> None:
        """SIGINT/SIGTERM: the first stops dispatching, the second cancels the calls in flight."""
        self._signals += 1
        if self._signals == 1:
            self.stop_reason = "interrupted"
            in_flight = self._shared.in_flight if self._shared is not None else 0
            log.warning(f"stopping: no new tasks; waiting for {in_flight} call{'s' * (in_flight != 1)} in flight "
                        "(signal again to cancel them)", signal=signum)
        elif self._signals == 2:
            log.warning("second signal: cancelling the calls in flight", signal=signum)
            if self._working is not None:
                self._working.cancel()  # answers already paid for are in the response cache: a resume reuses them

    def _say(self, event: str, **fields: Any) -> None:
        if not self.options.quiet:
            log.info(event, **fields)

    async def _execute(self, backends: dict[str, Backend], criteria: Sequence[Criterion], store: RunStore,
                       sinks: Sinks, finished: FinishedIds, run_id: str, cache: StoreCache, concurrency: int) -> None:
        # Room for a row from every call the job lets be in flight, so workers rarely wait to hand one over.
        send, receive = anyio.create_memory_object_stream[list[Row]](max_buffer_size=concurrency)
        wake = send.clone()

        def wake_writer() -> None:
            # No rows, only "answers are queued in the cache". A full stream means the writer has rows
            # to take, and takes the answers with them; a closed one, that it ended (`run` commits the rest).
            with contextlib.suppress(anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                wake.send_nowait([])

        cache.hand_to_writer(wake_writer)
        async with anyio.create_task_group() as pipeline:
            pipeline.start_soon(self._write, receive, store, sinks, cache)
            # Closing `send` once every dispatcher is done lets the writer drain what is left and end.
            async with send, wake, anyio.create_task_group() as dispatchers:
                for backend in backends.values():
                    # A window of tasks per backend, as many as can be in flight: enough to keep the
                    # backend busy, and a backend that is held back fills only its own window.
                    window = min(backend.spec.max_concurrency, concurrency)
                    if backend.spec.mode == "batch":
                        dispatchers.start_soon(self._dispatch_batch, backend, criteria, finished, run_id, store, send,
                                               window)
                        continue
                    dispatchers.start_soon(self._dispatch, backend, criteria, finished, run_id, cache, send, window)

    async def _dispatch_batch(self, backend: Backend, criteria: Sequence[Criterion], finished: FinishedIds,
                              run_id: str, store: RunStore, send: MemoryObjectSendStream[list[Row]],
                              window: int) -> None:
        """A backend in `mode: batch`: its tasks go through the vendor's batch API (`batch.py`), the budget
        counting what is submitted; the collected answers are scored and written as live ones are."""
        budget = self.loaded.spec.budget
        budgeted = budget.max_cost_usd is not None or budget.max_tokens is not None

        def reserve(task_id: str, cost: float, tokens: int) -> bool:
            if self._over_budget(cost, tokens, budget.max_cost_usd, budget.max_tokens):
                self._stop_for_budget()
                return False
            self._spend.start(task_id, cost, tokens)
            return True

        async def written(task: Task, rows: list[Row]) -> None:
            self._spend.settle(task.task_id, rows)
            await send.send(rows)

        async def answer(task: Task, payload: Mapping[str, Any]) -> None:
            await written(task, await answer_rows(task, backend, criteria, payload, run_id=run_id, calls=self._calls,
                                                  timeout_s=self.loaded.spec.task_timeout_s))

        def show(text: str) -> None:
            self.progress.batches[backend.spec.id] = text
            if self.on_row is not None:
                self.on_row(self.progress)

        hooks = BatchHooks(lambda: self.stop_reason is not None, lambda: self.stop_reason == "interrupted",
                           lambda task: self._projection(task, backend) if budgeted else (0.0, 0), reserve, answer,
                           lambda task, error: written(task, [error_row(task, backend, run_id, error)]), show,
                           self.options.detach)
        assert self._calls is not None
        judges = JudgePhase(backend.spec.id, self._calls, store, run_id, window, answer, hooks)  # judges in batch mode
        tasks = (task for task in expand_job(self.loaded, backend_ids={backend.spec.id})
                 if not all(row_id in finished for row_id in task.row_ids))
        dispatcher = BatchDispatcher(backend, batch_adapter(backend.provider), batch_settings(backend.spec), store,
                                     run_id, replace(hooks, answer=judges.answer), window)
        left = await dispatcher.run(tasks)
        if (await judges.finish() or left) and self.stop_reason is None:
            self.stop_reason = "submitted"  # detached with batches at the vendor: `collect` goes on

    async def _dispatch(self, backend: Backend, criteria: Sequence[Criterion], finished: FinishedIds, run_id: str,
                        cache: StoreCache, send: MemoryObjectSendStream[list[Row]], window: int) -> None:
        """Run the backend's unfinished tasks in expansion order, at most `window` at a time.

        `window` long-lived workers take the next task as they become free: a task group and a
        semaphore place per task cost more CPU than the rest of the dispatch (measured with py-spy)."""
        tasks = expand_job(self.loaded, backend_ids={backend.spec.id})
        shard = self.options.shard
        if shard is not None:  # a sharded run: this process runs only its shard's tasks
            tasks = (task for task in tasks if shard.owns(task.task_id))
        pending = _Pending(tasks, finished)
        async with anyio.create_task_group() as workers:
            for _ in range(window):
                workers.start_soon(self._worker, pending, backend, criteria, run_id, cache, send.clone())

    async def _worker(self, pending: _Pending, backend: Backend, criteria: Sequence[Criterion], run_id: str,
                      cache: StoreCache, send: MemoryObjectSendStream[list[Row]]) -> None:
        """Take the backend's next task until there is none, or the run stops (a signal, the budget)."""
        budget = self.loaded.spec.budget
        budgeted = budget.max_cost_usd is not None or budget.max_tokens is not None
        share = self.options.budget_share  # a sharded run's piece of the cluster-wide budget
        async with send:
            while self.stop_reason is None and (task := await pending.next()) is not None:
                # Checked after taking the task: a signal or the budget may have come meanwhile, and
                # the spend of the tasks that just finished is now known.
                if self.stop_reason is not None:
                    break
                # Projected only under a budget: it renders and counts the task's prompts and its scorers'.
                cost, tokens = self._projection(task, backend) if budgeted else (0.0, 0)
                if self._over_budget(cost, tokens, budget.max_cost_usd, budget.max_tokens) or (
                        budgeted and share is not None and not await share.reserve(cost, tokens)):
                    self._stop_for_budget()
                    break
                self._spend.start(task.task_id, cost, tokens)
                rows = await execute_task(task, backend, criteria, run_id=run_id, cache=cache,
                                          timeout_s=self.loaded.spec.task_timeout_s, calls=self._calls)
                # Settled before the next task is taken, so its budget check sees the real spend.
                projected = self._spend.in_flight.get(task.task_id)
                self._spend.settle(task.task_id, rows)
                if share is not None and projected is not None:
                    share.settle(*projected, rows)
                await send.send(rows)  # together: a dialogue's turns are committed in one transaction

    def _projection(self, task: Task, backend: Backend) -> tuple[float, int]:
        """What `task` may spend: its answer (each turn of a dialogue), chain steps and scorers' calls."""
        calls = self._projector.calls(backend.spec.id, task.messages, expected_output_tokens(task, backend))
        return self._projector.cost(calls), sum(call.input_tokens + call.output_tokens for call in calls)

    def _over_budget(self, cost: float, tokens: int, max_cost: float | None, max_tokens: int | None) -> bool:
        spend = self._spend
        if max_cost is not None and spend.cost_usd + spend.in_flight_cost + cost > max_cost:
            return True
        return max_tokens is not None and spend.tokens + spend.in_flight_tokens + tokens > max_tokens

    def _stop_for_budget(self) -> None:
        if self.stop_reason is None:
            self.stop_reason = "budget_exhausted"
            budget = self.loaded.spec.budget
            log.warning("budget reached: no more tasks are started; running ones finish",
                        spent_usd=round(self._spend.cost_usd, 6), spent_tokens=self._spend.tokens,
                        max_cost_usd=budget.max_cost_usd, max_tokens=budget.max_tokens)

    async def _write(self, receive: MemoryObjectReceiveStream[list[Row]], store: RunStore, sinks: Sinks,
                     cache: StoreCache) -> None:
        """The one writer: commit the answers queued in the response cache and a batch of rows to the
        store, then append the rows to the sinks."""
        async with receive:
            async for first in receive:
                batch = list(first)
                while len(batch) < _WRITER_BATCH:
                    try:
                        batch.extend(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                # Taken after the rows: a row's answer was queued before the row was sent.
                answers, ticket = cache.take()
                if not batch and not answers:
                    continue
                with anyio.CancelScope(shield=True):  # a batch is committed and written whole, or not at all
                    try:
                        rows = await anyio.to_thread.run_sync(_commit_and_write, store, sinks, batch, answers)
                    except WriteFailed as error:
                        self._write_failed(error)
                        return
                cache.committed(ticket)
                self._rows_written += len(rows)
                for row in rows:
                    self.progress.add(row)
                if self.on_row is not None:
                    self.on_row(self.progress)


async def _open_all(backends: Mapping[str, Backend]) -> None:
    """Open every provider before the first call is paced (a local backend starts its server here)."""
    for backend_id, backend in backends.items():
        try:
            await backend.provider.aopen()
        except EvalpipeError as error:  # its calls will fail too, each as a classified error row
            log.warning("backend could not be opened", backend=backend_id, error=error.message)


async def _close_all(backends: Mapping[str, Backend], theirs: Mapping[str, Provider]) -> None:
    """Close the providers the runner built (not the caller's own)."""
    for backend_id, backend in backends.items():
        if backend_id not in theirs:
            await backend.provider.aclose()


def _commit_and_write(store: RunStore, sinks: Sinks, batch: Sequence[Row],
                      answers: Sequence[tuple[str, dict[str, Any]]] = ()) -> list[Row]:
    """Commit `answers` to the response cache and `batch` to the store, then append the rows to the
    sinks (one trip to a worker thread for all three)."""
    if answers:
        store.cache_responses(answers)
    if not batch:
        return []
    rows = store.record(batch)
    sinks.write(rows, normalized=True)
    return rows


async def run_job(
    loaded: LoadedJob, options: RunOptions | None = None, on_row: Callable[[RunProgress], None] | None = None
) -> RunOutcome:
    """Run `loaded` to the end (or until the budget or a signal stops it)."""
    return await JobRun(loaded, options or RunOptions(), on_row).run()


__all__ = ["JobRun", "RunOptions", "criteria_of", "run_job"]
