"""Graded closeness to a reference text: edit_similarity, rouge_l, bleu.

- `edit_similarity`: 1 − Levenshtein distance / the longer length, on characters (rapidfuzz's
  `Levenshtein.normalized_similarity`), after lower-casing unless `case_sensitive`.
- `rouge_l`: ROUGE-L F1, the longest common subsequence of words (rapidfuzz's `LCSseq` over word
  lists). Words are runs of letters and digits, lower-cased, without stemming; unlike the
  `rouge-score` package, letters outside ASCII are kept, not dropped.
- `bleu`: sentence BLEU by sacrebleu (13a tokenisation, exponential smoothing, effective order, as
  `sacrebleu.sentence_bleu`), scaled from 0–100 to 0–1: the numbers other tools report. It needs
  the `bleu` extra (`pip install 'evalpipe[bleu]'`).

`expected` is one item template or a list of them: edit similarity and ROUGE-L take the best
reference; BLEU counts all of them, as BLEU does.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Sequence

from rapidfuzz.distance import LCSseq, Levenshtein

from evalpipe.errors import ConfigError
from evalpipe.scoring.base import Score
from evalpipe.scoring.references import AgainstReferences

_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """The lower-cased runs of letters and digits in `text`: ROUGE's tokens."""
    return _WORD.findall(text.casefold())


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1 of two texts; 0 when either has no words."""
    answer_words, reference_words = words(answer), words(reference)
    if not answer_words or not reference_words:
        return 0.0
    common = LCSseq.similarity(answer_words, reference_words)
    if common == 0:
        return 0.0
    precision, recall = common / len(answer_words), common / len(reference_words)
    return 2 * precision * recall / (precision + recall)


class EditSimilarity(AgainstReferences):
    """1 − normalised Levenshtein distance between the stripped answer and the best reference."""

    metric = "edit similarity"

    def __init__(self, expected: str | Sequence[str], *, case_sensitive: bool = False,
                 name: str = "edit_similarity") -> None:
        super().__init__(expected, name=name)
        self.case_sensitive = case_sensitive

    def measure(self, answer: str, reference: str) -> float:
        answer, reference = answer.strip(), reference.strip()
        if not self.case_sensitive:
            answer, reference = answer.casefold(), reference.casefold()
        return float(Levenshtein.normalized_similarity(answer, reference))


class RougeL(AgainstReferences):
    """ROUGE-L F1 (longest common word subsequence) of the answer and the best reference."""

    metric = "ROUGE-L F1"

    def __init__(self, expected: str | Sequence[str], *, name: str = "rouge_l") -> None:
        super().__init__(expected, name=name)

    def measure(self, answer: str, reference: str) -> float:
        return rouge_l(answer, reference)


class Bleu(AgainstReferences):
    """sacrebleu's sentence BLEU of the answer against every reference, in [0, 1]."""

    def __init__(self, expected: str | Sequence[str], *, name: str = "bleu") -> None:
        try:
            # Imported here, not at the top: it takes about 0.1 s and is an optional extra.
            metrics = importlib.import_module("sacrebleu.metrics")
        except ImportError:
            raise ConfigError("the bleu scorer needs sacrebleu: pip install 'evalpipe[bleu]'") from None
        super().__init__(expected, name=name)
        self._bleu = metrics.BLEU(effective_order=True)  # sentence-level, as sacrebleu.sentence_bleu sets it

    def compare(self, answer: str, references: list[str]) -> Score:
        result = self._bleu.sentence_score(answer.strip(), [reference.strip() for reference in references])
        count = f"{len(references)} reference{'s' * (len(references) > 1)}"
        return Score(float(result.score) / 100, f"BLEU {result.score:.1f} ({count})",
                     metadata={"bleu": float(result.score), "precisions": [float(p) for p in result.precisions]})
