"""Criteria on tool calls: tool_call (the expected calls were made), tool_call_valid (the arguments fit the tool).

`tool_call` compares the answer's calls with the expected ones without regard to order: each
expected call is matched to at most one call made (a maximum matching), and the score is the F1
(or precision, or recall) of that matching. An expected call is `{name, arguments}`; without
`arguments` the name alone must match. `match` says how arguments compare: `exact` (equal JSON),
`subset` (every expected key present with an equal value, extra keys allowed), or `schema` (the
expected `arguments` is a JSON Schema the arguments must validate against). Expected calls come
from an item template rendering JSON (`expected: "{{ expected_calls | tojson }}"`; a plain
`{{ expected_calls }}` works too), from a literal list, or from `tool` (+ `arguments`) for one call.
No calls expected and none made scores 1.

`trajectory` compares the names of the tools called, in the order called (over every step of a
tool loop), with an expected list: `order: exact` (the same sequence), `in_order` (the expected
tools appear in that order, other calls between them allowed) or `any_order` (the same tools as a
multiset). 1 or 0, explained.

`tool_call_valid` scores the share of calls whose arguments validate against the schema of the tool
that was offered under that name (the job's tools, or its own `tools` option); a call of a tool not
offered, or with arguments that are not JSON, is invalid. An answer with no calls has no score.
"""

from __future__ import annotations

import ast
import contextvars
import json
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal

import jsonschema
from jinja2 import TemplateError
from jsonschema.exceptions import best_match

from evalpipe.scoring.base import Score
from evalpipe.scoring.context_value import ContextValue
from evalpipe.scoring.prompts import ItemTemplate, clipped
from evalpipe.types import ChatMessage, ChatResponse, Tool, ToolCall

Match = Literal["exact", "subset", "schema"]
_offered: contextvars.ContextVar[tuple[Tool, ...]] = contextvars.ContextVar("evalpipe_offered_tools", default=())


def offering(tools: Sequence[Tool]) -> AbstractContextManager[None]:
    """While scoring an answer: the tools its call offered, for `tool_call_valid`."""
    return ContextValue(_offered, tuple(tools), None)


class ToolCallMatch:
    """Order-insensitive F1 (or precision, or recall) of the calls made against the expected calls."""

    def __init__(self, expected: str | Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None, *,
                 tool: str | None = None, arguments: Mapping[str, Any] | str | None = None,
                 match: Match = "exact", score: Literal["f1", "precision", "recall"] = "f1",
                 name: str = "tool_call") -> None:
        if (expected is None) == (tool is None):
            raise ValueError("give `expected` (the expected calls) or `tool` (one expected call's name)")
        if arguments is not None and tool is None:
            raise ValueError("`arguments` go with `tool`; in `expected` each call has its own")
        if match not in ("exact", "subset", "schema"):
            raise ValueError(f"match must be exact, subset or schema, got {match!r}")
        if score not in ("f1", "precision", "recall"):
            raise ValueError(f"score must be f1, precision or recall, got {score!r}")
        self.expected = ItemTemplate(expected) if isinstance(expected, str) else expected
        self.tool = None if tool is None else ItemTemplate(tool)
        self.arguments = ItemTemplate(arguments) if isinstance(arguments, str) else arguments
        self.match, self.score, self.name = match, score, name

    def expected_calls(self, item: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The calls expected for `item`; raises ValueError (or jinja2's TemplateError) when they cannot be read."""
        if self.tool is not None:
            call: dict[str, Any] = {"name": self.tool.render(item).strip()}
            if self.arguments is not None:
                call["arguments"] = (_parsed(self.arguments.render(item)) if isinstance(self.arguments, ItemTemplate)
                                     else dict(self.arguments))
            return [call]
        expected = _parsed(self.expected.render(item)) if isinstance(self.expected, ItemTemplate) else self.expected
        calls = [expected] if isinstance(expected, Mapping) else expected
        if not isinstance(calls, list) or not all(isinstance(c, Mapping) and isinstance(c.get("name"), str)
                                                  for c in calls):
            got = clipped(repr(expected), 120)
            raise ValueError(f"expected calls must be a list of {{name, arguments}}, got {got}")
        return [dict(c) for c in calls]

    def matches(self, expected: Mapping[str, Any], call: ToolCall) -> bool:
        """Whether `call` is the expected call."""
        if call.name != expected["name"]:
            return False
        if "arguments" not in expected:
            return True
        if call.arguments is None:  # not JSON: no arguments to compare
            return False
        wanted = expected["arguments"]
        if self.match == "schema":
            return isinstance(wanted, Mapping) and not _violation(dict(wanted), call.arguments)
        if self.match == "subset":
            return _contains(call.arguments, wanted)
        return bool(call.arguments == wanted)

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        try:
            expected = self.expected_calls(item)
        except (TemplateError, ValueError) as exc:
            return Score.missing(f"expected calls: {exc}")
        made = response.tool_calls
        pairs = _maximum_matching(expected, made, self.matches)
        precision = len(pairs) / len(made) if made else 1.0
        recall = len(pairs) / len(expected) if expected else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        value = {"f1": f1, "precision": precision, "recall": recall}[self.score]
        matched = {j for _, j in pairs}
        missed = [c["name"] for i, c in enumerate(expected) if i not in {i for i, _ in pairs}]
        extra = [_shown(c) for j, c in enumerate(made) if j not in matched]
        explanation = f"{len(pairs)} of {len(expected)} expected call(s) made"
        if missed:
            explanation += f"; missing: {', '.join(missed)}"
        if extra:
            explanation += f"; not expected: {', '.join(extra)}"
        return Score(value, clipped(explanation), metadata={"precision": precision, "recall": recall, "f1": f1})


class ToolCallValid:
    """The share of the answer's calls whose arguments validate against the offered tool's own schema."""

    def __init__(self, tools: Sequence[Mapping[str, Any]] | None = None, *, name: str = "tool_call_valid") -> None:
        self.tools = None if tools is None else tuple(Tool.from_dict(t) for t in tools)
        self.name = name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        if not response.tool_calls:
            return Score.missing("no tool calls")
        offered = {tool.name: tool for tool in (self.tools if self.tools is not None else _offered.get())}
        problems = []
        for call in response.tool_calls:
            tool = offered.get(call.name)
            if tool is None:
                problems.append(f"{call.name}: not an offered tool")
            elif call.arguments is None:
                problems.append(f"{call.name}: arguments are not JSON: {clipped(call.raw_arguments or '', 80)}")
            elif (violation := _violation(tool.parameters, call.arguments)) is not None:
                problems.append(f"{call.name}: {violation}")
        calls = len(response.tool_calls)
        return Score((calls - len(problems)) / calls, clipped("; ".join(problems)) or None,
                     metadata={"calls": calls, "invalid": len(problems)})


class Trajectory:
    """1 when the tools called, by name and in call order, are the expected sequence (see `order`)."""

    def __init__(self, expected: str | Sequence[str], *, order: Literal["exact", "in_order", "any_order"] = "exact",
                 name: str = "trajectory") -> None:
        if order not in ("exact", "in_order", "any_order"):
            raise ValueError(f"order must be exact, in_order or any_order, got {order!r}")
        self.expected = ItemTemplate(expected) if isinstance(expected, str) else list(expected)
        self.order, self.name = order, name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        try:
            expected = _parsed(self.expected.render(item)) if isinstance(self.expected, ItemTemplate) else self.expected
        except (TemplateError, ValueError) as exc:
            return Score.missing(f"expected tools: {exc}")
        if not isinstance(expected, list) or not all(isinstance(n, str) for n in expected):
            return Score.missing(f"expected tools must be a list of names, got {clipped(repr(expected), 120)}")
        called = [call.name for call in response.tool_calls]
        if self.order == "exact":
            ok = called == expected
        elif self.order == "any_order":
            ok = sorted(called) == sorted(expected)
        else:
            remaining = iter(called)
            ok = all(name in remaining for name in expected)  # `in` advances the iterator: a subsequence test
        return Score(1.0 if ok else 0.0, f"called {' → '.join(called) or 'no tools'}; expected "
                                         f"{' → '.join(expected) or 'none'} ({self.order.replace('_', ' ')})")


def _parsed(text: str) -> Any:
    """JSON text, or the Python literal a template renders for a list or dict field (`{{ calls }}`)."""
    try:
        return json.loads(text)
    except ValueError:
        try:
            return ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            raise ValueError(f"not JSON: {clipped(text, 120)}") from None


def _violation(schema: dict[str, Any], instance: Any) -> str | None:
    """The first way `instance` breaks `schema`, or None when it is valid."""
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        error = best_match(validator_class(schema).iter_errors(instance))
    except jsonschema.SchemaError as exc:
        return f"the schema is invalid: {exc.message}"
    return None if error is None else f"{error.json_path}: {clipped(error.message, 120)}"


def _contains(actual: Any, wanted: Any) -> bool:
    """Whether `actual` holds every key of `wanted` with an equal value (recursively for objects)."""
    if isinstance(wanted, Mapping):
        return isinstance(actual, Mapping) and all(k in actual and _contains(actual[k], v) for k, v in wanted.items())
    return bool(actual == wanted)


def _maximum_matching(expected: Sequence[Mapping[str, Any]], made: Sequence[ToolCall],
                      matches: Callable[[Mapping[str, Any], ToolCall], bool]) -> list[tuple[int, int]]:
    """A largest set of (expected index, made index) pairs that match, each side used once (Kuhn's algorithm).

    Greedy pairing can pair a loose expectation with the only call a stricter one fits; call lists are
    short, so the augmenting-path search costs nothing."""
    fits = [[j for j, call in enumerate(made) if matches(wanted, call)] for wanted in expected]
    owner: dict[int, int] = {}  # made index -> expected index

    def augment(i: int, seen: set[int]) -> bool:
        for j in fits[i]:
            if j not in seen:
                seen.add(j)
                if j not in owner or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    for i in range(len(expected)):
        augment(i, set())
    return sorted((i, j) for j, i in owner.items())


def _shown(call: ToolCall) -> str:
    return f"{call.name}({clipped(call.arguments_json, 60)})"
