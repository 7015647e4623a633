"""The choice criterion: the option a multiple-choice answer picks, against the expected one.

An answer picks option B when it reads, in order of precedence:
  - labelled: "Answer: B", "The answer is (b)", "the correct option is B." (the last label wins);
  - the option alone: "B", "(b)", "B.", "[B]", "**B**";
  - the option opening the answer as a list label: "B) Paris", "(B) Paris", "B. Paris", "B: Paris",
    unless other options follow in brackets ("(A) or (B)");
  - otherwise one option in parentheses or brackets anywhere ("I would go with (C)") when it is the
    only such option.
A lower-case letter counts only where it cannot be a word: in brackets, or followed by a closing
mark or the end ("the answer is a bit long" picks nothing; "the answer is b." picks B). An answer
naming several options in the same way, or none, scores 0 with the reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from jinja2 import TemplateError

from evalpipe.scoring.base import Score
from evalpipe.scoring.prompts import ItemTemplate, clipped
from evalpipe.types import ChatMessage, ChatResponse

_LABEL = r"\b(?:answer|option|choice)(?:\s+is)?"
_MARKUP = r"[*_`\"']*"


class Choice:
    """1 when the option the answer picks is `expected` (an item template naming one of `options`)."""

    def __init__(self, expected: str, *, options: Sequence[str] | str = "ABCDE", name: str = "choice") -> None:
        labels = list(options)
        if not labels or any(not isinstance(o, str) or not o.strip() or not o.isalnum() for o in labels):
            raise ValueError(f"options must be letters or digits, e.g. [A, B, C, D], got {options!r}")
        if len({o.casefold() for o in labels}) != len(labels):
            raise ValueError(f"options repeat: {options!r}")
        self.options = {o.casefold(): o for o in labels}
        self.expected = ItemTemplate(str(expected))
        self.name = name
        # Longest first, so option "10" is not read as "1".
        ordered = sorted(labels, key=len, reverse=True)
        alternatives = "|".join(re.escape(o) for o in ordered)
        upper = "|".join(re.escape(o.upper()) for o in ordered)
        bracketed = rf"[(\[]\s*(?P<b>{alternatives})\s*[)\]]"
        # Bare, an option is upper case ("A because"), or lower case only before a closing mark or the
        # end: "a" in "the answer is a bit long" is a word.
        bare = rf"(?<!\w)(?:(?P<u>(?-i:{upper}))(?!\w)|(?P<l>{alternatives})(?=\s*(?:[.):,;!]|$)))"
        one = rf"(?:{bracketed}|{bare})"
        flags = re.IGNORECASE
        self._labelled = re.compile(rf"{_LABEL}{_MARKUP}\s*(?::|=|-)?\s*{_MARKUP}\s*{one}", flags)
        self._alone = re.compile(rf"^\W*{one}{_MARKUP}[.!]?\s*$", flags)
        self._opening = re.compile(rf"^{_MARKUP}\s*(?:{bracketed}|(?P<o>{alternatives})\s*[.):])", flags)
        self._anywhere = re.compile(bracketed, flags)

    def chosen(self, text: str) -> tuple[str | None, str]:
        """The option `text` picks (or None) and how it was read, for the explanation."""
        text = text.strip()
        labelled = list(self._labelled.finditer(text))
        if labelled:
            return self._option(labelled[-1]), f"labelled {clipped(labelled[-1][0].strip(), 60)!r}"
        alone = self._alone.match(text)
        if alone is not None:
            return self._option(alone), "the whole answer"
        bracketed = sorted({self._option(m) for m in self._anywhere.finditer(text)})
        opening = self._opening.match(text)
        # "(A) Paris" opens with its choice; "(A) or (B)" names two.
        if opening is not None and set(bracketed) <= {self._option(opening)}:
            return self._option(opening), "opening the answer"
        if len(bracketed) == 1:
            return bracketed[0], "the only bracketed option"
        if bracketed:
            return None, f"several options in brackets: {', '.join(bracketed)}"
        return None, "no option found"

    def _option(self, match: re.Match[str]) -> str:
        """The option a match found, as `options` spells it."""
        found = next(group for group in match.groupdict().values() if group is not None)
        return self.options[found.casefold()]

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        try:
            wanted = self.expected.render(item).strip().strip("().[] ")
        except TemplateError as exc:
            return Score.missing(f"expected: {exc}")
        expected = self.options.get(wanted.casefold())
        if expected is None:
            return Score.missing(f"expected {wanted!r} is not one of the options {', '.join(self.options.values())}")
        option, how = self.chosen(response.text)
        if option is None:
            return Score(0.0, f"{how}; expected {expected}")
        ok = option == expected
        return Score(1.0 if ok else 0.0, f"chose {option} ({how}), {'the' if ok else 'not the'} expected {expected}",
                     metadata={"chosen": option, "expected": expected})
