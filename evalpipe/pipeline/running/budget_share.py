"""A shard's share of a budget that several processes spend together.

The runner's own budget guard counts what its process spent; a sharded run adds a `BudgetShare`,
asked before each task starts. `LeasedBudget` takes pieces of the budget from a pool that all shards
draw on (a Ray actor holding a `BudgetPool`): a task's projection is taken from the piece it holds,
without a remote call while the piece lasts; what a task really spent replaces its projection when it
ends, and `release` gives back what is left when the shard ends. The shards together never start a
task whose projection the budget left cannot cover.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from evalpipe.pipeline.output.rows import spend_of

PIECE_FRACTION = 0.05  # of the budget, taken at a time: 20 remote calls per budget, a shard idles on little


class BudgetShare(Protocol):
    """What the runner asks of a budget shared with other processes."""

    async def reserve(self, cost_usd: float, tokens: int) -> bool:
        """Take a task's projection from the shared budget; False when the budget cannot cover it."""
        ...

    def settle(self, projected_cost_usd: float, projected_tokens: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """A task that reserved its projection ended as `rows`: their real spend replaces it."""
        ...


class BudgetSource(Protocol):
    """The pool the pieces come from."""

    async def grant(self, cost_usd: float, tokens: float) -> tuple[float, float]: ...

    async def give_back(self, cost_usd: float, tokens: float) -> None: ...


class LeasedBudget:
    """A `BudgetShare` that holds a piece of the pool and takes more when a task needs it."""

    def __init__(self, source: BudgetSource, max_cost_usd: float | None, max_tokens: int | None) -> None:
        self._source = source
        self._cost_piece = 0.0 if max_cost_usd is None else max_cost_usd * PIECE_FRACTION
        self._token_piece = 0.0 if max_tokens is None else max_tokens * PIECE_FRACTION
        self._limits_cost = max_cost_usd is not None
        self._limits_tokens = max_tokens is not None
        self.cost_held = 0.0
        self.tokens_held = 0.0

    async def reserve(self, cost_usd: float, tokens: int) -> bool:
        """Take the projection from the piece held, topping it up from the pool when short."""
        cost_short = cost_usd - self.cost_held if self._limits_cost else 0.0
        tokens_short = tokens - self.tokens_held if self._limits_tokens else 0.0
        if cost_short > 0 or tokens_short > 0:
            cost, count = await self._source.grant(max(cost_short, self._cost_piece) if cost_short > 0 else 0.0,
                                                   max(tokens_short, self._token_piece) if tokens_short > 0 else 0.0)
            self.cost_held += cost
            self.tokens_held += count
            if (self._limits_cost and self.cost_held < cost_usd) or (self._limits_tokens and self.tokens_held < tokens):
                return False
        self.cost_held -= cost_usd if self._limits_cost else 0.0
        self.tokens_held -= tokens if self._limits_tokens else 0.0
        return True

    def settle(self, projected_cost_usd: float, projected_tokens: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Give the unspent part of a projection back to the piece held (or take the excess from it)."""
        spent_cost = spent_tokens = 0.0
        for row in rows:
            input_tokens, output_tokens, cost = spend_of(row)
            spent_cost += cost
            spent_tokens += input_tokens + output_tokens
        if self._limits_cost:
            self.cost_held += projected_cost_usd - spent_cost
        if self._limits_tokens:
            self.tokens_held += projected_tokens - spent_tokens

    async def release(self) -> None:
        """Give back what is held (a negative hold tells the pool what was spent beyond the projections)."""
        cost, tokens, self.cost_held, self.tokens_held = self.cost_held, self.tokens_held, 0.0, 0.0
        if cost or tokens:
            await self._source.give_back(cost, tokens)


__all__ = ["BudgetShare", "BudgetSource", "LeasedBudget"]
