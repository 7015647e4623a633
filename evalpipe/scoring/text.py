"""Criteria on the answer's text: exact_match, contains, regex.

`contains` matches whole words by default: a value's ends that are letters or digits must not touch
another letter or digit in the answer, so "4" is not found in "14" or "4.5", "a" not in "cat", "Rome"
not in "Romeo"; "H2O" is found in "It is H2O." `word: false` finds values anywhere, as substrings.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from jinja2 import TemplateError

from evalpipe.scoring.base import Score
from evalpipe.scoring.prompts import ItemTemplate
from evalpipe.types import ChatMessage, ChatResponse


def word_pattern(value: str) -> str:
    """A regex finding `value` as a whole word: its letter/digit ends may not touch a letter or digit,
    and a digit end may not continue as a decimal ("4" is not in "4.5" or "1.4")."""
    pattern = re.escape(value)
    if value[:1].isalnum():
        pattern = r"(?<!\w)(?<!\d[.,])" + pattern
    if value[-1:].isalnum():
        pattern += r"(?!\w)(?![.,]\d)"
    return pattern


class Contains:
    """1 when the answer contains any (or all) of `values`, as whole words unless `word` is false."""

    def __init__(self, values: Sequence[str] | str, *, mode: Literal["any", "all"] = "any",
                 case_sensitive: bool = False, word: bool = True, name: str = "contains") -> None:
        # Options may name item fields (`{{ answer }}`), so one scorer serves every item.
        self.values = [ItemTemplate(v) for v in ([values] if isinstance(values, str) else values)]
        if mode not in ("any", "all"):
            raise ValueError(f"mode must be 'any' or 'all', got {mode!r}")
        if not isinstance(word, bool):
            raise ValueError(f"word must be true or false, got {word!r}")
        self.mode = mode
        self.case_sensitive = case_sensitive
        self.word = word
        self.name = name

    def found_in(self, value: str, text: str) -> bool:
        """Whether `value` occurs in `text` (both already case-folded when matching ignores case)."""
        if not value:
            return True  # an empty value is in every text, as it always was
        return re.search(word_pattern(value), text) is not None if self.word else value in text

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        text = response.text if self.case_sensitive else response.text.casefold()
        try:
            wanted = [v.render(item) for v in self.values]
        except TemplateError as exc:  # the loader checks fields against the dataset; this is the last guard
            return Score.missing(f"values: {exc}")
        found = [v for v in wanted if self.found_in(v if self.case_sensitive else v.casefold(), text)]
        ok = bool(found) if self.mode == "any" else len(found) == len(wanted)
        missing = [v for v in wanted if v not in found]
        return Score(1.0 if ok else 0.0, None if ok else f"missing: {', '.join(missing)}")


class ExactMatch:
    """1 when the stripped answer equals `expected` (an item-field template)."""

    def __init__(self, expected: str, *, case_sensitive: bool = False, name: str = "exact_match") -> None:
        self.expected = ItemTemplate(expected)
        self.case_sensitive = case_sensitive
        self.name = name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        try:
            expected, answer = self.expected.render(item).strip(), response.text.strip()
        except TemplateError as exc:
            return Score.missing(f"expected: {exc}")
        if not self.case_sensitive:
            expected, answer = expected.casefold(), answer.casefold()
        return Score(1.0 if answer == expected else 0.0)


class Regex:
    """1 when `pattern` matches somewhere in the answer (`fullmatch: true` for the whole answer)."""

    def __init__(self, pattern: str, *, fullmatch: bool = False, ignore_case: bool = False,
                 name: str = "regex") -> None:
        self.pattern = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
        self.fullmatch = fullmatch
        self.name = name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        text = response.text.strip()
        match = self.pattern.fullmatch(text) if self.fullmatch else self.pattern.search(text)
        return Score(1.0 if match else 0.0)
