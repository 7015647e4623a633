"""The response cache of a run, kept in its run store: an answer paid for is committed as soon as the
run's writer can take it, without the task that paid for it waiting on the commit."""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Sequence
from typing import Any

import anyio

from evalpipe.pipeline.output.store import RunStore, WriteFailed

Put = tuple[str, dict[str, Any]]
# The cache and ticket of the last answer the current task queued (the runner's tasks are long-lived workers).
_last_put: contextvars.ContextVar[tuple[StoreCache, int] | None] = contextvars.ContextVar("evalpipe_last_put",
                                                                                          default=None)


class StoreCache:
    """The response cache in the run store.

    Alone, a `put` is committed before it returns; puts that arrive while another is being written
    wait and go together in the next trip to a worker thread (a trip costs more than the insert, and
    answers arrive in bursts). Once a writer is attached (`hand_to_writer`), a `put` only queues the
    answer and wakes the writer, which commits the queued answers in its own next trip (`take`), with
    the rows it is writing: the task goes on to scoring meanwhile, and the event loop pays no trip of
    its own per answer. The task's next lookup (made before each call) waits until its answers are
    committed (`settled`), so a killed run still loses at most one answer per call that could be in flight."""

    def __init__(self, store: RunStore, *, empty: bool, on_failure: Callable[[WriteFailed], None]) -> None:
        self._store = store
        self._on_failure = on_failure  # a put that cannot be written stops the run
        # A new run's cache starts empty and a task's key is only ever looked up by that task, so a
        # new run needs no lookups at all (each would cost a trip to a worker thread).
        self._empty = empty
        self._queued: list[Put] = []
        self._tickets = 0  # puts queued so far; a put's ticket is its number
        self._committed = 0  # every put up to this ticket is committed
        self._writing: anyio.Event | None = None  # set when the batch being written is committed
        self._failure: BaseException | None = None
        self._wake: Callable[[], None] | None = None  # the writer's, once attached
        self._committed_event: anyio.Event | None = None  # set when the writer commits (`settled` waits)

    def hand_to_writer(self, wake: Callable[[], None]) -> None:
        """From now on puts are queued for a writer that calls `take`; `wake()` tells it one is waiting."""
        self._wake = wake

    def take(self) -> tuple[list[Put], int]:
        """The queued puts, for the writer to commit (`RunStore.cache_responses`), and the ticket to pass to
        `committed` once they are; the queue is emptied."""
        queued, self._queued = self._queued, []
        return queued, self._tickets

    def committed(self, ticket: int) -> None:
        """The writer committed every put up to `ticket`: the tasks waiting for theirs go on."""
        self._committed = max(self._committed, ticket)
        event, self._committed_event = self._committed_event, None
        if event is not None:
            event.set()

    async def settled(self) -> None:
        """Return once the answers the current task queued are committed (at once when they are)."""
        last = _last_put.get()
        if last is None or last[0] is not self:
            return
        while self._committed < last[1] and self._failure is None:
            if self._committed_event is None:
                self._committed_event = anyio.Event()
            await self._committed_event.wait()

    def flush(self) -> None:
        """Commit what is still queued, here and now (the end of a run, after its writer stopped)."""
        if self._queued:
            puts, ticket = self.take()
            self._store.cache_responses(puts)
            self.committed(ticket)

    async def get(self, key: str) -> dict[str, Any] | None:
        # Every call is looked up first: a task that put answers waits here until they are committed, so
        # it never holds an uncommitted answer and a call in flight at once (a kill loses one or the other).
        await self.settled()
        if self._empty:
            return None
        return await anyio.to_thread.run_sync(self._store.cached_response, key)

    async def put(self, key: str, payload: dict[str, Any]) -> None:
        if self._wake is not None:
            # Not awaited: a put cannot be cancelled half-way, so an answer that was paid for is queued
            # even when the run is being cancelled; the run commits what is left when it ends.
            self._queued.append((key, payload))
            self._tickets += 1
            _last_put.set((self, self._tickets))
            if len(self._queued) == 1:
                self._wake()
            return
        # Shielded: an answer that was paid for is recorded even when the run is being cancelled.
        with anyio.CancelScope(shield=True):
            self._tickets += 1
            ticket = self._tickets
            self._queued.append((key, payload))
            while self._committed < ticket:
                if self._failure is not None:
                    return  # the run is stopping (see below); the answer is lost, a resume pays for it again
                if self._writing is not None:
                    await self._writing.wait()
                    continue
                batch, self._queued, last = self._queued, [], self._tickets
                written = self._writing = anyio.Event()
                try:
                    await anyio.to_thread.run_sync(self._write, batch)
                    self._committed = last
                except WriteFailed as error:
                    # Not raised into the task: it would become an error row (and a traceback) per task
                    # in flight; the run stops instead, and the task is cancelled with it.
                    self._failure = error
                    self._on_failure(error)
                    return
                except BaseException as error:
                    self._failure = error
                    raise
                finally:
                    self._writing = None
                    written.set()

    def _write(self, batch: Sequence[Put]) -> None:
        self._store.cache_responses(batch)  # one transaction: one commit for the whole batch


__all__ = ["StoreCache"]
