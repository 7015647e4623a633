"""semantic_relevance: how close the answer's meaning is to a reference (or the question), by embeddings.

The score is the cosine similarity of the two embeddings, clamped at 0: a negative cosine means
"unrelated or opposite" and scores like an orthogonal one, while the positive range is kept as it
is rather than squeezed into [0.5, 1] by (cos + 1) / 2. Absolute levels depend on the embedding
model: the local Gemma 3 270M puts a paraphrase near 0.75 but unrelated sentences at 0.5–0.7, so
compare scores from the same backend, and prefer a dedicated embedding model where it matters.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import TemplateError

from evalpipe.errors import EvalpipeError
from evalpipe.scoring.base import Score
from evalpipe.scoring.calls import ModelCalls, failed_call, resolve
from evalpipe.scoring.prompts import ItemTemplate, last_user_message, sendable
from evalpipe.types import ChatMessage, ChatResponse


class SemanticRelevance:
    """Cosine similarity (clamped at 0) of the answer and `reference` (an item template) or else the question.

    The embedding of each distinct reference text is kept (up to `cache_size` texts, least recently
    used first out), so a reference shared by many rows, repeats and parameter sets is embedded once.
    """

    def __init__(self, calls: ModelCalls, *, backend: str = "local", reference: str | None = None,
                 cache_size: int = 4096, name: str = "semantic_relevance") -> None:
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size}")
        self.calls = calls
        self.backend = backend
        self.reference = ItemTemplate(reference) if reference is not None else None
        self.cache_size = cache_size
        self._embeddings: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self.name = name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        answer = sendable(response.text).strip()
        against = "reference" if self.reference is not None else "question"
        try:
            target = self.reference.render(item) if self.reference is not None else last_user_message(messages)
            key = (resolve(self.backend), sendable(target or "").strip())
        except (TemplateError, EvalpipeError) as exc:
            return Score.missing(f"{against}: {exc}")
        if not key[1]:
            return Score.missing(f"no {against} to compare the answer with")
        if not answer:
            return Score(0.0, "empty answer", metadata={"against": against})
        cached = self._embeddings.get(key)
        if cached is not None:
            self._embeddings.move_to_end(key)
        texts = [answer] if cached is not None else [answer, key[1]]
        try:
            vectors = await self.calls.embed(self.backend, texts)
        except Exception as exc:  # whatever the call ends with is this criterion's problem, not the row's
            return failed_call("embedding", self.backend, exc)
        if len(vectors) != len(texts):
            return Score.missing(f"asked for {len(texts)} embeddings, got {len(vectors)}")
        if cached is None:
            cached = vectors[1]
            self._remember(key, cached)
        similarity = cosine(vectors[0], cached)
        if similarity is None:
            return Score.missing(f"embeddings cannot be compared (sizes {len(vectors[0])} and {len(cached)}, or zero)")
        return Score(max(similarity, 0.0), f"cosine similarity {similarity:.3f} to the {against}",
                     metadata={"cosine": similarity, "against": against})

    def _remember(self, key: tuple[str, str], vector: list[float]) -> None:
        self._embeddings[key] = vector
        self._embeddings.move_to_end(key)
        while len(self._embeddings) > self.cache_size:
            self._embeddings.popitem(last=False)


def cosine(a: Sequence[float], b: Sequence[float]) -> float | None:
    """The cosine similarity of two vectors; None when their sizes differ or one is zero."""
    if len(a) != len(b) or not a:
        return None
    norm = math.sqrt(math.fsum(x * x for x in a)) * math.sqrt(math.fsum(y * y for y in b))
    if norm == 0.0 or not math.isfinite(norm):
        return None
    return max(-1.0, min(1.0, math.fsum(x * y for x, y in zip(a, b, strict=True)) / norm))
