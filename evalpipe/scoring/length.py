"""The length criterion: the answer's size within bounds, in characters or words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

from evalpipe.scoring.base import Score
from evalpipe.types import ChatMessage, ChatResponse


class Length:
    """1 when the stripped answer's length is within [`min`, `max`] (either may be left out).

    Outside the bounds the score is 0, or with `falloff` (a fraction, e.g. 0.5) it falls linearly
    from 1 at the bound to 0 at `falloff` × the bound beyond it: an answer of 210 words against
    `max: 200, falloff: 0.5` scores 0.9. Hard bounds suit pass/fail thresholds; a falloff suits a
    weighted total, where a slightly long answer should not count like an empty one.
    """

    def __init__(self, *, min: int | None = None, max: int | None = None,  # noqa: A002 - the job file's words
                 unit: Literal["chars", "words"] = "chars", falloff: float = 0.0, name: str = "length") -> None:
        if min is None and max is None:
            raise ValueError("give `min`, `max` or both")
        if any(bound is not None and (isinstance(bound, bool) or not isinstance(bound, int) or bound < 0)
               for bound in (min, max)):
            raise ValueError(f"bounds must be whole numbers >= 0, got min={min!r}, max={max!r}")
        if min is not None and max is not None and min > max:
            raise ValueError(f"min ({min}) is above max ({max})")
        if unit not in ("chars", "words"):
            raise ValueError(f"unit must be 'chars' or 'words', got {unit!r}")
        if falloff < 0:
            raise ValueError(f"falloff must be >= 0, got {falloff!r}")
        self.minimum, self.maximum, self.unit, self.falloff = min, max, unit, float(falloff)
        self.name = name

    def measure(self, text: str) -> int:
        """The length of `text` in this scorer's unit (code points, or whitespace-separated words)."""
        return len(text.split()) if self.unit == "words" else len(text.strip())

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        length = self.measure(response.text)
        metadata = {"length": length, "unit": self.unit}
        if self.minimum is not None and length < self.minimum:
            why = f"{length} {self.unit}, below the minimum of {self.minimum}"
            return Score(self._falloff(self.minimum - length, self.minimum), why, metadata=metadata)
        if self.maximum is not None and length > self.maximum:
            why = f"{length} {self.unit}, above the maximum of {self.maximum}"
            return Score(self._falloff(length - self.maximum, self.maximum), why, metadata=metadata)
        return Score(1.0, metadata=metadata)

    def _falloff(self, distance: int, bound: int) -> float:
        width = self.falloff * bound
        return 0.0 if width <= 0 else max(0.0, 1.0 - distance / width)
