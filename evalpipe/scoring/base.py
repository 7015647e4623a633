"""The scorer interface: an async callable that rates one answer in [0, 1], with an optional why.

A plain function is a scorer too: `(text) -> float` or `(item, response) -> float`, sync or async;
`as_scorer` adapts it. A scorer that fails returns a missing score with the reason: it never
raises into the pipeline, so a broken criterion cannot drop a row.

A function's number is mapped onto [0, 1] from its declared scale (default [0, 1]). A number outside
that scale is never clamped silently: the score holds the clamped value (a 2.0 from a function meaning
"more than full marks" still ranks as full marks, rather than vanishing from the total), its
explanation says "clamped to 1 from 2", its metadata keeps `raw_score`, and a `ScoreRangeWarning`
names the criterion the first time it happens.
"""

from __future__ import annotations

import inspect
import math
import warnings
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


class ScoreRangeWarning(UserWarning):
    """A function criterion returned a number outside its scale; its scores are clamped, each saying so."""


class FunctionScorer:
    """A plain (sync or async) function as a scorer; its number is mapped onto [0, 1] from `scale`."""

    def __init__(self, function: Callable[..., Any], name: str | None = None, *,
                 scale: tuple[float, float] | None = None) -> None:
        self.function = function
        self.name: str = name or str(getattr(function, "__name__", "custom"))
        self.scale = scale
        self._warned = False  # once per criterion: a warning per row would bury the first one
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
        score = to_score(result, self.name, self.scale)
        if score.metadata.get("clamped") and not self._warned:
            self._warned = True
            hint = " (declare its scale, or return a number in [0, 1])" if self.scale is None else ""
            warnings.warn(f"criterion {self.name!r}: {score.explanation}{hint}; later clamped scores say so in "
                          "their explanation only", ScoreRangeWarning, stacklevel=2)
        return score


def to_score(result: Any, name: str, scale: tuple[float, float] | None = None) -> Score:
    """A function's result (a Score, a number on `scale`, a bool) as a Score in [0, 1].

    A number outside the scale is clamped into it, and the Score says so: its explanation names the
    number it was clamped from and its metadata holds `raw_score` and `clamped`."""
    if isinstance(result, Score):
        return result
    if isinstance(result, bool):
        return Score(1.0 if result else 0.0)
    if not (isinstance(result, int | float) and math.isfinite(result)):
        return Score.missing(f"{name} returned {result!r:.80}, not a finite number")
    raw = float(result)
    low, high = scale if scale is not None else (0.0, 1.0)
    value = (raw - low) / (high - low)
    if 0.0 <= value <= 1.0:
        return Score(value, metadata={"raw_score": raw})
    clamped = min(max(value, 0.0), 1.0)
    why = f"outside the declared scale [{low:g}, {high:g}]" if scale is not None else (
        "outside [0, 1], and no scale was declared")
    explanation = f"clamped to {clamped:g} from {raw:g}: {why}"
    return Score(clamped, explanation, metadata={"raw_score": raw, "clamped": True})


class RenamedScorer:
    """A scorer under another criterion name."""

    def __init__(self, scorer: Scorer, name: str) -> None:
        self.scorer = scorer
        self.name = name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        return await self.scorer(item, messages, response)


def as_scorer(candidate: Scorer | Callable[..., Any], name: str | None = None, *,
              scale: tuple[float, float] | None = None) -> Scorer:
    """A Scorer as it is (renamed when `name` differs); a plain function wrapped in FunctionScorer."""
    if isinstance(candidate, Scorer) and hasattr(candidate, "name"):
        return candidate if name is None or name == candidate.name else RenamedScorer(candidate, name)
    return FunctionScorer(candidate, name, scale=scale)
