"""Reading a model's verdict ("score + why") out of free text, and the scale it is given on.

Judges are asked for `{"score": N, "explanation": "..."}` but answer in many shapes: the object in
a ```json fence or inside prose, "Score: 7/10", "**Rating:** 7 out of 10", a bare "7". What cannot
be read as one score on the scale is an error with the reason, never a guess: a verdict of 8/10 on
a 1–5 scale or of 11 on 1–10 is rejected, not clamped.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evalpipe.scoring.prompts import clipped
from evalpipe.scoring.structured import extract_json_text

_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_OUT_OF = rf"\s*(?:/|out\s+of)\s*({_NUMBER})"
# "Score: 7", "**Final rating:** 7 out of 10", "score = 7/10", '"score": 7' in JSON that does not parse.
_LABELLED = re.compile(
    rf"\b(?:(?:final|overall)\s+)?(?:score|rating|grade)\b[\"'*_]*\s*(?::|=|is)\s*[\"'*_]*\s*({_NUMBER})"
    rf"(?:{_OUT_OF})?",
    re.IGNORECASE,
)
_FRACTION = re.compile(rf"(?<![\w.])({_NUMBER}){_OUT_OF}", re.IGNORECASE)
_BARE_FIRST_LINE = re.compile(rf"^[*_]*({_NUMBER})[*_]*\.?[ \t]*(?:\n|$)")
_EXPLANATION_LABEL = re.compile(
    r"\b(?:explanation|reasoning|reason|rationale|justification)\b[*_]*\s*:[*_]*\s*(.+)", re.IGNORECASE | re.DOTALL
)
_THINKING = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_SCORE_KEYS = ("score", "rating", "grade")
_EXPLANATION_KEYS = ("explanation", "reasoning", "reason", "rationale", "justification")
_MAX_OBJECTS = 64  # `{` positions tried in a long verdict before giving up on finding the object


@dataclass(frozen=True, slots=True)
class Scale:
    """The numbers a verdict may use, `low` (worst) to `high` (best)."""

    low: float
    high: float

    @classmethod
    def of(cls, value: Scale | Sequence[float]) -> Scale:
        """A scale from `[low, high]` as job files write it; ValueError when that is no scale."""
        if isinstance(value, Scale):
            return value
        if isinstance(value, str) or len(value) != 2:
            raise ValueError(f"scale must be [low, high], got {value!r}")
        low, high = value
        if not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value):
            raise ValueError(f"scale must be two numbers, got {value!r}")
        if low >= high:
            raise ValueError(f"scale must go from low to high, got {value!r}")
        return cls(float(low), float(high))

    def normalise(self, raw: float) -> float:
        """`raw` mapped onto [0, 1]."""
        return (raw - self.low) / (self.high - self.low)

    def __str__(self) -> str:
        return f"{self.low:g}–{self.high:g}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """A score as the model gave it (on its scale) and its explanation, if it gave one."""

    score: float
    explanation: str | None


class VerdictError(ValueError):
    """The text holds no single score on the scale; the message says why (with a snippet)."""


def parse_verdict(text: str, scale: Scale) -> Verdict:
    """The verdict in `text`; raises VerdictError when there is none on `scale`."""
    cleaned = _THINKING.sub("", text).strip()  # a reasoning model's thoughts may mention other numbers
    if not cleaned:
        raise VerdictError("the verdict is empty")
    found = _from_json(cleaned) or _from_prose(cleaned)
    if found is None:
        raise VerdictError(f"no score in the verdict: {clipped(cleaned, 200)!r}")
    score, out_of, explanation = found
    if out_of is not None and out_of != scale.high:
        raise VerdictError(f"the verdict {score:g}/{out_of:g} is not on the {scale} scale")
    if not scale.low <= score <= scale.high:
        raise VerdictError(f"the score {score:g} is outside the {scale} scale")
    return Verdict(score, explanation)


_Found = tuple[float, float | None, str | None]  # score, the "out of" it was given with, explanation


def _from_json(text: str) -> _Found | None:
    """The first JSON object with a score key: the whole text, a fenced block, or one inside prose."""
    candidates: list[Any] = []
    try:
        candidates.append(json.loads(extract_json_text(text)))
    except ValueError:
        decoder = json.JSONDecoder()
        for start in [m.start() for m in re.finditer(r"\{", text)][:_MAX_OBJECTS]:
            try:
                candidates.append(decoder.raw_decode(text, start)[0])
            except ValueError:
                continue
    for candidate in candidates:
        if not isinstance(candidate, dict):
            continue
        fields = {str(key).lower(): value for key, value in candidate.items()}
        value = next((fields[key] for key in _SCORE_KEYS if key in fields), None)
        if value is None:
            continue
        explanation = next((str(fields[k]).strip() for k in _EXPLANATION_KEYS if fields.get(k)), None)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value), None, explanation or None
        if isinstance(value, str):
            inner = _from_prose(value)
            if inner is not None:
                return inner[0], inner[1], explanation or None
        raise VerdictError(f"the verdict's score is not a number: {clipped(json.dumps(value), 80)}")
    return None


def _from_prose(text: str) -> _Found | None:
    """"Score: 7/10" (the last such label wins: judges conclude), else "7 out of 10", else a bare number."""
    labelled = list(_LABELLED.finditer(text))
    if labelled:
        last = labelled[-1]
        return float(last.group(1)), _optional(last.group(2)), _explanation(text, last)
    fractions = {(float(m.group(1)), float(m.group(2))) for m in _FRACTION.finditer(text)}
    if len(fractions) > 1:
        shown = ", ".join(f"{s:g}/{o:g}" for s, o in sorted(fractions))
        raise VerdictError(f"the verdict gives several scores ({shown}): {clipped(text, 200)!r}")
    if fractions:
        (score, out_of), = fractions
        return score, out_of, _explanation(text, None)
    bare = _BARE_FIRST_LINE.match(text)
    if bare:
        return float(bare.group(1)), None, _explanation(text[bare.end():], None)
    return None


def _explanation(text: str, score_match: re.Match[str] | None) -> str | None:
    """A labelled explanation, else the verdict's text besides the score label itself."""
    labelled = _EXPLANATION_LABEL.search(text)
    if labelled:
        rest = labelled.group(1)
        if score_match is not None and labelled.start() < score_match.start():
            rest = rest[: score_match.start() - labelled.start(1)]  # "Reason: ...\nScore: 7" ends at the score
        return rest.strip() or None
    if score_match is not None:
        text = text[: score_match.start()] + text[score_match.end():]
    return text.strip(" \n\t*_.:-–—") or None


def _optional(text: str | None) -> float | None:
    return float(text) if text is not None else None
