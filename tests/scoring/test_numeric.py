"""numeric: the answer's final number against the expected one, and what number was read."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from evalpipe import ChatResponse, ConfigError
from evalpipe.scoring.base import Score
from evalpipe.scoring.numeric import final_number
from evalpipe.scoring.registry import build_scorer

pytestmark = pytest.mark.anyio


async def numeric(answer: str, expected: Any = "{{ expected }}", item: dict[str, Any] | None = None,
                  **options: Any) -> Score:
    scorer = build_scorer("numeric", None, {"expected": expected, **options})
    return await scorer(item or {}, [], ChatResponse(text=answer))


@pytest.mark.parametrize(("text", "value"), [
    ("42", 42),
    ("The answer is 42.", 42),
    ("6 + 5 = 11", 11),                      # models conclude: the last number is the answer
    ("There are 1,234,567 people.", 1234567),
    ("3/4", Fraction(3, 4)),
    ("It is -3.5 degrees", Fraction(-7, 2)),
    ("\u22122", -2),                          # a typographic minus
    ("pages 3-4", 4),                         # a hyphen between numbers is no sign
    ("10-3=7", 7),
    ("50%", 50),                              # as written
    (".5", Fraction(1, 2)),
    ("1.5e3", 1500),
    ("Answer: 7. Because 3 + 4 is 7, not 8", 7),  # the number after the last answer marker
    (r"so \boxed{12} and then 13", 12),
    ("#### 72", 72),
])
async def test_the_final_number_is_read_in_its_many_spellings(text: str, value: Fraction | int) -> None:
    read = final_number(text)
    assert read is not None and read.value == value


@pytest.mark.parametrize("text", ["no number here", "H2O", "1/0", "v1.2.3", ""])
async def test_texts_without_a_number(text: str) -> None:
    assert final_number(text) is None


async def test_fourteen_is_not_four_and_eighteen_is_not_eight() -> None:
    # The bug of `contains "4"`: it passed "14". Numbers are compared by value.
    assert (await numeric("14", "4")).value == 0.0
    assert (await numeric("18", "{{ expected }}", {"expected": 8})).value == 0.0
    assert (await numeric("4.5", "4")).value == 0.0


async def test_equal_values_in_different_spellings_match() -> None:
    assert (await numeric("0.75", "3/4")).value == 1.0
    assert (await numeric("It's 1,969.", "1969")).value == 1.0
    assert (await numeric("30.0", "30")).value == 1.0


async def test_the_explanation_says_what_number_was_read() -> None:
    hit = await numeric("6 + 5 = 11", "11")
    assert hit.value == 1.0 and hit.explanation == "read 11 (from '11'), equals the expected 11"
    miss = await numeric("I think 12", "11")
    assert miss.value == 0.0 and miss.explanation == "read 12 (from '12'), differs from the expected 11"
    assert miss.metadata == {"read": 12.0, "expected": 11.0}
    none = await numeric("eleven", "11")
    assert none.value == 0.0 and none.explanation == "no number in the answer; expected 11"
    third = await numeric("1/3", "0.5")
    assert third.explanation == "read 1/3 (from '1/3'), differs from the expected 0.5"


async def test_tolerances() -> None:
    assert (await numeric("3.14", "3.14159")).value == 0.0  # exact by default
    assert (await numeric("3.14", "3.14159", abs_tol=0.01)).value == 1.0
    assert (await numeric("3.2", "3.14159", abs_tol=0.01)).value == 0.0
    assert (await numeric("1010", "1000", rel_tol=0.01)).value == 1.0
    assert (await numeric("1011", "1000", rel_tol=0.01)).value == 0.0
    within = await numeric("1005", "1000", rel_tol=0.01)
    assert within.explanation is not None and within.explanation.endswith("within 10")


async def test_an_expected_value_without_a_number_is_a_missing_score() -> None:
    broken = await numeric("42", "{{ expected }}", {"expected": "forty-two"})
    assert broken.value is None and broken.error == "expected: no number in 'forty-two'"
    undefined = await numeric("42")
    assert undefined.value is None and undefined.error == "expected: 'expected' is undefined"


@pytest.mark.parametrize("options", [{"abs_tol": -1}, {"rel_tol": "a lot"}, {"abs_tol": True}, {}])
async def test_bad_options_are_config_errors(options: dict[str, Any]) -> None:
    given = {"expected": "1", **options} if options else {}
    with pytest.raises(ConfigError, match="scorer 'numeric'"):
        build_scorer("numeric", None, given)
