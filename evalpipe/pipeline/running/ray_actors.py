"""The actors a sharded run shares, and how a worker talks to them.

`LimitsActor` (one per backend) holds a `RateGranter` and a `PlaceGranter`; `BudgetActor` (one per run
with a budget) holds a `BudgetPool`. Their methods are coroutines on the actor's one event loop, so the
long polls (`wait_for_change`, `take_places`) wait without holding a thread and the bookkeeping needs no
lock. `ActorLeases` and `ActorBudget` are the worker's side: the `LeaseSource` and `BudgetSource` that a
`LeasedLimiter` and a `LeasedBudget` are fed by.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from evalpipe.pipeline.running.lease_granter import BudgetPool, Lease, LimitState, PlaceGranter, RateGranter
from evalpipe.pipeline.running.ray_cluster import Actor


class LimitsActor:
    """One backend's rates and places for the whole cluster (runs as a Ray actor)."""

    def __init__(self, rpm: float | None, tpm: float | None, period_s: float, max_concurrency: int) -> None:
        self.rates = RateGranter(rpm=rpm, tpm=tpm, period_s=period_s)
        self.places = PlaceGranter(max_concurrency)
        self._changed = asyncio.Condition()
        self._freed = asyncio.Condition()
        self.rate_limited = 0

    async def lease(self, estimates: Sequence[int], token_correction: float) -> Lease:
        return self.rates.lease(estimates, token_correction)

    async def take_places(self, worker: str, wanted: int, wait: bool, fresh: bool) -> tuple[int, int]:
        async with self._freed:
            granted = self.places.take(worker, wanted, fresh=fresh)
            if fresh:
                self._freed.notify_all()
            while wait and not granted:
                await self._freed.wait()
                granted = self.places.take(worker, wanted)
            return granted, self.places.share()

    async def give_back_places(self, worker: str, places: int, leaving: bool) -> None:
        async with self._freed:
            self.places.give_back(worker, places)
            if leaving:
                self.places.leave(worker)
            self._freed.notify_all()

    async def wait_for_change(self, epoch: int) -> LimitState:
        async with self._changed:
            await self._changed.wait_for(lambda: self.rates.state.epoch > epoch)
            return self.rates.state

    async def on_success(self) -> None:
        before = self.rates.state.epoch
        self.rates.on_success()
        if self.rates.state.epoch != before:
            await self._announce()

    async def on_rate_limited(self, retry_after: float | None, admitted_at: float | None) -> None:
        self.rate_limited += 1
        before = self.rates.state.epoch
        self.rates.on_rate_limited(retry_after, admitted_at)
        if self.rates.state.epoch != before:
            await self._announce()

    async def stats(self) -> dict[str, Any]:
        """Leases served, calls granted, 429s heard, places free, and the state now."""
        state = self.rates.state
        return {"leases": self.rates.leases, "granted": self.rates.granted, "rate_limited": self.rate_limited,
                "places_free": self.places.free, "epoch": state.epoch, "rate_factor": state.rate_factor,
                "paused_until": state.paused_until}

    async def _announce(self) -> None:
        async with self._changed:
            self._changed.notify_all()


class BudgetActor:
    """The run's budget left, for every shard (runs as a Ray actor)."""

    def __init__(self, max_cost_usd: float | None, max_tokens: int | None, spent_cost_usd: float,
                 spent_tokens: int) -> None:
        self.pool = BudgetPool(max_cost_usd, max_tokens, spent_cost_usd, spent_tokens)

    async def grant(self, cost_usd: float, tokens: float) -> tuple[float, float]:
        return self.pool.grant(cost_usd, tokens)

    async def give_back(self, cost_usd: float, tokens: float) -> None:
        self.pool.give_back(cost_usd, tokens)

    async def left(self) -> tuple[float, float]:
        return self.pool.cost_left, self.pool.tokens_left


class ActorLeases:
    """A worker's `LeaseSource` over a `LimitsActor`."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    async def lease(self, estimates: Sequence[int], token_correction: float) -> Lease:
        lease: Lease = await self.actor.call("lease", list(estimates), token_correction)
        return lease

    async def take_places(self, worker: str, wanted: int, wait: bool, fresh: bool) -> tuple[int, int]:
        granted, share = await self.actor.call("take_places", worker, wanted, wait, fresh)
        return int(granted), int(share)

    async def give_back_places(self, worker: str, places: int, leaving: bool) -> None:
        await self.actor.call("give_back_places", worker, places, leaving)

    async def wait_for_change(self, epoch: int) -> LimitState:
        state: LimitState = await self.actor.call("wait_for_change", epoch)
        return state

    def report_success(self) -> None:
        self.actor.send("on_success")

    def report_rate_limited(self, retry_after: float | None, admitted_at: float | None) -> None:
        self.actor.send("on_rate_limited", retry_after, admitted_at)


class ActorBudget:
    """A worker's `BudgetSource` over a `BudgetActor`."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor

    async def grant(self, cost_usd: float, tokens: float) -> tuple[float, float]:
        cost, count = await self.actor.call("grant", cost_usd, tokens)
        return float(cost), float(count)

    async def give_back(self, cost_usd: float, tokens: float) -> None:
        await self.actor.call("give_back", cost_usd, tokens)


__all__ = ["ActorBudget", "ActorLeases", "BudgetActor", "LimitsActor"]
