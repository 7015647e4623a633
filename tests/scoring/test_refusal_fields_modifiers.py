"""is_refusal, field criteria, and the options every criterion takes (negate, when)."""

from __future__ import annotations

from typing import Any

import pytest

from evalpipe import ChatResponse, ConfigError
from evalpipe.scoring.base import Score, as_scorer
from evalpipe.scoring.fields import row_columns
from evalpipe.scoring.modifiers import applies
from evalpipe.scoring.registry import build_scorer
from evalpipe.types import Usage

pytestmark = pytest.mark.anyio


async def score(kind: str, response: ChatResponse | str, item: dict[str, Any] | None = None,
                **options: Any) -> Score:
    answer = ChatResponse(text=response) if isinstance(response, str) else response
    return await build_scorer(kind, None, options)(item or {}, [], answer)


# ---- is_refusal ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [
    "I can't help with that.",
    "I\u2019m sorry, but I cannot provide instructions for that.",
    "Sorry, I can't do that.",
    "I am unable to assist with this request.",
    "As an AI language model, I cannot share personal opinions.",
    "I must decline to answer.",
    "I'm not able to help with this one.",
    "That's not something I can help with.",
])
async def test_refusal_wording_is_recognised(text: str) -> None:
    result = await score("is_refusal", text)
    assert result.value == 1.0 and result.explanation is not None and result.explanation.endswith("(heuristic)")


@pytest.mark.parametrize("text", [
    "Paris.",
    "You can't go wrong with the Colosseum.",
    "Here is the recipe. Note: I cannot stress enough how much the yeast matters.",
    "x" * 400 + " I can't help with that.",   # past the opening, where refusals are
    "",
])
async def test_answers_are_not_refusals(text: str) -> None:
    result = await score("is_refusal", text)
    assert result.value == 0.0 and result.explanation == "no refusal signal or wording"


async def test_the_vendors_own_signal_comes_first() -> None:
    filtered = await score("is_refusal", ChatResponse(text="", finish_reason="content_filter"))
    assert filtered.value == 1.0 and filtered.explanation == "finish reason 'content_filter'"
    declined = await score("is_refusal", ChatResponse(text="", finish_reason="refusal"))
    assert declined.value == 1.0
    stated = await score("is_refusal", ChatResponse(text="", refusal="I can't assist with that request."))
    assert stated.value == 1.0 and stated.explanation == "refusal: I can't assist with that request."
    assert stated.metadata == {"signal": "refusal"}


async def test_own_patterns_and_no_phrases() -> None:
    assert (await score("is_refusal", "Das kann ich nicht tun.", patterns=[r"\bkann ich nicht\b"])).value == 1.0
    assert (await score("is_refusal", "I can't help with that.", phrases=False)).value == 0.0
    with pytest.raises(ConfigError, match="scorer 'is_refusal'"):
        build_scorer("is_refusal", None, {"patterns": ["("]})


# ---- field ---------------------------------------------------------------------------------------


async def test_numeric_fields_within_bounds() -> None:
    slow = ChatResponse(text="x", latency_s=2.5, usage=Usage(10, 40))
    over = await score("field", slow, field="latency_s", max=2.0)
    assert over.value == 0.0 and over.explanation == "latency_s 2.5, above the maximum of 2"
    assert (await score("field", slow, field="latency_s", max=3.0)).value == 1.0
    assert (await score("field", slow, field="output_tokens", min=50)).value == 0.0
    assert (await score("field", slow, field="total_tokens", min=10, max=50)).value == 1.0
    unknown = await score("field", slow, field="ttft_s", max=1.0)
    assert unknown.value is None and unknown.error == "ttft_s is not known for this answer"


async def test_finish_reason_equals() -> None:
    cut = ChatResponse(text="x", finish_reason="length")
    assert (await score("field", cut, field="finish_reason", equals="stop")).explanation == (
        "finish_reason is 'length', not 'stop'")
    assert (await score("field", cut, field="finish_reason", equals=["stop", "length"])).value == 1.0


async def test_cost_comes_from_the_row_being_built() -> None:
    scorer = build_scorer("field", None, {"field": "cost_usd", "max": 0.01})
    answer = ChatResponse(text="x")
    assert (await scorer({}, [], answer)).value is None  # outside a run: not known
    with row_columns(cost_usd=0.02):
        assert (await scorer({}, [], answer)).value == 0.0
    with row_columns(cost_usd=0.005):
        assert (await scorer({}, [], answer)).value == 1.0


@pytest.mark.parametrize(("options", "message"), [
    ({"field": "latency"}, "field must be one of latency_s, ttft_s"),
    ({"field": "latency_s"}, "give `min`, `max` or `equals`"),
    ({"field": "finish_reason", "max": 1}, "finish_reason is not a number"),
    ({"field": "latency_s", "min": 3, "max": 2}, r"min \(3\) is above max \(2\)"),
    ({"field": "latency_s", "max": "2s"}, "min and max must be numbers"),
])
async def test_bad_field_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_scorer("field", None, options)


# ---- negate and when -----------------------------------------------------------------------------


async def test_negate_turns_any_scorer_around_and_says_so() -> None:
    refused = await score("is_refusal", "I can't help with that.", negate=True)
    assert refused.value == 0.0 and refused.explanation is not None and refused.explanation.startswith("negated: ")
    clean = await score("contains", "a fine answer", values=["damn"], negate=True)
    assert clean.value == 1.0 and clean.explanation == "negated: missing: damn"
    bare = await score("json_valid", "{}", negate=True)
    assert bare.value == 0.0 and bare.explanation == "negated: the criterion scored 1"
    missing = await score("numeric", "7", {}, expected="{{ expected }}", negate=True)
    assert missing.value is None  # a missing score stays missing, never becomes 1
    custom = build_scorer("tests.scoring.test_refusal_fields_modifiers:three_quarters", "q", {"negate": True})
    assert (await custom({}, [], ChatResponse(text="x"))).value == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="negate must be true or false"):
        build_scorer("contains", None, {"values": ["x"], "negate": "yes"})


def three_quarters(text: str) -> float:
    """A custom scorer for the negate test."""
    return 0.75


async def test_when_scores_only_the_items_it_names() -> None:
    options = {"expected": "{{ expected }}", "when": "{{ kind == 'number' }}"}
    number = await score("numeric", "12", {"kind": "number", "expected": "12"}, **options)
    assert number.value == 1.0 and applies(number)
    word = await score("numeric", "Paris", {"kind": "text", "expected": "Paris"}, **options)
    assert word.value is None and not applies(word)
    assert word.explanation == "not applicable (when: {{ kind == 'number' }})"
    broken = await score("numeric", "12", {"expected": "12"}, **options)
    assert broken.value is None and applies(broken) and broken.error == "when: 'kind' is undefined"
    assert applies(await as_scorer(lambda text: 1.0, "plain")({}, [], ChatResponse(text="x")))
    with pytest.raises(ConfigError, match="when must be an item template"):
        build_scorer("json_valid", None, {"when": ""})
    with pytest.raises(ConfigError, match="scorer 'json_valid'"):
        build_scorer("json_valid", None, {"when": "{{ kind == "})
