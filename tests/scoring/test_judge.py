"""llm_judge, tone and toxicity_judge over real HTTP against the fake server.

The fake answers `[[reply:TEXT]]` with TEXT, so an answer (or question) carrying that marker scripts
the judge's verdict; without one, the fake echoes the judge's prompt back, which shows what was sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from evalpipe import Provider
from evalpipe.scoring.base import Score
from evalpipe.scoring.calls import DirectCalls
from evalpipe.scoring.judge import LLMJudge, tone, toxicity_judge
from evalpipe.testing import FakeServer

Rate = Callable[..., Awaitable[Score]]

RUBRIC = "The expected answer is {{ expected }}. Judge correctness and clarity."


def judge(calls: DirectCalls, backend: str = "judge", **options: object) -> LLMJudge:
    return LLMJudge(calls, backend=backend, rubric=options.pop("rubric", RUBRIC), **options)  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["judge", "claude"])
async def test_verdict_normalised_and_explanation_kept(rate: Rate, calls: DirectCalls, backend: str) -> None:
    verdict = '{"score": 7, "explanation": "Right city, but no context."}'
    score = await rate(judge(calls, backend), f"Paris [[reply:{verdict}]]", item={"expected": "Paris"})
    assert score.value == pytest.approx(6 / 9)
    assert score.explanation == "Right city, but no context."
    assert score.metadata["raw_score"] == 7 and score.metadata["backend"] == backend


@pytest.mark.anyio
async def test_prose_verdicts_and_a_unit_scale(rate: Rate, calls: DirectCalls) -> None:
    prose = await rate(judge(calls), "Paris [[reply:Score: 9/10\nExplanation: Correct.]]", item={"expected": "Paris"})
    assert (prose.value, prose.explanation) == (pytest.approx(8 / 9), "Correct.")
    unit = judge(calls, scale=[0, 1])
    assert (await rate(unit, "Paris [[reply:I would say 0.25 out of 1]]", item={"expected": "Paris"})).value == 0.25


@pytest.mark.anyio
async def test_the_prompt_holds_rubric_question_and_answer_and_an_echo_is_no_verdict(
    rate: Rate, calls: DirectCalls
) -> None:
    score = await rate(judge(calls), "It is Lyon.", item={"expected": "Paris"})
    assert score.value is None
    assert (score.error or "").startswith("judge verdict unreadable: no score in the verdict: 'Echo: The expected")
    sent = score.metadata["verdict"]
    for part in ("The expected answer is Paris.", "<question>\nWhat is the capital of France?\n</question>",
                 "<answer>\nIt is Lyon.\n</answer>", "scale from 1 (worst) to 10 (best)"):
        assert part in sent


@pytest.mark.anyio
@pytest.mark.parametrize(("verdict", "reason"), [
    ('{"score": 11, "explanation": "Brilliant!"}', "the score 11 is outside the 1–10 scale"),
    ("Score: 12/10", "the score 12 is outside the 1–10 scale"),
    ("Score: 4/5", "the verdict 4/5 is not on the 1–10 scale"),
    ("Looks fine to me.", "no score in the verdict: 'Looks fine to me.'"),
])
async def test_out_of_scale_or_unparseable_is_missing_with_the_reason(
    rate: Rate, calls: DirectCalls, verdict: str, reason: str
) -> None:
    score = await rate(judge(calls), f"Paris [[reply:{verdict}]]", item={"expected": "Paris"})
    assert score.value is None and score.error == f"judge verdict unreadable: {reason}"
    assert score.metadata["verdict"] == verdict


@pytest.mark.anyio
async def test_unreachable_or_failing_judge_is_missing_with_the_error_kind(rate: Rate, calls: DirectCalls) -> None:
    down = await rate(judge(calls, "down"), "Paris", item={"expected": "Paris"})
    assert down.value is None and down.metadata["error_kind"] == "ConnectionError"
    assert (down.error or "").startswith("judge call to 'down' failed: ConnectionError")
    limited = await rate(judge(calls), "Paris [[fault:rate_limit_retry_after]]", item={"expected": "Paris"})
    assert limited.value is None and limited.metadata["error_kind"] == "RateLimitError"
    broken = await rate(judge(calls), "Paris [[fault:malformed_json]]", item={"expected": "Paris"})
    assert broken.metadata["error_kind"] == "ProtocolError"


@pytest.mark.anyio
async def test_a_missing_item_field_is_a_missing_score_before_any_call(
    rate: Rate, fake_server: FakeServer, fake_provider: Callable[..., Provider]
) -> None:
    provider = fake_provider()
    score = await rate(judge(DirectCalls({"judge": provider})), "Paris", item={"expectd": "Paris"})
    assert score.value is None and score.error == "rubric: 'expected' is undefined"
    assert fake_server.stats(provider.config.api_key.get_secret_value()).requests == 0  # type: ignore[union-attr]


@pytest.mark.anyio
@pytest.mark.parametrize("answer", [
    "",
    "x" * 1_000_000,
    "caf\u00e9 \udcff\ud83d lone surrogates \U0001f600 \u202eRTL\u202c \x00 zero-width\u200b",
])
async def test_odd_answers_still_reach_the_judge(rate: Rate, calls: DirectCalls, answer: str) -> None:
    # The verdict marker rides in the question, so the answer itself is exactly the odd one.
    question = "What is the capital of France? [[reply:Score: 2/10]]"
    score = await rate(judge(calls), answer, question, item={"expected": "Paris"})
    assert score.value == pytest.approx(1 / 9), score.error


@pytest.mark.anyio
async def test_tone_from_an_option_or_the_item(rate: Rate, calls: DirectCalls) -> None:
    formal = tone(calls, backend="judge", tone="formal and polite")
    echoed = await rate(formal, "Yo, it's Paris lol")
    assert "The requested tone is: formal and polite" in echoed.metadata["verdict"]
    from_item = tone(calls, backend="judge")
    score = await rate(from_item, 'Paris. [[reply:{"score": 3, "explanation": "Too casual."}]]',
                       item={"tone": "formal"})
    assert (score.value, score.explanation, from_item.name) == (pytest.approx(2 / 9), "Too casual.", "tone")
    assert (await rate(from_item, "Paris.")).error == "rubric: 'tone' is undefined"


@pytest.mark.anyio
async def test_toxicity_judge_higher_is_harmless(rate: Rate, calls: DirectCalls) -> None:
    scorer = toxicity_judge(calls, backend="judge")
    echoed = await rate(scorer, "You are an idiot.")
    assert "no insults, hate, harassment" in echoed.metadata["verdict"]
    score = await rate(scorer, 'Have a nice day [[reply:{"score": 10, "explanation": "Harmless."}]]')
    assert (score.value, scorer.name) == (1.0, "toxicity_judge")


def test_judge_options_are_checked_when_built(calls: DirectCalls) -> None:
    with pytest.raises(ValueError, match="rubric must be a non-empty text"):
        LLMJudge(calls, backend="judge", rubric="  ")
    with pytest.raises(ValueError, match="scale must go from low to high"):
        LLMJudge(calls, backend="judge", rubric="r", scale=[5, 1])
