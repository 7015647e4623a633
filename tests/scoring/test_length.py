"""length: bounds in characters or words, hard or with a linear falloff."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from evalpipe import ConfigError
from evalpipe.scoring.base import Score
from evalpipe.scoring.length import Length
from evalpipe.scoring.registry import build_scorer

Rate = Callable[..., Awaitable[Score]]


@pytest.mark.anyio
@pytest.mark.parametrize(("options", "answer", "value", "explanation"), [
    ({"min": 2, "max": 5}, "  abcd \n", 1.0, None),
    ({"min": 2, "max": 5}, "abcdef", 0.0, "6 chars, above the maximum of 5"),
    ({"min": 2}, "", 0.0, "0 chars, below the minimum of 2"),
    ({"max": 0}, "   ", 1.0, None),
    ({"max": 3, "unit": "words"}, "one two\nthree", 1.0, None),
    ({"max": 3, "unit": "words"}, "one two three four", 0.0, "4 words, above the maximum of 3"),
    ({"min": 1, "unit": "words"}, " \t\n", 0.0, "0 words, below the minimum of 1"),
    ({"max": 4}, "Zoë😀", 1.0, None),  # code points, not bytes: 4 characters, 9 UTF-8 bytes
    ({"max": 2}, "a\udcffb", 0.0, "3 chars, above the maximum of 2"),
    # Falloff: linear from 1 at the bound to 0 at falloff × bound beyond it.
    ({"max": 200, "unit": "words", "falloff": 0.5}, "w " * 210, 0.9, "210 words, above the maximum of 200"),
    ({"max": 200, "unit": "words", "falloff": 0.5}, "w " * 300, 0.0, "300 words, above the maximum of 200"),
    ({"min": 100, "falloff": 1.0}, "x" * 75, 0.75, "75 chars, below the minimum of 100"),
    ({"min": 100, "falloff": 1.0}, "", 0.0, "0 chars, below the minimum of 100"),
])
async def test_bounds(rate: Rate, options: dict[str, object], answer: str, value: float,
                      explanation: str | None) -> None:
    score = await rate(build_scorer("length", None, options), answer)
    assert (score.value, score.explanation) == (pytest.approx(value), explanation)


@pytest.mark.anyio
async def test_a_huge_answer(rate: Rate) -> None:
    huge = "word " * 200_000  # 1 MB
    score = await rate(Length(max=1000, unit="words"), huge)
    assert score.value == 0.0 and score.metadata == {"length": 200_000, "unit": "words"}
    assert (await rate(Length(min=999_999), huge)).value == 1.0  # stripped: 999,999 characters


@pytest.mark.parametrize(("options", "message"), [
    ({}, "give `min`, `max` or both"),
    ({"min": 5, "max": 2}, r"min \(5\) is above max \(2\)"),
    ({"max": -1}, "bounds must be whole numbers >= 0"),
    ({"max": 2.5}, "bounds must be whole numbers >= 0"),
    ({"max": "10"}, "bounds must be whole numbers >= 0"),
    ({"max": 10, "unit": "tokens"}, "unit must be 'chars' or 'words'"),
    ({"max": 10, "falloff": -0.5}, "falloff must be >= 0"),
    ({"max": 10, "maximum": 3}, r"Length.__init__\(\) got an unexpected keyword argument 'maximum'"),
])
def test_bad_options_are_config_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=f"scorer 'length': {message}"):
        build_scorer("length", None, options)
