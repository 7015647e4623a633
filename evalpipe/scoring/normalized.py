"""Reference answers compared the SQuAD way: normalized_match and token_f1.

Both normalise answer and reference as SQuAD's official script does (lower case, ASCII punctuation
removed, the articles a/an/the removed, whitespace collapsed), so "The Eiffel Tower." matches
"eiffel tower", and scores are comparable with published SQuAD-style numbers. `expected` is one item
template or a list of them; with several references the best one counts, as in SQuAD.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

from evalpipe.scoring.base import Score
from evalpipe.scoring.prompts import clipped
from evalpipe.scoring.references import AgainstReferences

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles, single spaces."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split())


def token_f1(answer: str, reference: str) -> float:
    """SQuAD's token F1 of the normalised texts; two empty texts agree (1), one empty one does not (0)."""
    answer_tokens, reference_tokens = normalize_answer(answer).split(), normalize_answer(reference).split()
    if not answer_tokens or not reference_tokens:
        return float(answer_tokens == reference_tokens)
    shared = sum((Counter(answer_tokens) & Counter(reference_tokens)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(answer_tokens), shared / len(reference_tokens)
    return 2 * precision * recall / (precision + recall)


class NormalizedMatch(AgainstReferences):
    """1 when the normalised answer equals a normalised reference (`expected`)."""

    def __init__(self, expected: str | Sequence[str], *, name: str = "normalized_match") -> None:
        super().__init__(expected, name=name)

    def compare(self, answer: str, references: list[str]) -> Score:
        normalised, wanted = normalize_answer(answer), [normalize_answer(reference) for reference in references]
        if normalised in wanted:
            return Score(1.0)
        alternatives = " or ".join(repr(reference) for reference in wanted)
        return Score(0.0, f"normalised answer {clipped(normalised, 80)!r} is not {clipped(alternatives, 200)}")


class TokenF1(AgainstReferences):
    """SQuAD's token F1 of the answer against the best-matching reference (`expected`)."""

    metric = "token F1"

    def __init__(self, expected: str | Sequence[str], *, name: str = "token_f1") -> None:
        super().__init__(expected, name=name)

    def measure(self, answer: str, reference: str) -> float:
        return token_f1(answer, reference)
