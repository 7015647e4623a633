"""A configured backend of a job (its spec, provider, limits, retry policy and prices) and the response
cache every call goes through: what generation, chain steps and scorers' model calls share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from evalpipe.backends.base import Provider
from evalpipe.backends.retry import RetryPolicy
from evalpipe.pipeline.job.batch_mode import price_factor
from evalpipe.pipeline.job.spec import BackendSpec
from evalpipe.pipeline.running.limits import Limiter
from evalpipe.types import Usage


class ResponseCache(Protocol):
    """Answers already paid for, keyed by the exact request; `put` returns once it is durable."""

    async def get(self, key: str) -> dict[str, Any] | None: ...

    async def put(self, key: str, payload: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Backend:
    """A configured backend of the job: its spec, provider, limits and retry policy."""

    spec: BackendSpec
    provider: Provider
    limiter: Limiter
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    # The request keys' canonical JSON that depends only on this backend and a parameter set, by the
    # set's id (with the set, so that an id reused by another set is not mistaken for it): `request_key`.
    request_parts: dict[int, tuple[Any, tuple[str, str]]] = field(default_factory=dict, compare=False, repr=False)
    # The row columns that depend only on this backend and a parameter set, keyed the same way: `base_row`.
    row_parts: dict[int, tuple[Any, dict[str, Any]]] = field(default_factory=dict, compare=False, repr=False)

    def cost(self, usage: Usage) -> float:
        """What `usage` cost: at the batch discount for a backend in batch mode."""
        return usage_cost(usage, self.spec) * price_factor(self.spec)


def usage_cost(usage: Usage, spec: BackendSpec) -> float:
    """What `usage` costs at `spec`'s prices: cached input and cache writes at their own prices when set."""
    cached, written = usage.cached_input_tokens, usage.cache_write_input_tokens
    plain = max(usage.input_tokens - cached - written, 0)
    cached_price = spec.price_input_per_1m if spec.price_cached_input_per_1m is None else spec.price_cached_input_per_1m
    write_price = (spec.price_input_per_1m if spec.price_cache_write_input_per_1m is None
                   else spec.price_cache_write_input_per_1m)
    return (plain * spec.price_input_per_1m + cached * cached_price + written * write_price
            + usage.output_tokens * spec.price_output_per_1m) / 1_000_000
