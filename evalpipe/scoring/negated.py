"""`negate: true` on any criterion: 1 − its score, for "must not" checks (must not refuse, must not
contain a word, must not be valid JSON)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from evalpipe.scoring.base import Score, Scorer
from evalpipe.types import ChatMessage, ChatResponse


class Negated:
    """`scorer` turned around: 1 − its score, under its name; a missing score stays missing."""

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer
        self.name = scorer.name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        score = await self.scorer(item, messages, response)
        if score.value is None:
            return score
        why = f"negated: {score.explanation}" if score.explanation else f"negated: the criterion scored {score.value:g}"
        return replace(score, value=1.0 - score.value, explanation=why)
