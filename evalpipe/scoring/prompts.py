"""What scorers read from an item and send to models: option templates, the question, safe text.

Option templates see the item's fields only (`reference: "{{ expected }}"`), never the answer or the
question: the job loader checks every option template's fields against the dataset, and an item
often has a field called `answer` (the expected one) that a scorer variable of that name would hide.
Scorers that prompt a model put the question and the answer into the prompt themselves.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import Template as JinjaTemplate
from jinja2 import TemplateSyntaxError

from evalpipe.pipeline.job.templates import template_environment
from evalpipe.types import ChatMessage

_SURROGATE = re.compile("[\ud800-\udfff]")
# The job prompts' environment: sandboxed, and strict, so a misspelt field fails instead of rendering ""
# (which every answer "contains").
_environment = template_environment()


class ItemTemplate:
    """A string option that may name item fields, compiled once (a syntax error fails at job load)."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._compiled: JinjaTemplate | None = (
                _environment.from_string(source) if "{{" in source or "{%" in source else None
            )
        except (RecursionError, MemoryError):  # jinja2's parser recurses once per nested bracket
            raise TemplateSyntaxError("the template is nested too deeply to compile", 1) from None

    def render(self, item: Mapping[str, Any]) -> str:
        """The option for `item`; raises jinja2's `UndefinedError` when a field it names is missing."""
        return self._compiled.render(**item) if self._compiled is not None else self.source


def last_user_message(messages: Sequence[ChatMessage]) -> str | None:
    """The question an answer replies to: the last user message, if there is one."""
    return next((m.content for m in reversed(messages) if m.role == "user"), None)


def sendable(text: str) -> str:
    """`text` with lone surrogates (undecodable bytes kept by `surrogateescape`) replaced by U+FFFD.

    Request bodies are UTF-8 JSON, which cannot carry them: httpx would raise UnicodeEncodeError.
    """
    return _SURROGATE.sub("\ufffd", text)


def clipped(text: str, limit: int = 300) -> str:
    """`text` cut to `limit` characters with an ellipsis, for explanations and error snippets."""
    return text if len(text) <= limit else text[: limit - 1] + "…"

