"""self_explain: the answering model, asked in a follow-up turn, explains and rates its own answer.

The conversation is replayed with the answer as the assistant's turn and one more user turn asking
for an explanation and a self-score; that verdict is read like a judge's. The self-score sits next
to the external scores: a model that rates itself 10 on answers the judge fails is worth knowing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import TemplateError

from evalpipe.scoring.base import Score
from evalpipe.scoring.calls import ANSWERING, ModelCalls
from evalpipe.scoring.judge import ask_for_verdict, reply_format
from evalpipe.scoring.prompts import ItemTemplate, sendable
from evalpipe.scoring.verdict import Scale
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams

DEFAULT_PROMPT = ("Look again at your previous answer. In two or three sentences, explain how you arrived at it "
                  "and how well it answers the question.")


class SelfExplain:
    """The model behind `backend` (the answering one by default) explains and rates its answer on `scale`.

    `prompt` (an item template) replaces the request's wording; the reply format is always added.
    """

    def __init__(self, calls: ModelCalls, *, backend: str = ANSWERING, prompt: str = DEFAULT_PROMPT,
                 scale: Sequence[float] = (1, 10), max_tokens: int = 512, name: str = "self_explain") -> None:
        self.calls = calls
        self.backend = backend
        self.prompt = ItemTemplate(prompt)
        self.scale = Scale.of(scale)
        self.params = GenerationParams(temperature=0.0, max_tokens=max_tokens)
        self.name = name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        if not response.text.strip():
            # Nothing to explain, and some APIs (Anthropic) reject an empty assistant turn outright.
            return Score.missing("the answer is empty: nothing to explain")
        try:
            request = self.prompt.render(item).strip()
        except TemplateError as exc:
            return Score.missing(f"prompt: {exc}")
        follow_up = [
            *(ChatMessage(m.role, sendable(m.content)) for m in messages),
            ChatMessage.assistant(sendable(response.text)),
            ChatMessage.user(f"{request}\n\n{reply_format(self.scale)}"),
        ]
        return await ask_for_verdict(self.calls, self.backend, follow_up, self.scale, self.params, "self-explanation")
