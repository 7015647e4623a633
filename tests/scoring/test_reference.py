"""Scorers against reference answers: contains as whole words, normalized_match, token_f1,
edit_similarity, rouge_l and bleu (checked against the libraries' own reference numbers)."""

from __future__ import annotations

from typing import Any

import pytest
import sacrebleu

from evalpipe import ChatResponse, ConfigError
from evalpipe.scoring.base import Score
from evalpipe.scoring.normalized import normalize_answer, token_f1
from evalpipe.scoring.registry import build_scorer
from evalpipe.scoring.similarity import rouge_l

pytestmark = pytest.mark.anyio


async def score(kind: str, answer: str, item: dict[str, Any] | None = None, **options: Any) -> Score:
    return await build_scorer(kind, None, options)(item or {}, [], ChatResponse(text=answer))


# ---- contains ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "value", "found"), [
    ("14", "4", False),             # the bug: a number inside another number
    ("4.5", "4", False),
    ("1.4", "4", False),
    ("It is 4.", "4", True),
    ("4, 5 and 6", "4", True),
    ("cat", "a", False),            # a one-letter value inside any word
    ("Option a) is right", "a", True),
    ("Romeo and Juliet", "Rome", False),
    ("I love Rome!", "rome", True),
    ("It is H2O.", "H2O", True),
    ("H2O2", "H2O", False),
    ("It costs $5 now", "$5", True),
    ("Marie Curie's lab", "Marie Curie", True),
])
async def test_contains_matches_whole_words_by_default(answer: str, value: str, found: bool) -> None:
    assert (await score("contains", answer, values=[value])).value == (1.0 if found else 0.0)


async def test_contains_finds_substrings_when_asked() -> None:
    assert (await score("contains", "14", values=["4"], word=False)).value == 1.0
    assert (await score("contains", "cat", values=["a"], word=False)).value == 1.0
    with pytest.raises(ConfigError, match="word must be true or false"):
        build_scorer("contains", None, {"values": ["x"], "word": "yes"})


# ---- normalized_match and token_f1 ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "normalised"), [
    ("The Eiffel Tower.", "eiffel tower"),
    ("  an   Apple, a day! ", "apple day"),
    ("Theory", "theory"),           # an article only as a word
    ("", ""),
])
async def test_squad_normalisation(text: str, normalised: str) -> None:
    assert normalize_answer(text) == normalised


async def test_normalized_match() -> None:
    assert (await score("normalized_match", "The Eiffel Tower.", expected="eiffel tower")).value == 1.0
    miss = await score("normalized_match", "The Eiffel Tower, Paris", expected="Eiffel Tower")
    assert miss.value == 0.0 and miss.explanation == "normalised answer 'eiffel tower paris' is not 'eiffel tower'"
    assert (await score("normalized_match", "Paris", expected=["Lyon", "paris"])).value == 1.0  # any reference
    item = {"answer": "Tokyo"}
    assert (await score("normalized_match", "tokyo.", item, expected="{{ answer }}")).value == 1.0
    undefined = await score("normalized_match", "x", {}, expected="{{ answer }}")
    assert undefined.error == "expected: 'answer' is undefined"


async def test_token_f1_is_squads() -> None:
    # precision 2/2, recall 2/3 (articles and punctuation aside): F1 0.8
    assert token_f1("the cat sat", "A cat sat down.") == pytest.approx(0.8)
    assert token_f1("cat cat", "cat") == pytest.approx(2 * 0.5 * 1 / 1.5)  # repeats count once each
    assert token_f1("", "") == 1.0 and token_f1("the", "cat") == 0.0 and token_f1("dog", "cat") == 0.0
    best = await score("token_f1", "blue whale", expected=["whale", "the blue whale"])
    assert best.value == 1.0 and best.explanation == "token F1 1.000 against 'the blue whale'"


# ---- edit_similarity, rouge_l, bleu -------------------------------------------------------------


async def test_edit_similarity() -> None:
    # kitten -> sitting: 3 edits over 7 characters.
    kitten = await score("edit_similarity", "kitten", expected="sitting")
    assert kitten.value == pytest.approx(1 - 3 / 7)
    assert (await score("edit_similarity", " PARIS ", expected="paris")).value == 1.0
    assert (await score("edit_similarity", "PARIS", expected="paris", case_sensitive=True)).value == 0.0
    assert (await score("edit_similarity", "", expected="abc")).value == 0.0


async def test_rouge_l_is_the_f1_of_the_longest_common_word_subsequence() -> None:
    # LCS "the cat on the mat" = 5 of 6 words on both sides.
    assert rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS 2 ("a", "c"): precision 2/3, recall 2/2.
    assert rouge_l("a b c", "a c") == pytest.approx(2 * (2 / 3) * 1 / (2 / 3 + 1))
    assert rouge_l("", "a") == 0.0 and rouge_l("x y", "a b") == 0.0
    assert rouge_l("Übergrößen café", "übergrößen CAFÉ") == 1.0  # letters outside ASCII are words too
    scored = await score("rouge_l", "the cat sat on the mat", expected=["a dog", "the cat is on the mat"])
    assert scored.value == pytest.approx(5 / 6)


async def test_bleu_is_sacrebleus_sentence_bleu() -> None:
    answer, references = "The cat sat on the mat.", ["The cat is on the mat.", "A cat sat on a mat."]
    expected = sacrebleu.sentence_bleu(answer, references).score
    scored = await score("bleu", answer, expected=references)
    assert scored.value == pytest.approx(expected / 100) and 0 < scored.value < 1
    assert scored.explanation == f"BLEU {expected:.1f} (2 references)"
    assert (await score("bleu", "the same words", expected="the same words")).value == pytest.approx(1.0)
    assert (await score("bleu", "nothing alike", expected="completely different text")).value == 0.0


@pytest.mark.parametrize("kind", ["normalized_match", "token_f1", "edit_similarity", "rouge_l", "bleu"])
async def test_reference_scorers_need_an_expected_text(kind: str) -> None:
    with pytest.raises(ConfigError, match=f"scorer '{kind}'"):
        build_scorer(kind, None, {})
    with pytest.raises(ConfigError, match="expected must be a text or a list of texts"):
        build_scorer(kind, None, {"expected": [{"a": 1}]})
