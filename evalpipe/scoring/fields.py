"""field: a criterion on a column of the row rather than on the answer's text.

`{type: field, field: latency_s, max: 2.0}` scores 1 when the call took at most 2 s;
`{type: field, field: finish_reason, equals: stop}` scores 1 when the answer was not cut off
(`equals` may be a list: any of them). Add `threshold: 1` to make it decide `passed`.

Most fields are the answer's own (latency, tokens, finish reason); `cost_usd` is worked out by the
pipeline from the backend's prices, and is handed to scorers with `row_columns` while it scores.
"""

from __future__ import annotations

import contextvars
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from evalpipe.scoring.base import Score
from evalpipe.scoring.context_value import ContextValue
from evalpipe.types import ChatMessage, ChatResponse

_row: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar("evalpipe_row_columns",
                                                                                default=None)

# The fields a criterion may read, from the answer, or (cost) from the row the pipeline is building.
_FROM_RESPONSE: dict[str, Callable[[ChatResponse], Any]] = {
    "latency_s": lambda r: r.latency_s,
    "ttft_s": lambda r: r.ttft_s,
    "finish_reason": lambda r: r.finish_reason,
    "model": lambda r: r.model,
    "attempts": lambda r: r.attempts,
    "input_tokens": lambda r: r.usage.input_tokens,
    "output_tokens": lambda r: r.usage.output_tokens,
    "reasoning_tokens": lambda r: r.usage.reasoning_tokens,
    "total_tokens": lambda r: r.usage.total_tokens,
}
_FROM_ROW = ("cost_usd",)
FIELDS = (*_FROM_RESPONSE, *_FROM_ROW)
_NUMERIC = frozenset(FIELDS) - {"finish_reason", "model"}


def row_columns(**columns: Any) -> AbstractContextManager[None]:
    """While scoring an answer: row columns worked out outside it (`cost_usd`) for field criteria."""
    return ContextValue(_row, columns, None)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class FieldCriterion:
    """1 when the row's `field` is within [`min`, `max`] and/or one of `equals`; 0 otherwise."""

    def __init__(self, field: str, *, min: float | None = None, max: float | None = None,  # noqa: A002
                 equals: Any = None, name: str | None = None) -> None:
        if field not in FIELDS:
            raise ValueError(f"field must be one of {', '.join(FIELDS)}; got {field!r}")
        if min is None and max is None and equals is None:
            raise ValueError("give `min`, `max` or `equals`")
        if (min is not None or max is not None) and field not in _NUMERIC:
            raise ValueError(f"{field} is not a number: use `equals`, not `min` / `max`")
        if any(bound is not None and not _is_number(bound) for bound in (min, max)):
            raise ValueError(f"min and max must be numbers, got min={min!r}, max={max!r}")
        if min is not None and max is not None and min > max:
            raise ValueError(f"min ({min}) is above max ({max})")
        self.field, self.minimum, self.maximum = field, min, max
        self.equals: list[Any] | None = None if equals is None else (
            list(equals) if isinstance(equals, Sequence) and not isinstance(equals, str) else [equals])
        self.name = name or field

    def value(self, response: ChatResponse) -> Any:
        """The field's value for this answer (None when it is not known)."""
        if self.field in _FROM_ROW:
            return (_row.get() or {}).get(self.field)
        return _FROM_RESPONSE[self.field](response)

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        value = self.value(response)
        if value is None:
            return Score.missing(f"{self.field} is not known for this answer")
        metadata = {"value": value}
        if self.equals is not None and value not in self.equals:
            wanted = " or ".join(repr(v) for v in self.equals)
            return Score(0.0, f"{self.field} is {value!r}, not {wanted}", metadata=metadata)
        if self.minimum is not None and value < self.minimum:
            return Score(0.0, f"{self.field} {value:g}, below the minimum of {self.minimum:g}", metadata=metadata)
        if self.maximum is not None and value > self.maximum:
            return Score(0.0, f"{self.field} {value:g}, above the maximum of {self.maximum:g}", metadata=metadata)
        return Score(1.0, f"{self.field} {value!r}" if isinstance(value, str) else f"{self.field} {value:g}",
                     metadata=metadata)
