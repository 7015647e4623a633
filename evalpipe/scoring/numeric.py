"""The numeric criterion: the answer's final number against the expected one, within a tolerance.

Which number is the answer's: the one in the last `\\boxed{...}`, else the first after the last
"answer is" / "answer:" / "result:" / "####" marker, else the last number in the text (models
conclude: "6 + 5 = 11" answers 11). Numbers may be negative ("-3", "−3"), decimal ("0.5", ".5"),
have thousands separators ("1,234,567"), be fractions ("3/4"), percentages ("50%", read as 50: the
number as written, so write `expected` the same way) or in scientific notation ("1.5e3").
Parsing is exact (`fractions.Fraction`): "0.75" equals "3/4" without a tolerance.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Any

from jinja2 import TemplateError

from evalpipe.scoring.base import Score
from evalpipe.scoring.prompts import ItemTemplate, clipped
from evalpipe.types import ChatMessage, ChatResponse

_UNSIGNED = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+"
# A sign only where it cannot be a hyphen or a minus between numbers ("3-4" is 3 and 4), and no
# number glued to a word or a decimal point before it ("H2O", the "3" of "1.2.3").
_NUMBER = re.compile(
    rf"(?<![\w.])(?P<sign>[-+\u2212]?)(?P<number>{_UNSIGNED})"
    rf"(?:\s*/\s*(?P<denominator>\d+)(?![.,]\d))?(?P<exponent>[eE][-+]?\d+)?(?P<percent>\s?%)?"
)
_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")
_MARKER = re.compile(r"(?:\banswer\s*(?:is|:|=)|\bresult\s*(?:is|:|=)|####)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ReadNumber:
    """A number found in a text: its exact value and the characters it was read from."""

    value: Fraction
    text: str


def numbers_in(text: str) -> list[ReadNumber]:
    """Every number in `text`, in order."""
    found = []
    for match in _NUMBER.finditer(text):
        value = Fraction(match["number"].replace(",", ""))
        if match["denominator"] is not None:
            if int(match["denominator"]) == 0:
                continue  # "1/0" is no number; its parts are not read separately either
            value /= int(match["denominator"])
        if match["exponent"] is not None:
            value *= Fraction(10) ** int(match["exponent"][1:])
        if match["sign"] in ("-", "\u2212"):
            value = -value
        found.append(ReadNumber(value, match[0].strip()))
    return found


def final_number(text: str) -> ReadNumber | None:
    """The number an answer gives as its result (see the module docstring), or None."""
    boxed = _BOXED.findall(text)
    if boxed and (inside := numbers_in(boxed[-1])):
        return inside[-1]
    markers = list(_MARKER.finditer(text))
    if markers and (after := numbers_in(text[markers[-1].end():])):
        return after[0]
    everywhere = numbers_in(text)
    return everywhere[-1] if everywhere else None


def shown(value: Fraction) -> str:
    """`value` as a person writes it: 11, -2.5, 0.1, and 1/3 for what no decimal ends."""
    rest = value.denominator
    for factor in (2, 5):
        while rest % factor == 0:
            rest //= factor
    if rest != 1:
        return str(value)
    return format(Decimal(value.numerator) / Decimal(value.denominator), "f")


class Numeric:
    """1 when the answer's final number equals `expected` (an item template) within the tolerance.

    Equal means |answer − expected| <= max(`abs_tol`, `rel_tol` × |expected|); both default to 0,
    exact, since parsing is exact. The explanation says which number was read, or that there was none.
    """

    def __init__(self, expected: str, *, abs_tol: float = 0.0, rel_tol: float = 0.0, name: str = "numeric") -> None:
        for option, tolerance in (("abs_tol", abs_tol), ("rel_tol", rel_tol)):
            if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not tolerance >= 0:
                raise ValueError(f"{option} must be a number >= 0, got {tolerance!r}")
        self.expected = ItemTemplate(str(expected))
        self.abs_tol, self.rel_tol = Fraction(str(abs_tol)), Fraction(str(rel_tol))
        self.name = name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        try:
            expected_text = self.expected.render(item)
        except TemplateError as exc:
            return Score.missing(f"expected: {exc}")
        expected = final_number(expected_text)
        if expected is None:
            return Score.missing(f"expected: no number in {clipped(expected_text, 80)!r}")
        read = final_number(response.text)
        if read is None:
            return Score(0.0, f"no number in the answer; expected {shown(expected.value)}",
                         metadata={"expected": float(expected.value)})
        tolerance = max(self.abs_tol, self.rel_tol * abs(expected.value))
        ok = abs(read.value - expected.value) <= tolerance
        verdict = "equals" if ok else "differs from"
        within = f" within {float(tolerance):g}" if tolerance else ""
        why = f"read {shown(read.value)} (from {read.text!r}), {verdict} the expected {shown(expected.value)}{within}"
        return Score(1.0 if ok else 0.0, why, metadata={"read": float(read.value), "expected": float(expected.value)})
