"""tool_call and tool_call_valid: which calls count as the expected ones, and what the scores say."""

from __future__ import annotations

from typing import Any

import pytest

from evalpipe import ConfigError
from evalpipe.scoring.registry import build_scorer
from evalpipe.scoring.tools import offering
from evalpipe.types import ChatResponse, Tool, ToolCall

pytestmark = pytest.mark.anyio
WEATHER = Tool("get_weather", "", {"type": "object", "properties": {"city": {"type": "string"},
                                                                    "days": {"type": "integer", "minimum": 1}},
                                   "required": ["city"]})


def answer(*calls: tuple[str, Any]) -> ChatResponse:
    made = [ToolCall.from_raw(f"call_{i}", name, arguments) if isinstance(arguments, str)
            else ToolCall(f"call_{i}", name, arguments) for i, (name, arguments) in enumerate(calls)]
    return ChatResponse(text="", finish_reason="tool_calls", tool_calls=made)


async def scored(options: dict[str, Any], response: ChatResponse, item: dict[str, Any] | None = None,
                 kind: str = "tool_call") -> tuple[float | None, str | None, dict[str, Any]]:
    score = await build_scorer(kind, None, options)(item or {}, [], response)
    return score.value, score.explanation or score.error, score.metadata


async def test_calls_count_in_any_order_and_extra_or_missing_ones_lower_precision_and_recall() -> None:
    item = {"calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}},
                      {"name": "add", "arguments": {"a": 2, "b": 2}}]}
    both = answer(("add", {"a": 2, "b": 2}), ("get_weather", {"city": "Oslo"}))
    assert (await scored({"expected": "{{ calls | tojson }}"}, both, item))[0] == 1.0

    one_and_a_stray = answer(("get_weather", {"city": "Oslo"}), ("lookup", {"term": "x"}))
    value, explanation, metadata = await scored({"expected": "{{ calls }}"}, one_and_a_stray, item)
    assert value == pytest.approx(0.5) and metadata == {"precision": 0.5, "recall": 0.5, "f1": 0.5}
    assert explanation == '1 of 2 expected call(s) made; missing: add; not expected: lookup({"term": "x"})'

    recall = await scored({"expected": "{{ calls | tojson }}", "score": "recall"},
                          answer(("get_weather", {"city": "Oslo"})), item)
    assert recall[0] == 0.5 and recall[2]["precision"] == 1.0


async def test_arguments_compare_exactly_as_a_subset_or_against_a_schema() -> None:
    made = answer(("get_weather", {"city": "Oslo", "days": 3}))
    one = {"tool": "get_weather", "arguments": {"city": "Oslo"}}
    assert (await scored(one, made))[0] == 0.0  # exact: the extra key is a different call
    assert (await scored({**one, "match": "subset"}, made))[0] == 1.0
    schema = {"type": "object", "properties": {"days": {"type": "integer", "maximum": 2}}}
    assert (await scored({"tool": "get_weather", "arguments": schema, "match": "schema"}, made))[0] == 0.0
    assert (await scored({"tool": "get_weather"}, made))[0] == 1.0  # no arguments expected: the name decides


async def test_a_loose_expectation_does_not_take_the_call_a_strict_one_needs() -> None:
    expected = [{"name": "add"}, {"name": "add", "arguments": {"a": 1}}]
    made = answer(("add", {"a": 1}), ("add", {"a": 5}))
    assert (await scored({"expected": expected}, made))[0] == 1.0


async def test_malformed_arguments_never_match_and_no_calls_expected_and_none_made_is_right() -> None:
    malformed = answer(("get_weather", '{"city": "Os'))
    value, explanation, _ = await scored({"tool": "get_weather", "arguments": {"city": "Oslo"}}, malformed)
    assert value == 0.0 and 'not expected: get_weather({"city": "Os)' in str(explanation)
    assert (await scored({"expected": "[]"}, ChatResponse(text="It is sunny.")))[0] == 1.0
    assert (await scored({"expected": "[]"}, answer(("get_weather", {}))))[0] == 0.0


async def test_unreadable_expected_calls_give_no_score_and_bad_options_fail_at_load() -> None:
    value, explanation, _ = await scored({"expected": "{{ calls }}"}, answer(), {"calls": "not json"})
    assert value is None and explanation is not None and "not JSON" in explanation
    with pytest.raises(ConfigError, match="give `expected`"):
        build_scorer("tool_call", None, {})
    with pytest.raises(ConfigError, match="match must be exact, subset or schema"):
        build_scorer("tool_call", None, {"tool": "x", "match": "fuzzy"})


async def test_tool_call_valid_checks_each_call_against_the_offered_tools_schema() -> None:
    made = answer(("get_weather", {"city": "Oslo"}), ("get_weather", {"city": "Oslo", "days": 0}),
                  ("get_weather", "{oops"), ("launch", {}))
    with offering([WEATHER]):
        value, explanation, metadata = await scored({}, made, kind="tool_call_valid")
    assert value == 0.25 and metadata == {"calls": 4, "invalid": 3}
    assert "get_weather: $.days: 0 is less than the minimum of 1" in str(explanation)
    assert "get_weather: arguments are not JSON: {oops" in str(explanation)
    assert "launch: not an offered tool" in str(explanation)

    own = {"tools": [{"name": "get_weather", "parameters": WEATHER.parameters}]}
    assert (await scored(own, answer(("get_weather", {"city": "Oslo"})), kind="tool_call_valid"))[0] == 1.0
    assert (await scored(own, ChatResponse(text="hi"), kind="tool_call_valid"))[0] is None


async def test_trajectory_compares_the_called_tools_in_order_or_as_a_set() -> None:
    made = answer(("search", {}), ("fetch", {}), ("search", {}), ("summarize", {}))
    expected = ["search", "fetch", "search", "summarize"]
    assert (await scored({"expected": expected}, made, kind="trajectory"))[0] == 1.0
    assert (await scored({"expected": expected[::-1]}, made, kind="trajectory"))[0] == 0.0
    assert (await scored({"expected": expected[::-1], "order": "any_order"}, made, kind="trajectory"))[0] == 1.0
    value, explanation, _ = await scored({"expected": "{{ tools }}", "order": "in_order"}, made,
                                         {"tools": ["search", "summarize"]}, kind="trajectory")
    assert value == 1.0 and explanation == ("called search → fetch → search → summarize; expected search → "
                                            "summarize (in order)")
    assert (await scored({"expected": ["summarize", "fetch"], "order": "in_order"}, made, kind="trajectory"))[0] == 0
    assert (await scored({"expected": ["search", "search", "search"], "order": "any_order"}, made,
                         kind="trajectory"))[0] == 0.0
