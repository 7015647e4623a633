"""self_explain over real HTTP against the fake server: the answering model rates its own answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from evalpipe import ChatMessage, Provider
from evalpipe.scoring.base import Score
from evalpipe.scoring.calls import DirectCalls, answering
from evalpipe.scoring.self_explain import DEFAULT_PROMPT, SelfExplain
from evalpipe.testing import FakeServer

Rate = Callable[..., Awaitable[Score]]
VERDICT = '{"explanation": "I recalled the capital; I am sure of it.", "score": 9}'
HISTORY = [ChatMessage.system("Answer in one word.")]


def key_of(provider: Provider) -> str:
    assert provider.config.api_key is not None
    return provider.config.api_key.get_secret_value()


@pytest.mark.anyio
async def test_the_answering_model_explains_and_rates_its_answer(
    rate: Rate, fake_server: FakeServer, fake_provider: Callable[..., Provider]
) -> None:
    first, second = fake_provider(), fake_provider()
    scorer = SelfExplain(DirectCalls({"first": first, "second": second}), prompt=f"Rate it. [[reply:{VERDICT}]]")
    with answering("second"):
        score = await rate(scorer, "Paris", history=HISTORY)
    assert score.value == pytest.approx(8 / 9)
    assert score.explanation == "I recalled the capital; I am sure of it."
    assert score.metadata["raw_score"] == 9 and score.metadata["backend"] == "second"
    assert fake_server.stats(key_of(first)).requests == 0
    stats = fake_server.stats(key_of(second))
    assert stats.requests == 1
    # The whole conversation was replayed: system, question, the answer, the request (its format line included).
    request = f"Rate it. [[reply:{VERDICT}]]\n\n" + (
        'Rate it on a scale from 1 (worst) to 10 (best). Reply with only a JSON object: '
        '{"score": <a number from 1 to 10>, "explanation": "<one or two sentences>"}')
    sent = ["Answer in one word.", "What is the capital of France?", "Paris", request]
    assert stats.input_tokens == sum(len(text.split()) for text in sent)


@pytest.mark.anyio
async def test_default_request_and_item_templates(rate: Rate, fake_provider: Callable[..., Provider]) -> None:
    calls = DirectCalls({"model": fake_provider()})
    with answering("model"):
        echoed = await rate(SelfExplain(calls), "Paris")
        assert echoed.value is None
        assert echoed.metadata["verdict"].startswith(f"Echo: {DEFAULT_PROMPT}\n\nRate it on a scale from 1")
        templated = SelfExplain(calls, prompt="Rate your {{ kind }} answer. [[reply:Score: 0.5]]", scale=[0, 1])
        assert (await rate(templated, "Paris", item={"kind": "one-word"})).value == 0.5
        assert (await rate(templated, "Paris")).error == "prompt: 'kind' is undefined"


@pytest.mark.anyio
async def test_failures_are_missing_scores(
    rate: Rate, calls: DirectCalls, fake_provider: Callable[..., Provider]
) -> None:
    scorer = SelfExplain(DirectCalls({"model": fake_provider()}), prompt="[[reply:Score: 11]]")
    with answering("model"):
        out_of_scale = await rate(scorer, "Paris")
        empty = await rate(scorer, " \n")
    assert out_of_scale.error == "self-explanation verdict unreadable: the score 11 is outside the 1–10 scale"
    assert empty.error == "the answer is empty: nothing to explain"
    outside_a_task = await rate(scorer, "Paris")
    assert outside_a_task.value is None and outside_a_task.metadata["error_kind"] == "ConfigError"
    assert "no answer is being scored" in (outside_a_task.error or "")
    with answering("down"):
        down = await rate(SelfExplain(calls), "Paris")
    assert down.metadata["error_kind"] == "ConnectionError"


@pytest.mark.anyio
async def test_odd_answers_are_sent_safely(rate: Rate, fake_provider: Callable[..., Provider]) -> None:
    scorer = SelfExplain(DirectCalls({"model": fake_provider()}), prompt="[[reply:Score: 3/10]]")
    with answering("model"):
        for answer in ("Par\udcffis \ud83d \U0001f600 \u202e", "word " * 200_000):
            assert (await rate(scorer, answer, "Bad bytes: \udcfe?")).value == pytest.approx(2 / 9)
