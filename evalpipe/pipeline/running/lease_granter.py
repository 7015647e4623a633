"""The bookkeeping behind cluster-wide limits: one `RateGranter` per backend hands out leases of send
times, one `BudgetPool` per job hands out shares of the budget. Plain objects: a Ray actor holds them
(`running.ray_actors`), and a test can hold them in process.

Leases of send times
--------------------
A worker asks for a lease for the calls it has waiting (their token estimates) and gets one send time
per call: the granter is a generic cell-rate scheduler (GCRA) over requests and over tokens, so the
times it hands out, to every worker together, are spaced exactly as the in-process `BackendLimiter`
spaces one process's calls: requests evenly at (R - slack)·(1 - h) per window, tokens at
(1 - h)·T - C per window with a burst of C (see `limits` for why). A worker makes one remote call per
batch of waiting calls, not per call, and sends each call at its time.

A 429 halves the rates (AIMD, floor 5%, once per round, back by 5% per quarter window without one)
and a Retry-After moves `paused_until`; each change bumps `epoch`. Workers learn of a new epoch
through a long poll (`wait_for_change`); after a 429 they drop the send times they still hold and
lease again, so the slow-down and the pause reach every worker at once (a speed-up keeps them: the
times were paced slower than needed, and dropping them would waste their share of the window).
Times are wall-clock (`time.time()`): workers on other machines compare them with their own clocks,
which NTP keeps within milliseconds.

Concurrency places are handed out and given back in batches too: a worker keeps a place while it has
a call waiting for one and gives back only what it does not need.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from evalpipe.pipeline.running.limits import (
    AIMD_DECREASE,
    AIMD_FLOOR,
    AIMD_INCREASE,
    HEADROOM,
    RECOVERY_WINDOW_FRACTION,
    TIMER_SLACK_S,
)


@dataclass(frozen=True, slots=True)
class LimitState:
    """What every worker must know at once: the pause, the adaptive factor, and their epoch. Send times
    handed out before epoch `valid_from` (before the last 429) are void; a speed-up does not void them."""

    epoch: int
    paused_until: float
    rate_factor: float
    valid_from: int = 0


@dataclass(frozen=True, slots=True)
class Lease:
    """Send times, one per call asked for, valid while `state.epoch` is the granter's."""

    times: tuple[float, ...]
    state: LimitState


class RateGranter:
    """One backend's requests and tokens per window, for every worker of a cluster."""

    def __init__(self, *, rpm: float | None = None, tpm: float | None = None, period_s: float = 60.0,
                 headroom: float = HEADROOM, max_pause_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._request_interval = 0.0  # seconds per request at full rate (0: unlimited)
        self._request_tolerance = 0.0
        if rpm:
            slack = min(0.5, rpm * TIMER_SLACK_S / period_s)
            self._request_interval = period_s / ((rpm - slack) * (1 - headroom))
            self._request_tolerance = slack * self._request_interval
        self._token_rate = 0.0  # tokens per second at full rate (0: unlimited)
        self._token_tolerance = 0.0
        if tpm:
            burst = max(2.0, tpm * headroom / 2)
            self._token_rate = (tpm * (1 - headroom) - burst) / period_s
            if self._token_rate <= 0:
                raise ValueError(f"tpm={tpm} is too small to pace")
            self._token_tolerance = burst / self._token_rate
        self._requests_due = -math.inf  # GCRA's theoretical arrival times
        self._tokens_due = -math.inf
        self._max_pause_s = max_pause_s
        self._recovery_s = period_s * RECOVERY_WINDOW_FRACTION
        self._epoch = 0
        self._valid_from = 0
        self._paused_until = 0.0
        self._factor = 1.0
        self._changed_at = -math.inf
        self._decreased_at = -math.inf
        self.leases = 0  # remote calls served: the cost the benchmark reports per call
        self.granted = 0

    @property
    def state(self) -> LimitState:
        """The pause, factor and epoch now."""
        return LimitState(self._epoch, self._paused_until, self._factor, self._valid_from)

    def lease(self, estimates: Sequence[int], token_correction: float = 0.0) -> Lease:
        """One send time per call of `estimates` (its estimated tokens); `token_correction` is what the
        worker's calls used beyond (positive) or below (negative) their estimates since its last lease."""
        now = self._clock()
        self.leases += 1
        self.granted += len(estimates)
        if self._token_rate and token_correction:
            corrected = self._tokens_due + token_correction / (self._token_rate * self._factor)
            # A credit cannot reach further back than the bucket's burst: unused tokens of the past are gone.
            self._tokens_due = max(corrected, now - self._token_tolerance)
        times = []
        for estimate in estimates:
            at = max(now, self._paused_until)
            if self._request_interval:
                at = max(at, self._requests_due - self._request_tolerance)
                self._requests_due = max(self._requests_due, at) + self._request_interval / self._factor
            if self._token_rate:
                at = max(at, self._tokens_due - self._token_tolerance)
                self._tokens_due = max(self._tokens_due, at) + estimate / (self._token_rate * self._factor)
            times.append(at)
        return Lease(tuple(times), self.state)

    def on_success(self) -> None:
        """A worker's call succeeded: after a quarter window free of 429s, speed up by one step."""
        now = self._clock()
        if self._factor < 1.0 and now - self._changed_at >= self._recovery_s:
            self._factor = min(1.0, self._factor + AIMD_INCREASE)
            self._changed_at = now
            self._epoch += 1

    def on_rate_limited(self, retry_after: float | None, admitted_at: float | None) -> LimitState:
        """A worker's call got a 429 (it was sent at `admitted_at`): pause and slow down every worker."""
        now = self._clock()
        changed = False
        if retry_after is not None and retry_after > 0:
            until = now + min(retry_after, self._max_pause_s)
            if until > self._paused_until:
                self._paused_until = until
                changed = True
        admitted = now if admitted_at is None else admitted_at
        if admitted >= self._decreased_at and (self._request_interval or self._token_rate):
            self._factor = max(self._factor * AIMD_DECREASE, AIMD_FLOOR)
            self._decreased_at = now
            self._changed_at = max(now, self._paused_until)
            changed = True
        if changed:
            self._epoch += 1
            self._valid_from = self._epoch
            # Times already handed out are void: the next ones start after the pause, at the new pace.
            self._requests_due = min(self._requests_due, now)
            self._tokens_due = min(self._tokens_due, now)
        return self.state


class PlaceGranter:
    """One backend's calls in flight across the cluster. A worker holds at most its fair share (the
    capacity over the workers holding or wanting places) while others want some, so no worker keeps
    them all; what a worker gives back, or holds when it leaves, goes to the others."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.free = capacity
        self.held: dict[str, int] = {}

    def share(self) -> int:
        """The places one worker may hold now."""
        return max(1, -(-self.capacity // max(1, len(self.held))))

    def take(self, worker: str, wanted: int, *, fresh: bool = False) -> int:
        """Up to `wanted` places for `worker`, within its share and what is free (0 when none is).

        `fresh`: the worker starts again (a shard rerun after its process died): what its dead run held
        is free again. A shard runs in one process at a time (its run directory's lock), so that run is over."""
        if fresh:
            self.leave(worker)
        held = self.held.setdefault(worker, 0)
        granted = max(0, min(wanted, self.free, self.share() - held))
        self.free -= granted
        self.held[worker] = held + granted
        return granted

    def give_back(self, worker: str, places: int) -> None:
        """Return places `worker` no longer needs."""
        places = min(places, self.held.get(worker, 0))
        self.free += places
        self.held[worker] = self.held.get(worker, 0) - places

    def leave(self, worker: str) -> None:
        """`worker` is done: what it holds is free again and it no longer counts for the shares."""
        self.free += self.held.pop(worker, 0)


class BudgetPool:
    """The job's budget left, shared out to shards in pieces (`inf`: that dimension has no limit)."""

    def __init__(self, max_cost_usd: float | None, max_tokens: int | None, spent_cost_usd: float = 0.0,
                 spent_tokens: int = 0) -> None:
        self.cost_left = math.inf if max_cost_usd is None else max_cost_usd - spent_cost_usd
        self.tokens_left = math.inf if max_tokens is None else float(max_tokens - spent_tokens)

    def grant(self, cost_usd: float, tokens: float) -> tuple[float, float]:
        """Up to (`cost_usd`, `tokens`) of what is left, taken out of it."""
        cost = min(cost_usd, max(self.cost_left, 0.0))
        count = min(tokens, max(self.tokens_left, 0.0))
        self.cost_left -= cost
        self.tokens_left -= count
        return cost, count

    def give_back(self, cost_usd: float, tokens: float) -> None:
        """What a shard did not spend of its share (negative: what it spent beyond it)."""
        self.cost_left += cost_usd
        self.tokens_left += tokens


__all__ = ["BudgetPool", "Lease", "LimitState", "PlaceGranter", "RateGranter"]
