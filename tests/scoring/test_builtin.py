"""Built-in criteria and plain functions as scorers, on hand-made answers and edge cases."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from evalpipe import ChatResponse, ConfigError
from evalpipe.scoring.base import Score, ScoreRangeWarning, as_scorer
from evalpipe.scoring.registry import build_scorer


async def score(kind: str, text: str, item: Mapping[str, Any] | None = None, **options: Any) -> Score:
    return await build_scorer(kind, None, options)(item or {}, [], ChatResponse(text=text))


@pytest.mark.anyio
async def test_contains_any_all_case_and_item_templates() -> None:
    assert (await score("contains", "The answer is PARIS.", values=["paris"])).value == 1.0
    assert (await score("contains", "The answer is PARIS.", values=["paris"], case_sensitive=True)).value == 0.0
    missing = await score("contains", "red and blue", values=["red", "green"], mode="all")
    assert missing.value == 0.0 and missing.explanation == "missing: green"
    assert (await score("contains", "It is Rome", {"expected": "Rome"}, values=["{{ expected }}"])).value == 1.0
    assert (await score("contains", "", values=["x"])).value == 0.0
    assert (await score("contains", "Rome", {}, values=["{{ expected }}"])).error == "values: 'expected' is undefined"
    assert (await score("exact_match", "Rome", {}, expected="{{ a }}")).error == "expected: 'a' is undefined"


@pytest.mark.anyio
async def test_exact_match_and_regex() -> None:
    assert (await score("exact_match", "  paris \n", {"a": "Paris"}, expected="{{ a }}")).value == 1.0
    assert (await score("exact_match", "Paris!", expected="Paris")).value == 0.0
    assert (await score("regex", "total: 42 apples", pattern=r"\b42\b")).value == 1.0
    assert (await score("regex", "total: 42 apples", pattern=r"\d+", fullmatch=True)).value == 0.0


@pytest.mark.anyio
@pytest.mark.parametrize(("text", "valid"), [
    ('{"a": 1}', True),
    ('```json\n{"a": [1, 2]}\n```', True),
    ("```\n[1, 2]\n```", True),
    ('{"a": 1', False),
    ("", False),
    ("Sure! Here is JSON: {}", False),
    ("\udcff", False),
])
async def test_json_valid(text: str, valid: bool) -> None:
    result = await score("json_valid", text)
    assert result.value == (1.0 if valid else 0.0)
    assert (result.explanation is None) == valid


@pytest.mark.anyio
async def test_plain_functions_are_scorers_and_are_clamped() -> None:
    two = as_scorer(lambda text: 2.0 if text.startswith("{") else 0.0, "starts_json")
    with pytest.warns(ScoreRangeWarning, match="'starts_json'"):
        assert (await two({}, [], ChatResponse(text="{}"))).value == 1.0

    def uses_item(item: Mapping[str, Any], response: ChatResponse) -> bool:
        return response.text == item["want"]

    assert (await as_scorer(uses_item)({"want": "x"}, [], ChatResponse(text="x"))).value == 1.0

    async def broken(text: str) -> float:
        raise RuntimeError("judge unreachable")

    missing = await as_scorer(broken)({}, [], ChatResponse(text="x"))
    assert missing.value is None and "judge unreachable" in (missing.error or "")
    nan = await as_scorer(lambda text: float("nan"), "nan")({}, [], ChatResponse(text="x"))
    assert nan.value is None


def test_bad_scorer_configuration_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown scorer 'jsonvalid'"):
        build_scorer("jsonvalid")
    with pytest.raises(ConfigError, match="scorer 'regex'"):
        build_scorer("regex", None, {"pattern": "("})
    with pytest.raises(ConfigError, match="scorer 'contains'"):
        build_scorer("contains", None, {"valuez": ["x"]})
    with pytest.raises(ConfigError, match="cannot be imported"):
        build_scorer("no_such_module_xyz:f")
    assert build_scorer("os.path:isabs").name == "isabs"


@pytest.mark.anyio
async def test_a_scorer_object_given_another_name_is_still_called_as_a_scorer() -> None:
    renamed = as_scorer(build_scorer("contains", options={"values": ["yes"]}), "says_yes")
    assert renamed.name == "says_yes"
    assert (await renamed({}, [], ChatResponse("yes indeed"))).value == 1.0
