"""Options every criterion takes, applied around its scorer by the registry.

- `negate: true` scores 1 − the score, for "must not" checks (must not refuse, must not contain a
  word, must not be valid JSON). A missing score stays missing.
- `when: "{{ kind == 'number' }}"` (an item template) scores only the items for which it renders
  true; for the others the score is empty and marked not applicable, so it neither counts in the
  total nor decides `passed`. One job can then score numbers with `numeric` and words with
  `contains`, each on its own items.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from jinja2 import TemplateError

from evalpipe.scoring.base import Score, Scorer
from evalpipe.scoring.prompts import ItemTemplate
from evalpipe.types import ChatMessage, ChatResponse

NOT_APPLICABLE = "applicable"  # the Score.metadata key set to False for an item a criterion does not apply to
_FALSE = frozenset({"", "false", "0", "no", "none"})


def applies(score: Score) -> bool:
    """Whether `score` is a verdict on the item, not a criterion that skipped it (`when`)."""
    return score.metadata.get(NOT_APPLICABLE, True) is not False


class Negated:
    """`scorer` turned around: 1 − its score, under its name."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.name = scorer.name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        score = await self.scorer(item, messages, response)
        if score.value is None or not applies(score):
            return score
        why = f"negated: {score.explanation}" if score.explanation else f"negated: the criterion scored {score.value:g}"
        return replace(score, value=1.0 - score.value, explanation=why)


class Conditional:
    """`scorer` for the items where `when` (an item template) renders true; not applicable elsewhere."""

    def __init__(self, scorer: Scorer, when: str) -> None:
        if not isinstance(when, str) or not when.strip():
            raise ValueError(f"when must be an item template such as \"{{{{ kind == 'number' }}}}\", got {when!r}")
        self.scorer = scorer
        self.when = ItemTemplate(when)
        self.name = scorer.name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        try:
            condition = self.when.render(item).strip()
        except TemplateError as exc:
            return Score.missing(f"when: {exc}")
        if condition.casefold() in _FALSE:
            return Score(None, f"not applicable (when: {self.when.source})", metadata={NOT_APPLICABLE: False})
        return await self.scorer(item, messages, response)
