"""semantic_relevance over real HTTP: the fake server's hashed bag-of-words embeddings (exact numbers),
and one check of meaning against the real local embedding model."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from evalpipe import Provider
from evalpipe.scoring.base import Score
from evalpipe.scoring.calls import DirectCalls
from evalpipe.scoring.semantic import SemanticRelevance, cosine
from evalpipe.testing import FakeServer
from evalpipe.testing._answers import DEFAULT_DIMENSIONS, embed_text

Rate = Callable[..., Awaitable[Score]]


def fake_cosine(a: str, b: str) -> float:
    """The cosine the fake's embeddings give (they are unit vectors: the dot product)."""
    return sum(x * y for x, y in zip(embed_text(a, DEFAULT_DIMENSIONS), embed_text(b, DEFAULT_DIMENSIONS), strict=True))


def stats_key(provider: Provider) -> str:
    assert provider.config.api_key is not None
    return provider.config.api_key.get_secret_value()


@pytest.mark.anyio
async def test_reference_from_the_item_and_exact_cosines(rate: Rate, fake_provider: Callable[..., Provider]) -> None:
    scorer = SemanticRelevance(DirectCalls({"local": fake_provider()}), reference="{{ expected }}")
    item = {"expected": "Paris is the capital of France"}
    close = await rate(scorer, "The capital of France is Paris", item=item)
    far = await rate(scorer, "Bananas grow in warm humid climates", item=item)
    assert close.value == pytest.approx(1.0)  # the same bag of words
    assert far.value == pytest.approx(max(fake_cosine("Bananas grow in warm humid climates", item["expected"]), 0))
    assert far.value is not None and far.value < 0.5
    assert close.metadata["against"] == "reference" and close.explanation == "cosine similarity 1.000 to the reference"


@pytest.mark.anyio
async def test_the_question_when_there_is_no_reference(rate: Rate, fake_provider: Callable[..., Provider]) -> None:
    scorer = SemanticRelevance(DirectCalls({"local": fake_provider()}))
    answer = "France has Paris as its capital city"
    score = await rate(scorer, answer, "What is the capital of France?")
    assert score.value == pytest.approx(max(fake_cosine(answer, "What is the capital of France?"), 0))
    assert score.metadata["against"] == "question"
    assert (await rate(scorer, answer, None)).error == "no question to compare the answer with"


@pytest.mark.anyio
async def test_a_reference_is_embedded_once(
    rate: Rate, fake_server: FakeServer, fake_provider: Callable[..., Provider]
) -> None:
    provider = fake_provider()
    scorer = SemanticRelevance(DirectCalls({"local": provider}), reference="{{ expected }}", cache_size=1)
    paris, rome = {"expected": "Paris is the capital"}, {"expected": "Rome is the capital of Italy"}
    for item in (paris, paris, paris, rome, paris):
        await rate(scorer, "It is Paris", item=item)
    stats = fake_server.stats(stats_key(provider))
    # 5 calls; the reference is sent with the answer on a miss only: paris, rome, paris (evicted by rome).
    assert stats.requests == 5
    assert stats.input_tokens == 5 * 3 + 4 + 6 + 4


@pytest.mark.anyio
async def test_negative_cosine_scores_zero(rate: Rate, fake_provider: Callable[..., Provider]) -> None:
    # A word whose hashed position is "paris"'s with the opposite sign: cosine exactly -1.
    opposite = next(f"w{i}" for i in range(10_000) if fake_cosine("paris", f"w{i}") < -0.99)
    scorer = SemanticRelevance(DirectCalls({"local": fake_provider()}), reference="paris")
    score = await rate(scorer, opposite)
    assert score.value == 0.0 and score.metadata["cosine"] == pytest.approx(-1.0)


@pytest.mark.anyio
@pytest.mark.parametrize("answer", ["x" * 1_000_000, "Paris \udcff caf\u00e9 \U0001f600 \u202e\u200b"])
async def test_huge_and_odd_answers(rate: Rate, fake_provider: Callable[..., Provider], answer: str) -> None:
    scorer = SemanticRelevance(DirectCalls({"local": fake_provider()}), reference="Paris")
    score = await rate(scorer, answer)
    assert score.value is not None and score.error is None


@pytest.mark.anyio
async def test_empty_answer_missing_field_and_failing_backends(
    rate: Rate, calls: DirectCalls, fake_server: FakeServer, fake_provider: Callable[..., Provider]
) -> None:
    provider = fake_provider()
    scorer = SemanticRelevance(DirectCalls({"local": provider}), reference="{{ expected }}")
    empty = await rate(scorer, "  \n", item={"expected": "Paris"})
    assert (empty.value, empty.explanation) == (0.0, "empty answer")
    assert (await rate(scorer, "Paris", item={})).error == "reference: 'expected' is undefined"
    assert fake_server.stats(stats_key(provider)).requests == 0
    down = await rate(SemanticRelevance(calls, backend="down", reference="Paris"), "Paris")
    assert down.value is None and down.metadata["error_kind"] == "ConnectionError"
    no_embeddings = await rate(SemanticRelevance(calls, backend="claude", reference="Paris"), "Paris")
    assert no_embeddings.error == "embedding call to 'claude' failed: UnsupportedFeatureError: " \
                                  "anthropic does not support embeddings"


def test_cosine_edge_cases() -> None:
    assert cosine([1.0, 0.0], [0.0, 2.0]) == 0.0
    assert cosine([3.0, 4.0], [6.0, 8.0]) == pytest.approx(1.0)
    assert cosine([1.0], [1.0, 0.0]) is None
    assert cosine([0.0, 0.0], [1.0, 0.0]) is None
    assert cosine([], []) is None


@pytest.mark.local
@pytest.mark.anyio
async def test_local_embeddings_rank_a_paraphrase_above_an_unrelated_answer(
    rate: Rate, local_embedder: Provider
) -> None:
    scorer = SemanticRelevance(DirectCalls({"local": local_embedder}), reference="{{ expected }}")
    item = {"expected": "The cat is sleeping on the sofa."}
    paraphrase = await rate(scorer, "A cat sleeps on the couch.", item=item)
    unrelated = await rate(scorer, "Quarterly revenue rose four percent on strong bond trading.", item=item)
    assert paraphrase.value is not None and unrelated.value is not None
    assert paraphrase.value > unrelated.value
