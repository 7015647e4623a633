"""Reference answers: `expected` as job files give it, and the base of scorers that compare with it.

`expected` is one item template or a list of them (`["{{ answer }}", "{{ alias }}"]`); a scorer
that measures closeness to one reference takes the best of them, as SQuAD does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import TemplateError

from evalpipe.scoring.base import Score
from evalpipe.scoring.prompts import ItemTemplate, clipped
from evalpipe.types import ChatMessage, ChatResponse


class References:
    """One item template or a list of them (any one may be matched)."""

    def __init__(self, expected: str | Sequence[str]) -> None:
        sources = [expected] if isinstance(expected, str) else list(expected)
        if not sources or not all(isinstance(source, str | int | float) for source in sources):
            raise ValueError(f"expected must be a text or a list of texts, got {expected!r}")
        self.templates = [ItemTemplate(str(source)) for source in sources]

    def render(self, item: Mapping[str, Any]) -> list[str]:
        """The references for `item`; raises jinja2's `UndefinedError` when a field they name is missing."""
        return [template.render(item) for template in self.templates]


class AgainstReferences:
    """A scorer of the answer against `expected`: by default the best `measure` over the references."""

    metric = "similarity"

    def __init__(self, expected: str | Sequence[str], *, name: str) -> None:
        self.references = References(expected)
        self.name = name

    def measure(self, answer: str, reference: str) -> float:
        """How close `answer` is to one `reference`, in [0, 1]."""
        raise NotImplementedError

    def compare(self, answer: str, references: list[str]) -> Score:
        """The score of `answer` against every reference: the best one's."""
        best, reference = max((self.measure(answer, reference), reference) for reference in references)
        return Score(best, f"{self.metric} {best:.3f} against {clipped(reference, 80)!r}")

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        try:
            references = self.references.render(item)
        except TemplateError as exc:
            return Score.missing(f"expected: {exc}")
        return self.compare(response.text, references)
