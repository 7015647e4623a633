"""Reading a judge's verdict out of what judges really write, and refusing what is not one score on the scale."""

from __future__ import annotations

import pytest

from evalpipe.scoring.verdict import Scale, VerdictError, parse_verdict

TEN = Scale(1, 10)


@pytest.mark.parametrize(("text", "score", "explanation"), [
    ('{"score": 7, "explanation": "Correct but terse."}', 7, "Correct but terse."),
    ('```json\n{"score": 8.5, "explanation": "Good."}\n```', 8.5, "Good."),
    ('Here is my verdict:\n```json\n{"Score": "9", "Reasoning": "Complete."}\n```\nHope it helps.', 9, "Complete."),
    ('I weighed it carefully. {"rating": 6, "reason": "Misses a detail."} That is all.', 6, "Misses a detail."),
    ('{"score": "7/10", "explanation": "ok"}', 7, "ok"),
    ("Score: 7/10\nExplanation: Right city, no context.", 7, "Right city, no context."),
    ("**Rating:** 4 out of 10 — vague.", 4, "vague"),
    ("The answer is accurate and well put. I would give it 9 out of 10.", 9,
     "The answer is accurate and well put. I would give it 9 out of 10"),
    ("Reason: partly wrong.\nFinal score: 3", 3, "partly wrong."),
    ("Score: 5. On reflection the units are wrong.\nScore: 2", 2, None),
    ("7", 7, None),
    ("10\nFlawless.", 10, "Flawless"),
    ("<think>Maybe 2/10? No, it is right.</think>Score: 9/10", 9, None),
])
def test_verdict_shapes(text: str, score: float, explanation: str | None) -> None:
    verdict = parse_verdict(text, TEN)
    assert verdict.score == score
    if explanation is not None:
        assert verdict.explanation == explanation


@pytest.mark.parametrize(("text", "reason"), [
    ('{"score": 11, "explanation": "Excellent!"}', "11 is outside the 1–10 scale"),
    ("Score: 0", "0 is outside the 1–10 scale"),
    ("Score: -3/10", "-3 is outside"),
    ("Score: 8/5", "8/5 is not on the 1–10 scale"),
    ("", "empty"),
    ("<think>hmm</think>", "empty"),
    ("The answer is fine, I suppose.", "no score in the verdict: 'The answer is fine, I suppose.'"),
    ('{"score": "high", "explanation": "x"}', 'score is not a number: "high"'),
    ('{"score": true}', "score is not a number: true"),
    ("It covers 2/3 of the points; overall 6/10.", "several scores (2/3, 6/10)"),
])
def test_what_is_not_a_verdict_on_the_scale(text: str, reason: str) -> None:
    with pytest.raises(VerdictError, match=reason.replace("(", r"\(").replace(")", r"\)").replace("-", r"\-")):
        parse_verdict(text, TEN)


def test_an_unreadable_verdict_is_quoted_but_clipped() -> None:
    with pytest.raises(VerdictError) as caught:
        parse_verdict("no numbers here " * 1000, TEN)
    assert len(str(caught.value)) < 260 and "no numbers here" in str(caught.value)


def test_unit_scale_and_normalising() -> None:
    unit = Scale.of([0, 1])
    assert parse_verdict('{"score": 0.75}', unit).score == 0.75
    assert unit.normalise(0.75) == 0.75
    assert TEN.normalise(1) == 0.0 and TEN.normalise(10) == 1.0 and TEN.normalise(5.5) == 0.5
    with pytest.raises(VerdictError, match="1.5 is outside"):
        parse_verdict("Score: 1.5", unit)
    for bad in ([10, 1], [1], "1-10", [1, float("inf")], [True, 2]):
        with pytest.raises(ValueError, match="scale must"):
            Scale.of(bad)  # type: ignore[arg-type]
