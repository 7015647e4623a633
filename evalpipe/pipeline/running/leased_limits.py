"""A `Limiter` whose counters live elsewhere: the limits of one backend shared by every worker of a
cluster, fed by leases from a `LeaseSource` (a Ray actor holding a `RateGranter`, see `lease_granter`).

    calls waiting in this worker ─▶ one lease per batch ─▶ send times ─▶ each call sleeps to its own
    places: taken in batches, kept while a call here waits, given back after `LINGER_S` idle
    `maintain()`: long poll for a new epoch (a 429's pause or slow-down) ─▶ older send times void

A worker makes one remote call per batch of calls that wait together, not one per call: the first
waiter fetches the lease for every call waiting, the others wait for it. A 429 pauses this worker at
once, and is reported to the granter, which tells every worker through `maintain()`.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

import anyio

from evalpipe.pipeline.running.lease_granter import Lease, LimitState
from evalpipe.pipeline.running.limits import (
    RECOVERY_WINDOW_FRACTION,
    TIMER_SLACK_S,
    GlobalLimiter,
    Permit,
    _take,
)

MAX_BATCH = 64  # calls per lease
# A lease also asks for as many send times again as calls wait, kept for the calls that come next: a worker
# whose calls come one at a time still leases once per batch. A kept time is used only until this late
# (the wake-up slack the pacing already allows); later it is dropped, so a window never gets more calls.
SPARE_VALID_S = TIMER_SLACK_S
LINGER_S = 0.05  # an idle place is kept this long before it goes back: the next task of the window takes it


class LeaseSource(Protocol):
    """The granter of one backend, seen from a worker."""

    async def lease(self, estimates: Sequence[int], token_correction: float) -> Lease: ...

    async def take_places(self, worker: str, wanted: int, wait: bool, fresh: bool) -> tuple[int, int]:
        """Up to `wanted` places for `worker` (with `wait`, at least one), and the share a worker may hold;
        `fresh` on its first call: places an earlier, dead run of the same worker held are free again."""
        ...

    async def give_back_places(self, worker: str, places: int, leaving: bool) -> None: ...

    async def wait_for_change(self, epoch: int) -> LimitState:
        """The state once its epoch is past `epoch` (a long poll)."""
        ...

    def report_success(self) -> None:
        """Tell the granter, without waiting, that a call succeeded."""
        ...

    def report_rate_limited(self, retry_after: float | None, admitted_at: float | None) -> None:
        """Tell the granter, without waiting, that a call got a 429."""
        ...


@dataclass(slots=True)
class _Ticket:
    estimate: int
    at: float | None = None
    epoch: int = -1
    gone: bool = False  # its call was cancelled while a lease was being fetched for it


@dataclass(slots=True)
class LeasedPermit:
    """A `Permit` of a `LeasedLimiter`; `admitted_at` is wall-clock time, as the granter's."""

    limiter: LeasedLimiter
    estimated_tokens: int
    admitted_at: float
    settled: bool = False

    def settle(self, actual_tokens: int) -> None:
        """Report the call's real tokens with the next lease (once)."""
        if not self.settled:
            self.settled = True
            self.limiter._correction += actual_tokens - self.estimated_tokens


class LeasedLimiter:
    """One backend's limits, shared through `source` with every worker that holds the same source.

    `cluster_places`: the backend's concurrency is counted by the granter for the whole cluster;
    otherwise `local_places` caps it in this process (a `local` backend: each node has its own server).
    `rated`: the backend has requests or tokens per minute (else only the pause is waited for).
    `worker`: who holds the places (a shard: a rerun of it takes back what its dead process held)."""

    def __init__(self, source: LeaseSource, *, name: str = "backend", cluster_places: bool = True,
                 local_places: int | None = None, shared: GlobalLimiter | None = None,
                 period_s: float = 60.0, rated: bool = True, worker: str | None = None) -> None:
        self.name = name
        self._rated = rated  # without requests or tokens per minute there are no send times to lease
        self._source = source
        self._cluster_places = cluster_places
        self._local = anyio.CapacityLimiter(local_places) if local_places and not cluster_places else None
        self._shared = shared
        self._state = LimitState(0, 0.0, 1.0, 0)
        self._changed = anyio.Event()
        self._waiting: list[_Ticket] = []
        self._spare: deque[tuple[float, int, int]] = deque()  # (send time, epoch, estimate it was leased for)
        self._fetching = False
        self._fetched = anyio.Event()
        self._correction = 0.0
        self._places_free = 0  # places held here and not in use
        self._place_waiters = 0
        self._taking = False
        self._places_changed = anyio.Event()
        self._worker = worker or uuid.uuid4().hex  # who holds places, for the granter's shares
        self._fresh = True
        self._held = 0  # places this worker holds from the granter: in use and free
        self._share = 1
        self._asked_at = -math.inf
        self._idle_since = math.inf
        self._recovery_s = period_s * RECOVERY_WINDOW_FRACTION
        self._reported_success_at = -math.inf
        self.leases = 0  # remote lease calls made

    @property
    def rate_factor(self) -> float:
        """The cluster's adaptive share of the configured rates, as last heard."""
        return self._state.rate_factor

    @property
    def paused_for(self) -> float:
        """Seconds left of a Retry-After pause, as last heard."""
        return max(self._state.paused_until - time.time(), 0.0)

    @asynccontextmanager
    async def slot(self, estimated_tokens: int = 0) -> AsyncIterator[LeasedPermit]:
        """Wait for a place and this call's send time; the permit is valid inside."""
        local = await _take(self._local) if self._local is not None else None
        try:
            if self._cluster_places:
                await self._take_place()
            try:
                shared = await _take(self._shared.capacity) if self._shared is not None else None
                try:
                    await self._send_time(estimated_tokens)
                    yield LeasedPermit(self, estimated_tokens, time.time())
                finally:
                    if shared is not None and self._shared is not None:
                        self._shared.capacity.release_on_behalf_of(shared)
            finally:
                if self._cluster_places:
                    self._give_place()
        finally:
            if local is not None and self._local is not None:
                self._local.release_on_behalf_of(local)

    def on_success(self) -> None:
        """A call succeeded: while slowed down, tell the granter (at most once a quarter window)."""
        now = time.time()
        if self._state.rate_factor < 1.0 and now - self._reported_success_at >= self._recovery_s:
            self._reported_success_at = now
            self._source.report_success()

    def on_rate_limited(self, retry_after: float | None, permit: Permit | None = None) -> None:
        """A call got a 429: pause here at once, and tell the granter, which tells every worker."""
        if retry_after is not None and retry_after > 0:
            until = time.time() + retry_after
            if until > self._state.paused_until:
                self._state = dataclasses.replace(self._state, paused_until=until)
        self._source.report_rate_limited(retry_after, permit.admitted_at if permit is not None else None)

    async def maintain(self) -> None:
        """Run for as long as the limiter is used: hear of new epochs, give back idle places."""
        async with anyio.create_task_group() as group:
            group.start_soon(self._listen)
            if self._cluster_places:
                group.start_soon(self._return_idle_places)

    async def close(self) -> None:
        """Give back every place held and leave the granter's shares (the shard is done)."""
        places, self._places_free, self._held = self._places_free, 0, 0
        if self._cluster_places:
            with anyio.CancelScope(shield=True):
                await self._source.give_back_places(self._worker, places, True)

    # -- send times ---------------------------------------------------------------------------------

    def _apply(self, state: LimitState) -> None:
        if state.epoch > self._state.epoch or (state.epoch == self._state.epoch
                                               and state.paused_until > self._state.paused_until):
            self._state = state
            self._changed.set()
            self._changed = anyio.Event()

    async def _listen(self) -> None:
        while True:
            self._apply(await self._source.wait_for_change(self._state.epoch))

    async def _send_time(self, estimate: int) -> None:
        ticket = _Ticket(estimate)
        self._waiting.append(ticket)
        try:
            while True:
                if ticket.at is None and not self._rated:
                    ticket.at, ticket.epoch = 0.0, self._state.epoch
                if ticket.at is None and self._use_spare(ticket):
                    self._waiting.remove(ticket)
                if ticket.at is None:
                    if self._fetching:
                        await self._fetched.wait()
                    else:
                        await self._fetch()
                    continue
                if ticket.epoch < self._state.valid_from:  # handed out before a 429: void
                    ticket.at = None
                    self._waiting.append(ticket)
                    continue
                delay = max(ticket.at, self._state.paused_until) - time.time()
                if delay <= 0:
                    return
                changed = self._changed
                with anyio.move_on_after(delay):
                    await changed.wait()
        finally:
            ticket.gone = True
            if ticket in self._waiting:
                self._waiting.remove(ticket)

    def _use_spare(self, ticket: _Ticket) -> bool:
        """Give `ticket` the earliest send time kept from a lease that is still good."""
        now = time.time()
        while self._spare:
            at, epoch, estimate = self._spare.popleft()
            if epoch >= self._state.valid_from and at >= now - SPARE_VALID_S:
                ticket.at, ticket.epoch = at, epoch
                self._correction += ticket.estimate - estimate  # it was leased for another estimate
                return True
        return False

    async def _fetch(self) -> None:
        self._fetching = True
        batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
        correction, self._correction = self._correction, 0.0
        try:
            spares = min(len(batch), MAX_BATCH - len(batch))
            typical = sum(ticket.estimate for ticket in batch) // max(len(batch), 1)
            lease = await self._source.lease([ticket.estimate for ticket in batch] + [typical] * spares, correction)
        except BaseException:
            self._correction += correction
            self._waiting[:0] = [ticket for ticket in batch if not ticket.gone]
            raise
        finally:
            self._fetching = False
            self._fetched.set()
            self._fetched = anyio.Event()
        self.leases += 1
        self._apply(lease.state)
        for ticket, at in zip(batch, lease.times, strict=False):
            ticket.at, ticket.epoch = at, lease.state.epoch
        self._spare.extend((at, lease.state.epoch, typical) for at in lease.times[len(batch):])

    # -- places -------------------------------------------------------------------------------------

    async def _take_place(self) -> None:
        self._place_waiters += 1
        try:
            while self._places_free == 0:
                if self._taking or (self._held and time.monotonic() - self._asked_at < LINGER_S):
                    # Places in use here come back here: wait for one (or for the next look at the granter).
                    await self._places_changed.wait()
                    continue
                await self._ask_for_places(wait=not self._held)
            self._places_free -= 1
        finally:
            self._place_waiters -= 1

    async def _ask_for_places(self, *, wait: bool) -> None:
        """Ask the granter for a place per call waiting here; with `wait` (none held here) until one is free."""
        self._taking = True
        try:
            granted, self._share = await self._source.take_places(self._worker, max(self._place_waiters, 1), wait,
                                                                  self._fresh)
            self._fresh = False
            self._held += granted
            self._places_free += granted
            self._asked_at = time.monotonic()
        finally:
            self._taking = False
            self._notify_places()

    def _give_place(self) -> None:
        self._places_free += 1
        if self._place_waiters == 0:
            self._idle_since = min(self._idle_since, time.monotonic())
        self._notify_places()

    def _notify_places(self) -> None:
        self._places_changed.set()
        self._places_changed = anyio.Event()

    async def _return_idle_places(self) -> None:
        """Every `LINGER_S`: give back places idle that long or held beyond the share; while calls wait
        here, look whether the granter has more (a shard that ended left its places)."""
        while True:
            await anyio.sleep(LINGER_S)
            excess = min(self._places_free, self._held - self._share)
            if self._place_waiters:
                self._idle_since = math.inf
                if not self._taking and not self._places_free:
                    await self._ask_for_places(wait=False)
            elif self._places_free and time.monotonic() - self._idle_since >= LINGER_S:
                excess = self._places_free
                self._idle_since = math.inf
            if excess > 0:
                self._places_free -= excess
                self._held -= excess
                with anyio.CancelScope(shield=True):
                    await self._source.give_back_places(self._worker, excess, False)


__all__ = ["LeaseSource", "LeasedLimiter", "LeasedPermit", "MAX_BATCH"]
