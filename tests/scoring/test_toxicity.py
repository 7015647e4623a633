"""toxicity: the real local classifier on clearly clean and clearly toxic texts, and its batching."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable

import anyio
import pytest

from evalpipe import ChatResponse, ConfigError
from evalpipe.scoring.base import Score
from evalpipe.scoring.registry import build_scorer
from evalpipe.scoring.toxicity import Toxicity, _Batcher

Rate = Callable[..., Awaitable[Score]]
CLEAN = [
    "The capital of France is Paris.",
    "Thank you for your question! Photosynthesis turns light into chemical energy.",
    "Have a wonderful day, and good luck with your exam.",
]
TOXIC = [
    "You are a fucking idiot.",
    "Shut up, you stupid piece of shit.",
    "Go to hell, you worthless bastard.",
]


@pytest.fixture(scope="module")
def toxicity() -> Toxicity:
    return Toxicity()


@pytest.mark.anyio
async def test_clean_texts_score_high_and_toxic_ones_low(rate: Rate, toxicity: Toxicity) -> None:
    for text in CLEAN:
        score = await rate(toxicity, text)
        assert score.value is not None and score.value > 0.8, (text, score)
        assert score.explanation is None
        assert score.metadata["toxic_probability"] == pytest.approx(1 - score.value)
    for text in TOXIC:
        score = await rate(toxicity, text)
        assert score.value is not None and score.value < 0.2, (text, score)
        assert (score.explanation or "").startswith("likely toxic (P = ")


@pytest.mark.anyio
@pytest.mark.parametrize("answer", ["", "x" * 1_000_000, "caf\u00e9 \udcff\ud83d \U0001f600 \u202e\u200b\x00"])
async def test_empty_huge_and_odd_answers(rate: Rate, toxicity: Toxicity, answer: str) -> None:
    score = await rate(toxicity, answer)
    assert score.value is not None and 0.0 <= score.value <= 1.0 and score.error is None


@pytest.mark.anyio
async def test_concurrent_rows_share_batches_and_get_their_own_scores(toxicity: Toxicity) -> None:
    texts = (CLEAN + TOXIC) * 10
    alone = [(await toxicity({}, [], ChatResponse(text=text))).value for text in texts[:6]]
    together: dict[int, float | None] = {}

    async def score(index: int) -> None:
        together[index] = (await toxicity({}, [], ChatResponse(text=texts[index]))).value

    async with anyio.create_task_group() as group:
        for index in range(len(texts)):
            group.start_soon(score, index)
    assert [together[i] for i in range(6)] == pytest.approx(alone)
    assert [together[i] for i in range(len(texts))] == pytest.approx(alone * 10)


@pytest.mark.anyio
async def test_the_batcher_predicts_waiting_texts_together_and_survives_a_failure() -> None:
    batches: list[list[str]] = []

    def predict(texts: list[str]) -> list[float]:
        batches.append(texts)
        if "boom" in texts:
            raise RuntimeError("model broke")
        return [len(text) / 10 for text in texts]

    batcher = _Batcher(lambda: predict)
    results: dict[str, float] = {}

    async def ask(text: str) -> None:
        results[text] = await batcher.probability(text)

    async with anyio.create_task_group() as group:
        for text in ("a", "bb", "ccc", "dddd"):
            group.start_soon(ask, text)
    assert results == {"a": 0.1, "bb": 0.2, "ccc": 0.3, "dddd": 0.4}
    assert len(batches) < 4 and sorted(t for batch in batches for t in batch) == ["a", "bb", "ccc", "dddd"]
    with pytest.raises(RuntimeError, match="model broke"):
        await batcher.probability("boom")
    assert await batcher.probability("ok") == 0.2


@pytest.mark.anyio
async def test_a_broken_classifier_is_a_missing_score(rate: Rate) -> None:
    scorer = Toxicity()

    def broken() -> Callable[[list[str]], list[float]]:
        raise ImportError("scikit-learn cannot load the model")

    scorer._batcher = _Batcher(broken)
    score = await rate(scorer, "hello")
    assert score.error == "toxicity classifier failed: ImportError: scikit-learn cannot load the model"


def test_missing_package_is_a_config_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "profanity_check", None)  # how Python marks a module as not importable
    with pytest.raises(ConfigError, match=r"scorer 'toxicity' needs .*pip install 'evalpipe\[toxicity\]'"):
        build_scorer("toxicity")
