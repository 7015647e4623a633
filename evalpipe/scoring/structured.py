"""Criteria on structured answers: json_valid."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from evalpipe.scoring.base import Score
from evalpipe.types import ChatMessage, ChatResponse

_FENCE = re.compile(r"^```(?:json)?\s*\n(.*?)\n?```\s*$", re.DOTALL | re.IGNORECASE)


def extract_json_text(text: str) -> str:
    """The JSON part of an answer: models often wrap it in a ```json fence."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    return fenced.group(1) if fenced else stripped


class JsonValid:
    """1 when the answer (inside a code fence or not) parses as JSON."""

    def __init__(self, *, name: str = "json_valid") -> None:
        self.name = name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        try:
            json.loads(extract_json_text(response.text))
        except ValueError as exc:
            return Score(0.0, f"not JSON: {exc}")
        return Score(1.0)
