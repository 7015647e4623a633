"""Backends in `mode: batch`: their tasks go to the vendor's batch API in chunks, and each collected answer
enters the same scoring and writing path as a live one.

    unfinished tasks ─▶ answer collected already? ──yes──────────────────────────────▶ answer(task)
           │ no                                                                        (score, row, sinks)
           ▼                                                                                 ▲
    in an open chunk? ─no─▶ chunks (vendor limits) ─▶ budget ─▶ upload ─▶ create ─┐          │
           │ yes                                                                  ▼          │
           └──────────────────────────────────────────────────▶ poll ─▶ ended ─▶ download ──┘
                                                                          (cache + "collected": one commit)

Exactly once: every remote step is recorded in the run store (`BatchChunk.step`) before it starts and
after it ends. A chunk's id is also its marker at the vendor (the input file's name, the batch's
metadata or display name), so a process killed between a remote step and its record is recognised on
resume: an "uploading" chunk looks for its file, a "creating" chunk for its batch, before doing the step
again. A chunk's results are committed with its "collected" step in one transaction, so a kill while
downloading downloads again (free) and never submits again (paid).

`run --detach` submits and leaves; a later `collect` (a resume) polls and collects. The budget counts
a submitted chunk's projection as spent until its rows replace it with what they cost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import anyio
import structlog

from evalpipe import errors
from evalpipe.backends.batch import BatchAdapter
from evalpipe.backends.batch.base import ItemResult, RemoteBatch
from evalpipe.backends.retry import RetryPolicy
from evalpipe.pipeline.job.batch_mode import BatchSettings
from evalpipe.pipeline.job.task import Task, stable_hash
from evalpipe.pipeline.output.store import BatchChunk, RunStore
from evalpipe.pipeline.running.backend import Backend
from evalpipe.pipeline.running.execute import (
    Criterion,
    base_row,
    call_params,
    execute_task,
    payload_from_response,
    request_key,
)
from evalpipe.pipeline.running.model_calls import JobCalls

log = structlog.get_logger("evalpipe.run")
T = TypeVar("T")
BATCH_ERROR = "batch_error"  # the key of a cached payload that holds a request's error instead of an answer
_ERROR_KINDS: dict[str, type[errors.ProviderError]] = {
    cls.__name__: cls for cls in (errors.BatchExpiredError, errors.BatchCancelledError, errors.BatchRejectedError,
                                  errors.BadRequestError, errors.ContextLengthError, errors.NotFoundError,
                                  errors.AuthenticationError, errors.PermissionDeniedError, errors.QuotaExceededError,
                                  errors.ProtocolError, errors.RateLimitError, errors.OverloadedError,
                                  errors.ServerError, errors.TimeoutError, errors.ConnectionError)}
_PAUSE_SLICE_S = 0.2
_MISSING: dict[str, type[errors.ProviderError]] = {  # a request with no result line, by why its batch ended
    "expired": errors.BatchExpiredError, "cancelled": errors.BatchCancelledError, "failed": errors.BatchRejectedError,
}


@dataclass(frozen=True, slots=True)
class BatchHooks:
    """What a batch dispatcher asks of the run it belongs to."""

    stopping: Callable[[], bool]  # a signal or the budget stopped the run: submit no more
    interrupted: Callable[[], bool]  # a signal or a failed write: wait no more (what was submitted waits)
    projection: Callable[[Task], tuple[float, int]]  # what a task may spend: (cost, tokens)
    reserve: Callable[[str, float, int], bool]  # count a task as spent; False when the budget forbids it
    answer: Callable[[Task, Mapping[str, Any]], Awaitable[None]]  # score and write a task's collected answer
    fail: Callable[[Task, errors.ProviderError], Awaitable[None]]  # write a task's error row
    show: Callable[[str], None]  # the batches' state, for the progress display
    detach: bool = False  # submit, then leave without waiting


class BatchDispatcher:
    """The batch side of one backend in one session of a run."""

    def __init__(self, backend: Backend, adapter: BatchAdapter, settings: BatchSettings, store: RunStore,
                 run_id: str, hooks: BatchHooks, window: int, *, label: str | None = None,
                 key_of: Callable[[Task], str] | None = None) -> None:
        self.backend = backend
        # Whose chunks these are in the run store: the backend, or a judge's for one evaluated backend.
        self.label = label or backend.spec.id
        self.key_of = key_of or (lambda task: request_key(task, backend))
        self.adapter = adapter
        self.settings = settings
        self.store = store
        self.run_id = run_id
        self.hooks = hooks
        self.window = window
        self.policy: RetryPolicy = backend.policy
        self.tasks: dict[str, Task] = {}
        self.keys: dict[str, str] = {}

    @property
    def backend_id(self) -> str:
        return self.label

    async def run(self, tasks: Iterable[Task]) -> bool:
        """Answer what was collected, resume the open chunks, submit the rest, then poll and collect.

        True when it left batches at the vendor on purpose (`detach`)."""
        for task in tasks:
            self.tasks[task.task_id] = task
            self.keys[task.task_id] = self.key_of(task)
        chunks = await anyio.to_thread.run_sync(self.store.batch_chunks, self.backend_id)
        open_chunks = [chunk for chunk in chunks if chunk.step != "collected"]
        in_flight = {custom_id for chunk in open_chunks for custom_id, _ in chunk.entries}
        ready, resubmit = await anyio.to_thread.run_sync(self._collected, [t for t in self.tasks if t not in in_flight])
        await self._answer_all([(self.tasks[task_id], payload) for task_id, payload in ready])
        for chunk in open_chunks:  # submitted earlier: already counted against the budget until their rows come
            for custom_id, _ in chunk.entries:
                if custom_id in self.tasks:
                    cost, tokens = self.hooks.projection(self.tasks[custom_id])
                    self.hooks.reserve(custom_id, cost, tokens)
        answered = {task_id for task_id, _ in ready}
        to_submit = [t for t in self.tasks.values() if t.task_id not in in_flight and
                     (t.task_id not in answered or t.task_id in resubmit)]
        for chunk in open_chunks:
            if self.hooks.interrupted():
                return False
            await self._advance(chunk)
        open_chunks = [chunk for chunk in open_chunks if chunk.step != "collected"]
        open_chunks += await self._submit_all(to_submit)
        if self.hooks.detach:
            self._show(open_chunks)
            return bool(open_chunks)
        await self._wait(open_chunks)
        return False

    # -- what an earlier session left ---------------------------------------------------------------------

    def _collected(self, task_ids: Sequence[str]) -> tuple[list[tuple[str, dict[str, Any]]], set[str]]:
        """(task id, payload) of tasks whose batch result is in the store, and those of them to submit again:
        an error whose row is already written (the run asked to retry errors)."""
        ready, resubmit = [], set()
        for task_id in task_ids:
            payload = self.store.cached_response(self.keys[task_id])
            if payload is None:
                continue
            if BATCH_ERROR in payload and self.store.is_finished(task_id):
                resubmit.add(task_id)
            else:
                ready.append((task_id, payload))
        return ready, resubmit

    # -- submitting -----------------------------------------------------------------------------------------

    async def _submit_all(self, tasks: Sequence[Task]) -> list[BatchChunk]:
        """Submit `tasks` in chunks within the vendor's limits and the budget; the chunks submitted."""
        submitted: list[BatchChunk] = []
        entries: list[tuple[Task, dict[str, Any]]] = []
        size = 0
        for task in tasks:
            if self.hooks.stopping():
                break
            try:
                request = (self.backend.provider.prepared_complete(task.prompt_text, call_params(task, self.backend))
                           if task.mode == "completion" else
                           self.backend.provider.prepared_chat(task.messages, call_params(task, self.backend)))
            except errors.EvalpipeError as error:  # refused before sending (a feature the backend lacks)
                await self.hooks.fail(task, errors.BadRequestError(error.message, provider=self.adapter.name))
                continue
            entry = self.adapter.entry(task.task_id, request)
            entry_size = self.adapter.entry_bytes(entry)
            if entries and (len(entries) >= self.settings.max_requests or size + entry_size > self.settings.max_bytes):
                submitted.append(await self._submit([t for t, _ in entries], [e for _, e in entries]))
                entries, size = [], 0
            cost, tokens = self.hooks.projection(task)
            if not self.hooks.reserve(task.task_id, cost, tokens):
                break  # the budget: what is planned so far is still sent
            entries.append((task, entry))
            size += entry_size
        if entries:
            submitted.append(await self._submit([t for t, _ in entries], [e for _, e in entries]))
        return [chunk for chunk in submitted if chunk.step != "collected"]

    async def _submit(self, tasks: Sequence[Task], entries: Sequence[Mapping[str, Any]]) -> BatchChunk:
        ids = [task.task_id for task in tasks]
        chunk_id = "evalpipe-" + stable_hash({"run": self.run_id, "backend": self.backend_id, "tasks": ids}, 20)
        step = "uploading" if self.adapter.uploads else "creating"
        chunk = BatchChunk(chunk_id, self.backend_id, step, [(i, self.keys[i]) for i in ids], time.time())
        await self._record(chunk)  # before anything is sent: a resume finds the marker and looks for it
        await self._advance(chunk, entries)
        return chunk

    async def _advance(self, chunk: BatchChunk, entries: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Take `chunk` from its recorded step as far as it goes without waiting for the vendor."""
        try:
            if chunk.step in ("uploading", "uploaded", "creating"):
                entries = entries if entries is not None else self._entries(chunk)
            if chunk.step == "uploading":
                chunk.file_id = await self._once(lambda: self.adapter.find_upload(chunk.chunk_id),
                                                 lambda: self.adapter.upload(chunk.chunk_id, entries or ()))
                await self._record(chunk, "uploaded")
            if chunk.step in ("uploaded", "creating"):
                await self._record(chunk, "creating")
                remote = await self._once(
                    lambda: self.adapter.find_batch(chunk.chunk_id, chunk.file_id, chunk.step_at, len(chunk.entries)),
                    lambda: self.adapter.create(chunk.chunk_id, chunk.file_id, entries or ()))
                chunk.batch_id, chunk.submitted_at = remote.id, time.time()
                chunk.vendor_status, chunk.counts = remote.vendor_status, dict(remote.counts)
                await self._record(chunk, "submitted")
                log.info("batch submitted", backend=self.backend_id, batch=remote.id, requests=len(chunk.entries))
        except errors.ProviderError as error:
            if error.retryable:  # the vendor is away: the chunk stays where it is and a resume goes on from there
                log.warning("batch step failed; resume to go on", backend=self.backend_id, chunk=chunk.chunk_id,
                            step=chunk.step, error=error.message)
                return
            # Refused outright (a model without batch support, a file the vendor will not take): every
            # request of the chunk ends as an error row that names the cause.
            why = error.message.removeprefix(f"{error.provider}: ")
            rejected = errors.BatchRejectedError(f"the batch was refused: {why}", provider=self.adapter.name)
            await self._collect_as(chunk, {}, "failed", rejected)

    def _entries(self, chunk: BatchChunk) -> list[dict[str, Any]]:
        """A recorded chunk's entries, rebuilt from its tasks (the same job gives the same requests)."""
        entries = []
        for custom_id, _ in chunk.entries:
            task = self.tasks[custom_id]
            params = call_params(task, self.backend)
            request = (self.backend.provider.prepared_complete(task.prompt_text, params) if task.mode == "completion"
                       else self.backend.provider.prepared_chat(task.messages, params))
            entries.append(self.adapter.entry(custom_id, request))
        return entries

    async def _once(self, find: Callable[[], Awaitable[T | None]], make: Callable[[], Awaitable[T]]) -> T:
        """`make` a remote thing exactly once: found first when an earlier attempt may have made it."""
        if (found := await self.policy.run(find))[0] is not None:  # an earlier process's attempt
            return found[0]
        waited, retry_index = 0.0, 0
        while True:
            try:
                return await make()
            except errors.ProviderError as error:
                # The request may have arrived and only its answer been lost: look before making it again.
                waited = await self.policy.wait_or_raise(error, retry_index, waited)
                retry_index += 1
                again, _ = await self.policy.run(find)
                if again is not None:
                    return again

    # -- waiting and collecting -----------------------------------------------------------------------------

    async def _wait(self, chunks: list[BatchChunk]) -> None:
        """Poll the open chunks until each has ended and been collected (or the run stops)."""
        # The budget stops submitting only: what was submitted is paid for, and is collected.
        while chunks and not self.hooks.interrupted():
            for chunk in list(chunks):
                if self.hooks.interrupted():
                    break
                if chunk.step == "submitted":
                    await self._poll(chunk)
                if chunk.step == "ended":
                    await self._collect(chunk)
                if chunk.step == "collected" or chunk.step not in ("submitted", "ended"):
                    chunks.remove(chunk)
            self._show(chunks)
            if chunks:
                await self._pause()

    async def _pause(self) -> None:
        """Wait `poll_interval_s`, or less when the run is interrupted: a signal must not wait for the next poll."""
        # In slices: the runner's first signal only sets a flag (the calls in flight of other backends
        # go on), so the wait looks at it a few times a second.
        slices = max(1, math.ceil(self.settings.poll_interval_s / _PAUSE_SLICE_S))
        for _ in range(slices):
            if self.hooks.interrupted():
                return
            await anyio.sleep(self.settings.poll_interval_s / slices)

    async def _poll(self, chunk: BatchChunk) -> None:
        assert chunk.batch_id is not None
        try:
            remote, _ = await self.policy.run(lambda: self.adapter.poll(chunk.batch_id or ""))
        except errors.ProviderError as error:
            if error.retryable:  # past the retry policy: the vendor may be back at the next poll
                log.warning("batch poll failed; polling again later", batch=chunk.batch_id, error=error.message)
            else:  # the batch is gone or the key refused: stop waiting for it (a resume tries again)
                log.warning("batch poll refused; resume to try again", batch=chunk.batch_id, error=error.message)
                chunk.step = "poll-refused"  # only here: the store keeps "submitted"
            return
        waited_h = (time.time() - (chunk.submitted_at or chunk.step_at)) / 3600
        if not remote.terminal and waited_h > self.settings.max_wait_h and remote.vendor_status != "cancelling":
            log.warning("batch over max_wait_h: cancelling it", batch=chunk.batch_id, waited_h=round(waited_h, 3))
            try:
                await self.policy.run(lambda: self.adapter.cancel(chunk.batch_id or ""))
            except errors.ProviderError as error:
                log.warning("batch cancel failed", batch=chunk.batch_id, error=error.message)
            chunk.detail = f"cancelled after max_wait_h {self.settings.max_wait_h:g}"
        if remote.vendor_status != chunk.vendor_status or remote.counts != chunk.counts or remote.terminal:
            chunk.vendor_status, chunk.counts = remote.vendor_status, dict(remote.counts)
            await self._record(chunk, "ended" if remote.terminal else "submitted")

    async def _collect(self, chunk: BatchChunk) -> None:
        """Download an ended chunk's results, commit them with its "collected" step, then answer its tasks."""
        try:
            remote, _ = await self.policy.run(lambda: self.adapter.poll(chunk.batch_id or ""))
            results, _ = await self.policy.run(lambda: self.adapter.results(remote))
        except errors.ProviderError as error:
            log.warning("batch results could not be downloaded; resume to try again", batch=chunk.batch_id,
                        error=error.message)
            chunk.step = "download-failed"  # left "ended" in the store: a resume downloads again
            return
        missing_kind = _MISSING.get(remote.state, errors.ProtocolError)
        missing = missing_kind(self._missing_message(remote, chunk), provider=self.adapter.name)
        await self._collect_as(chunk, {result.custom_id: result for result in results}, remote.state, missing, remote)

    def _missing_message(self, remote: RemoteBatch, chunk: BatchChunk) -> str:
        if remote.state == "failed":
            first = remote.rejections[0] if remote.rejections else None
            where = "" if first is None or first.line is None else \
                f" at line {first.line + 1} (task {self._custom_id(chunk, first.line)})"
            return f"the batch was rejected at validation{where}: {first.message if first else remote.vendor_status}"
        if remote.state == "expired":
            return "the batch expired before this request was answered"
        if remote.state == "cancelled":
            why = f"; {chunk.detail}" if chunk.detail else ""
            return f"the batch was cancelled before this request was answered{why}"
        return "the batch ended without a result for this request"

    @staticmethod
    def _custom_id(chunk: BatchChunk, line: int) -> str:
        return chunk.entries[line][0] if 0 <= line < len(chunk.entries) else "?"

    async def _collect_as(self, chunk: BatchChunk, results: Mapping[str, ItemResult], state: str,
                          missing: errors.ProviderError, remote: RemoteBatch | None = None) -> None:
        by_line = {r.line: r for r in remote.rejections if r.line is not None} if remote is not None else {}
        turnaround = time.time() - (chunk.submitted_at or chunk.step_at)
        payloads: list[tuple[str, dict[str, Any]]] = []
        for line, (custom_id, key) in enumerate(chunk.entries):
            result = results.get(custom_id)
            if result is not None and result.response is not None:
                result.response.latency_s = turnaround  # from submission to collection: what a batch answer waited
                payloads.append((key, payload_from_response(result.response)))
                continue
            error = result.error if result is not None and result.error is not None else missing
            if line in by_line:  # the vendor named this very line
                rejection = by_line[line]
                error = errors.BatchRejectedError(f"the batch was rejected at validation, line {line + 1} "
                                                  f"(task {custom_id}): {rejection.code}: {rejection.message}",
                                                  provider=self.adapter.name)
            payloads.append((key, {BATCH_ERROR: {"type": error.kind, "message": error.message}}))
        if state == "failed":
            log.warning("batch rejected", backend=self.backend_id, batch=chunk.batch_id, detail=missing.message)
        chunk.detail = chunk.detail or (missing.message if state != "ended" else None)
        chunk.step, chunk.step_at = "collected", time.time()
        await anyio.to_thread.run_sync(self.store.collect_batch_chunk, chunk, payloads)
        await self._answer_all([(self.tasks[custom_id], payload) for (custom_id, _), (_, payload)
                                in zip(chunk.entries, payloads, strict=True) if custom_id in self.tasks])

    async def _answer_all(self, answers: Sequence[tuple[Task, Mapping[str, Any]]]) -> None:
        """Score and write collected answers (and error rows), `window` at a time."""
        limiter = anyio.CapacityLimiter(self.window)

        async def one(task: Task, payload: Mapping[str, Any]) -> None:
            async with limiter:
                if BATCH_ERROR in payload:
                    await self.hooks.fail(task, error_of(payload[BATCH_ERROR], self.adapter.name))
                else:
                    await self.hooks.answer(task, payload)

        async with anyio.create_task_group() as group:
            for task, payload in answers:
                group.start_soon(one, task, payload)

    async def _record(self, chunk: BatchChunk, step: str | None = None) -> None:
        if step is not None:
            chunk.step, chunk.step_at = step, time.time()
        with anyio.CancelScope(shield=True):  # a step that happened is recorded even when the run is cancelled
            await anyio.to_thread.run_sync(self.store.save_batch_chunk, replace(chunk))

    def _show(self, chunks: Sequence[BatchChunk]) -> None:
        states: dict[str, int] = {}
        for chunk in chunks:
            states[chunk.vendor_status or chunk.step] = states.get(chunk.vendor_status or chunk.step, 0) + 1
        shown = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none open"
        self.hooks.show(f"{self.backend_id} batches: {shown}")


class CollectedAnswer:
    """The response cache a collected task is answered from: its batch answer, and nothing is put."""

    def __init__(self, payload: Mapping[str, Any]) -> None:
        self._payload = dict(payload)

    async def get(self, key: str) -> dict[str, Any] | None:
        return self._payload

    async def put(self, key: str, payload: dict[str, Any]) -> None:
        return None


async def answer_rows(task: Task, backend: Backend, criteria: Sequence[Criterion], payload: Mapping[str, Any], *,
                      run_id: str, timeout_s: float, calls: JobCalls | None) -> list[dict[str, Any]]:
    """The rows of a task whose batch answer was collected: scored and shaped as a live answer's.

    `cached` is False: the answer was bought by this run (at the batch price), not reused."""
    rows = await execute_task(task, backend, criteria, run_id=run_id, cache=CollectedAnswer(payload),
                              timeout_s=timeout_s, calls=calls)
    for row in rows:
        row["cached"] = False
    return rows


def error_row(task: Task, backend: Backend, run_id: str, error: errors.ProviderError) -> dict[str, Any]:
    """The row of a task whose batch request failed (classified as a live failure is)."""
    now = datetime.now(UTC)
    return base_row(task, backend, run_id) | {"status": "error", "error_type": error.kind,
                                              "error_message": error.message, "attempts": 1, "started_at": now,
                                              "finished_at": now}


def error_of(recorded: Mapping[str, Any], provider: str) -> errors.ProviderError:
    """A recorded batch error as the error it was (its class by name; a provider error otherwise)."""
    kind = _ERROR_KINDS.get(str(recorded.get("type")), errors.ProviderError)
    error = kind(str(recorded.get("message")), provider="")
    error.provider = provider
    return error


__all__ = ["BATCH_ERROR", "BatchDispatcher", "BatchHooks", "CollectedAnswer", "answer_rows", "error_of", "error_row"]
