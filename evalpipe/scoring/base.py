"""The scorer interface: an async callable that rates one answer in [0, 1], with an optional why.

A plain function is a scorer too: `(text) -> float` or `(item, response) -> float`, sync or async;
`as_scorer` adapts it. A scorer that fails returns a missing score with the reason: it never
raises into the pipeline, so a broken criterion cannot drop a row.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from evalpipe.types import ChatMessage, ChatResponse


@dataclass(frozen=True, slots=True)
class Score:
    """One criterion's verdict: `value` in [0, 1], or None with `error` saying why it is missing."""

    value: float | None
    explanation: str | None = None
    error: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def missing(cls, reason: str) -> Score:
        return cls(None, error=reason)


@runtime_checkable
class Scorer(Protocol):
    """Rates an answer to `messages` about `item`."""

    name: str

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score: ...


class FunctionScorer:
    """A plain (sync or async) function as a scorer; its number is clamped into [0, 1]."""

    def __init__(self, function: Callable[..., Any], name: str | None = None) -> None:
        self.function = function
        self.name: str = name or str(getattr(function, "__name__", "custom"))
        # (text) or (item, response): decided once from the signature, not per call.
        self._wants_item = len(inspect.signature(function).parameters) >= 2

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        try:
            result = self.function(item, response) if self._wants_item else self.function(response.text)
            if isinstance(result, Awaitable):
                result = await result
        except Exception as exc:  # a user's function may fail in any way; the row must survive it
            return Score.missing(f"{self.name} raised {type(exc).__name__}: {exc}")
        return to_score(result, self.name)


def to_score(result: Any, name: str) -> Score:
    """A function's result (a Score, a number, a bool) as a Score in [0, 1]."""
    if isinstance(result, Score):
        return result
    if isinstance(result, bool):
        return Score(1.0 if result else 0.0)
    if isinstance(result, int | float) and math.isfinite(result):
        return Score(min(max(float(result), 0.0), 1.0))
    return Score.missing(f"{name} returned {type(result).__name__}, not a number")


class RenamedScorer:
    """A scorer under another criterion name."""

    def __init__(self, scorer: Scorer, name: str) -> None:
        self.scorer = scorer
        self.name = name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        return await self.scorer(item, messages, response)


def as_scorer(candidate: Scorer | Callable[..., Any], name: str | None = None) -> Scorer:
    """A Scorer as it is (renamed when `name` differs); a plain function wrapped in FunctionScorer."""
    if isinstance(candidate, Scorer) and hasattr(candidate, "name"):
        return candidate if name is None or name == candidate.name else RenamedScorer(candidate, name)
    return FunctionScorer(candidate, name)
