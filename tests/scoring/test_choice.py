"""choice: which option a multiple-choice answer picks, in the ways models write it."""

from __future__ import annotations

from typing import Any

import pytest

from evalpipe import ChatResponse, ConfigError
from evalpipe.scoring.base import Score
from evalpipe.scoring.choice import Choice
from evalpipe.scoring.registry import build_scorer

pytestmark = pytest.mark.anyio


async def choice(answer: str, expected: str = "B", **options: Any) -> Score:
    scorer = build_scorer("choice", None, {"expected": expected, **options})
    return await scorer({}, [], ChatResponse(text=answer))


@pytest.mark.parametrize(("text", "option"), [
    ("B", "B"),
    ("(b)", "B"),
    ("B.", "B"),
    ("**B**", "B"),
    ("[C]", "C"),
    ("Answer: B", "B"),
    ("answer: (c)", "C"),
    ("The answer is B.", "B"),
    ("The answer is b.", "B"),
    ("The answer is A because the others are wrong", "A"),
    ("I first thought C, but the correct option is D", "D"),
    ("Answer: C\nOn reflection, the final answer is (A).", "A"),  # the last label wins
    ("B) Paris", "B"),
    ("(B) Paris", "B"),
    ("b. paris", "B"),
    ("I would go with (C) here.", "C"),
    ("A good choice is B", "B"),                               # "A" is an article here
])
async def test_the_chosen_option_is_read(text: str, option: str) -> None:
    chosen, _ = Choice("A").chosen(text)
    assert chosen == option


@pytest.mark.parametrize(("text", "why"), [
    ("the answer is a bit unclear", "no option found"),          # a lower-case "a" that is a word
    ("I think so", "no option found"),
    ("(A) or (B)", "several options in brackets: A, B"),
    ("", "no option found"),
])
async def test_no_option_or_several_options_pick_nothing(text: str, why: str) -> None:
    assert Choice("A").chosen(text) == (None, why)


async def test_scores_and_explanations() -> None:
    right = await choice("The answer is (B).")
    assert right.value == 1.0 and right.explanation == "chose B (labelled 'answer is (B)'), the expected B"
    wrong = await choice("C")
    assert wrong.value == 0.0 and wrong.explanation == "chose C (the whole answer), not the expected B"
    assert wrong.metadata == {"chosen": "C", "expected": "B"}
    nothing = await choice("I do not know")
    assert nothing.value == 0.0 and nothing.explanation == "no option found; expected B"


async def test_options_are_configurable() -> None:
    assert (await choice("E", "E")).value == 1.0  # A-E by default
    assert (await choice("E", "B", options=["A", "B", "C", "D"])).value == 0.0  # E is no option: none chosen
    assert (await choice("Answer: 3", "3", options="1234")).value == 1.0
    assert (await choice("(10)", "10", options=[str(n) for n in range(1, 11)])).value == 1.0
    assert (await choice("(b)", "(B)")).value == 1.0  # the expected option may be written in brackets


async def test_an_expected_value_that_is_no_option_is_a_missing_score() -> None:
    missing = await choice("B", "F")
    assert missing.value is None and missing.error == "expected 'F' is not one of the options A, B, C, D, E"


@pytest.mark.parametrize("options", [[], ["A", "a"], ["A", "B)"], "A B"])
async def test_bad_options_are_config_errors(options: Any) -> None:
    with pytest.raises(ConfigError, match="scorer 'choice'"):
        build_scorer("choice", None, {"expected": "A", "options": options})
