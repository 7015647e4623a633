"""Per-backend limits: calls in flight, requests and tokens per minute, adaptive slow-down, pauses.

The runner only talks to the `Limiter` protocol (`slot`, `on_success`, `on_rate_limited`) and the
`Permit` a slot yields, so a shared implementation whose counters all workers see can replace the
in-process `BackendLimiter` when a job shards over several machines.

How `BackendLimiter` keeps a provider's window free of 429s
------------------------------------------------------------
Providers enforce "R requests / T tokens per window W" as a sliding window, a fixed window or a
token bucket. aiolimiter's `AsyncLimiter(R, W)` is a leaky bucket of capacity R: it lets R calls
through at once and R more during the next W, so a sliding window sees up to 2R. Instead, with a
headroom h = 2% (it absorbs the gap between our clock and the server's stamps: h·W, 1.2 s a
minute):

- Requests: a bucket of capacity 1 + s leaking (R - s)·(1-h)/W per second; a call takes 1, so
  calls go out evenly spaced. R + 1 consecutive calls span at least W/(1-h), so no window of
  length W, sliding or fixed, holds more than R, and an even stream never drains a token bucket.
  The slack s (10 ms worth of calls, at most half a call) lets a wake-up that fires late catch
  up; a bucket that must be empty before each call loses every late wake-up for good (2-3% of
  the pace at 10 calls/s, more at higher rates).
- Tokens: a bucket of capacity C = h·T/2 (2 at least) leaking ((1-h)·T - C)/W per second, charged in chunks of
  C/2 so that it is never waited empty (the same late wake-ups). Calls of up to C/2 tokens give
  any window at most C + (1-h)·T - C = (1-h)·T. A bigger call goes out when its last chunk fits,
  its first chunks charged earlier, so a window may hold its excess over C/2 on top: calls up to
  h·T (1,800 tokens at 90k TPM) still stay under T. Beyond that the slow-down below takes over.
  The pace is (1-1.5·h)·T, 97% of the limit.
- One admission lock per backend takes tokens first and the request slot last: a wait for the
  request slot is at most one spacing, so tokens are never charged much before the call leaves,
  while a long wait for tokens after the request slot would let calls out closer than the
  spacing. The lock also keeps admission first-come first-served (aiolimiter serves the smallest
  waiting amount first, which would starve big calls) and keeps one call's chunks together.

Token estimates are corrected after the call. Usage above the estimate becomes debt that the next
admission pays. aiolimiter cannot refund, so usage below the estimate becomes a credit that the
next admissions spend instead of charging the bucket. A credit is sound only while the
over-charge is still in the bucket, and the bucket leaks at most `token rate` per second, so a
credit is worth (over-charge - rate · seconds since admission) and keeps losing that much per
second until spent: an over-estimate of a quick call is nearly all given back, of a slow one not.
A failed call keeps its estimate charged, since the provider may have counted it. Some providers
count their own estimate at admission (OpenAI counts `max_tokens`): estimate the way they do.

Adaptive slow-down (AIMD): a 429 halves the pace of both buckets (floor 5% of the configured
rates), once per round: only a call admitted after the last decrease can decrease it again, so a
burst of 429s from calls sent together counts once. Each quarter window without a 429 adds back
5% of the configured rate: probing in small steps overshoots a lower real limit by little, and
from half speed the configured rate is back within 2.5 windows. A 429 with a `Retry-After` also
pauses every admission of this backend until then; other backends keep going.

aiolimiter is asyncio-only; evalpipe runs anyio on its asyncio backend.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import anyio
import structlog
from aiolimiter import AsyncLimiter

from evalpipe.backends.base import Provider
from evalpipe.backends.retry import RetryPolicy
from evalpipe.errors import ProviderError, RateLimitError
from evalpipe.pipeline.job.projection import image_tokens, tool_tokens
from evalpipe.pipeline.job.spec import BackendSpec
from evalpipe.types import ChatMessage, Tool

T = TypeVar("T")
log = structlog.get_logger("evalpipe.limits")

CHARS_PER_TOKEN = 4  # the usual rule of thumb for English text with BPE tokenizers
HEADROOM = 0.02
AIMD_DECREASE = 0.5
AIMD_FLOOR = 0.05
AIMD_INCREASE = 0.05
RECOVERY_WINDOW_FRACTION = 0.25
TIMER_SLACK_S = 0.01  # how late a wake-up may be without costing throughput
_EPSILON = 1e-9


def estimate_tokens(text: str) -> int:
    """Tokens in `text` by the four-characters-per-token rule of thumb, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


def prompt_tokens(messages: Iterable[ChatMessage], tools: Sequence[Tool] = (), provider: type[Provider] = Provider,
                  model: str = "") -> int:
    """The estimated input tokens of a call: its messages' text and tool calls (by the rule of thumb), the
    tools it offers (their definitions and the vendor's tool prompt) and its images (by `provider`'s image
    rule for `model`), as the vendors count them against a tokens-per-minute limit."""
    messages = list(messages)
    text = sum(estimate_tokens(message.content) + sum(estimate_tokens(c.name + c.arguments_json)
                                                      for c in message.tool_calls) for message in messages)
    return text + tool_tokens(provider, tools) + image_tokens(provider, model, messages)


class Permit(Protocol):
    """Admission of one call; report its real token usage with `settle` once known."""

    @property
    def admitted_at(self) -> float: ...

    def settle(self, actual_tokens: int) -> None: ...


class Limiter(Protocol):
    """What the runner needs from one backend's limits; see the module docstring."""

    def slot(self, estimated_tokens: int = 0) -> AbstractAsyncContextManager[Permit]: ...

    def on_success(self) -> None: ...

    def on_rate_limited(self, retry_after: float | None, permit: Permit | None = None) -> None: ...


async def _take(capacity: anyio.CapacityLimiter) -> object:
    """One place of `capacity`, held by a new borrower (one per call, not per task: a task may hold
    places of several backends in turn); release it with `release_on_behalf_of(borrower)`."""
    borrower = object()
    try:
        # A free place is taken without the two yields to the event loop `acquire_on_behalf_of` makes
        # (a few percent of the pipeline's CPU per task); it still queues behind any waiter.
        capacity.acquire_on_behalf_of_nowait(borrower)
    except anyio.WouldBlock:
        await capacity.acquire_on_behalf_of(borrower)
    return borrower


@asynccontextmanager
async def _borrow(capacity: anyio.CapacityLimiter) -> AsyncIterator[None]:
    borrower = await _take(capacity)
    try:
        yield
    finally:
        capacity.release_on_behalf_of(borrower)


class GlobalLimiter:
    """The job-wide cap on calls in flight, shared by every backend's limiter."""

    def __init__(self, max_concurrency: int) -> None:
        self.capacity = anyio.CapacityLimiter(max_concurrency)

    @property
    def in_flight(self) -> int:
        """Calls holding a place now."""
        return int(self.capacity.borrowed_tokens)

    def slot(self) -> AbstractAsyncContextManager[None]:
        """Hold one of the job's places for the duration of a call."""
        return _borrow(self.capacity)


@dataclass(slots=True)
class BackendPermit:
    """A `Permit` of a `BackendLimiter`."""

    limiter: BackendLimiter
    estimated_tokens: int
    admitted_at: float
    settled: bool = False

    def settle(self, actual_tokens: int) -> None:
        """Correct the token charge from the estimate to `actual_tokens` (once; later calls are ignored)."""
        if not self.settled:
            self.settled = True
            self.limiter._correct(self, actual_tokens)


async def _charge(bucket: AsyncLimiter, amount: float, chunk: float) -> None:
    # aiolimiter refuses amounts above its capacity; bigger charges go in chunks.
    while amount > _EPSILON:
        piece = min(amount, chunk)
        await bucket.acquire(piece)
        amount -= piece


class BackendLimiter:
    """One backend's concurrency, requests-per-minute and tokens-per-minute limits, in process.

    `period_s` is the length of the rate window (60 s in real use; tests shorten it). `rpm` and
    `tpm` are per `period_s`. `shared` adds the job-wide cap.
    """

    def __init__(
        self,
        *,
        name: str = "backend",
        max_concurrency: int | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        period_s: float = 60.0,
        headroom: float = HEADROOM,
        shared: GlobalLimiter | None = None,
        max_pause_s: float = 60.0,
    ) -> None:
        if period_s <= 0 or not 0 <= headroom < 1:
            raise ValueError("period_s must be positive and headroom in [0, 1)")
        if (rpm is not None and rpm <= 0) or (tpm is not None and tpm <= 0):
            raise ValueError("rpm and tpm must be positive")
        self.name = name
        self._concurrency = anyio.CapacityLimiter(max_concurrency) if max_concurrency else None
        self._shared = shared
        self._admission = anyio.Lock()
        self._requests: AsyncLimiter | None = None
        if rpm:
            slack = min(0.5, rpm * TIMER_SLACK_S / period_s)  # in requests
            request_rate = (rpm - slack) * (1 - headroom) / period_s
            self._requests = AsyncLimiter(1 + slack, (1 + slack) / request_rate)
        self._tokens: AsyncLimiter | None = None
        self._token_rate = 0.0  # tokens leaking out of the bucket per second
        self._token_chunk = 0.0
        if tpm:
            burst = max(2.0, tpm * headroom / 2)
            self._token_rate = (tpm * (1 - headroom) - burst) / period_s
            if self._token_rate <= 0:
                raise ValueError(f"tpm={tpm} is too small to pace")
            self._tokens = AsyncLimiter(burst, burst / self._token_rate)
            self._token_chunk = burst / 2
        self._max_pause_s = max_pause_s
        self._recovery_s = period_s * RECOVERY_WINDOW_FRACTION
        self._factor = 1.0
        self._changed_at = -math.inf
        self._decreased_at = -math.inf
        self._paused_until = -math.inf
        self._debt = 0.0
        self._credit = 0.0
        self._credit_at = 0.0

    @classmethod
    def from_spec(
        cls, spec: BackendSpec, *, shared: GlobalLimiter | None = None, period_s: float = 60.0
    ) -> BackendLimiter:
        """The limiter a job file's backend entry asks for."""
        return cls(name=spec.id, max_concurrency=spec.max_concurrency, rpm=spec.rpm, tpm=spec.tpm,
                   period_s=period_s, shared=shared)

    def __repr__(self) -> str:
        return f"BackendLimiter(name={self.name!r}, rate_factor={self._factor:.2f})"

    @property
    def rate_factor(self) -> float:
        """The adaptive share of the configured rates in use now (1.0 when no 429 slowed it)."""
        return self._factor

    @property
    def paused_for(self) -> float:
        """Seconds left of a Retry-After pause (0 when not paused)."""
        return max(self._paused_until - anyio.current_time(), 0.0)

    @asynccontextmanager
    async def slot(self, estimated_tokens: int = 0) -> AsyncIterator[BackendPermit]:
        """Wait for a place, the pause, tokens and the request's turn; the permit is valid inside."""
        # Order matters. The backend's own cap first and the pause before the job-wide place: calls
        # queued behind this backend's cap or waiting out its Retry-After hold none of the places the
        # other backends need. The job-wide place comes before the rates, so an admitted call leaves
        # at once instead of waiting for a place and bunching up with the next ones; only the one call
        # inside the admission lock can hold a place while it waits for its turn.
        # Places are released by hand rather than through an exit stack: this runs once per call.
        own = await _take(self._concurrency) if self._concurrency is not None else None
        shared: object | None = None
        try:
            try:  # the free lock taken without its cancellation checkpoint: a call always yields soon after
                self._admission.acquire_nowait()
            except anyio.WouldBlock:
                await self._admission.acquire()
            try:
                await self._wait_out_pause()
                if self._shared is not None:
                    shared = await _take(self._shared.capacity)
                if self._tokens is not None:
                    await self._charge_tokens(estimated_tokens / self._factor)
                if self._requests is not None:
                    await _charge(self._requests, 1 / self._factor, 1.0)
                await self._wait_out_pause()  # a 429 may have arrived while we waited
            finally:
                self._admission.release()
            yield BackendPermit(self, estimated_tokens, anyio.current_time())
        finally:
            if shared is not None and self._shared is not None:
                self._shared.capacity.release_on_behalf_of(shared)
            if own is not None and self._concurrency is not None:
                self._concurrency.release_on_behalf_of(own)

    def on_success(self) -> None:
        """A call succeeded: after a quarter window free of 429s, speed up by one step."""
        now = anyio.current_time()
        if self._factor < 1.0 and now - self._changed_at >= self._recovery_s:
            self._factor = min(1.0, self._factor + AIMD_INCREASE)
            self._changed_at = now
            log.info("backend speeding up", backend=self.name, rate_factor=round(self._factor, 2))

    def on_rate_limited(self, retry_after: float | None, permit: Permit | None = None) -> None:
        """A call got a 429: pause this backend for `retry_after` seconds if given, and slow down."""
        now = anyio.current_time()
        if retry_after is not None and retry_after > 0:
            until = now + min(retry_after, self._max_pause_s)
            if until > self._paused_until:
                self._paused_until = until
                log.info("backend paused", backend=self.name, seconds=round(until - now, 3))
        admitted = permit.admitted_at if permit is not None else now
        if admitted >= self._decreased_at and (self._requests is not None or self._tokens is not None):
            self._factor = max(self._factor * AIMD_DECREASE, AIMD_FLOOR)
            self._decreased_at = now
            self._changed_at = max(now, self._paused_until)  # recovery counts from the end of a pause
            log.info("backend slowing down", backend=self.name, rate_factor=round(self._factor, 2))

    async def _wait_out_pause(self) -> None:
        # Sleep to the deadline, then look again: another 429 may have moved it further.
        until = self._paused_until
        if until == -math.inf:  # never paused: no clock to read
            return
        while until > anyio.current_time():
            await anyio.sleep_until(until)
            until = self._paused_until

    async def _charge_tokens(self, cost: float) -> None:
        assert self._tokens is not None
        while self._debt > _EPSILON:  # what earlier calls used beyond their estimates
            paid = min(self._debt, self._token_chunk)
            await self._tokens.acquire(paid)
            self._debt -= paid
        # Chunk by chunk, so a credit that comes back while we wait is spent at once.
        while cost > _EPSILON:
            spent = min(self._current_credit(), cost)
            self._credit -= spent
            cost -= spent
            if cost > _EPSILON:
                piece = min(cost, self._token_chunk)
                await self._tokens.acquire(piece)
                cost -= piece

    def _current_credit(self) -> float:
        now = anyio.current_time()
        self._credit = max(self._credit - self._token_rate * (now - self._credit_at), 0.0)
        self._credit_at = now
        return self._credit

    def _correct(self, permit: BackendPermit, actual_tokens: int) -> None:
        if self._tokens is None:
            return
        # Compared with the raw estimate: the slow-down's surcharge is meant to be paid.
        over = permit.estimated_tokens - actual_tokens
        credit = self._current_credit()
        if over < 0:
            offset = min(credit, -over)
            self._credit -= offset
            self._debt += -over - offset
        elif over > 0:
            refund = over - self._token_rate * (anyio.current_time() - permit.admitted_at)
            if refund > 0:
                paid = min(self._debt, refund)
                self._debt -= paid
                self._credit += refund - paid


async def call_with_limits(
    limiter: Limiter,
    policy: RetryPolicy,
    attempt: Callable[[], Awaitable[T]],
    estimated_tokens: int,
    usage_of: Callable[[T], int],
) -> tuple[T, int]:
    """Run `attempt` within `limiter`, retrying per `policy`; returns (result, attempts).

    Every attempt takes a slot, so retries are paced like first tries. A call that fails keeps
    its estimated tokens charged: the provider may have counted them. When the policy gives up,
    the last error is raised with `attempts` set.
    """
    waited = 0.0
    retry_index = 0
    while True:
        async with limiter.slot(estimated_tokens) as permit:
            try:
                result = await attempt()
            except RateLimitError as error:
                limiter.on_rate_limited(error.retry_after, permit)
                failure: ProviderError = error
            except ProviderError as error:
                failure = error
            else:
                permit.settle(usage_of(result))
                limiter.on_success()
                return result, retry_index + 1
        # The wait happens outside the slot: a call backing off must not hold a place in flight.
        waited = await policy.wait_or_raise(failure, retry_index, waited)
        retry_index += 1


__all__ = [
    "BackendLimiter",
    "BackendPermit",
    "GlobalLimiter",
    "Limiter",
    "Permit",
    "call_with_limits",
    "estimate_tokens",
    "prompt_tokens",
]
