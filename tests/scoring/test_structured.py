"""json_schema (and json_valid's fence handling) on hand-made answers, schemas inline and from files."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from evalpipe import ConfigError
from evalpipe.scoring.base import Score
from evalpipe.scoring.registry import build_scorer
from evalpipe.scoring.structured import JsonSchema, JsonValid, extract_json_text

Rate = Callable[..., Awaitable[Score]]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string", "format": "email"},
        "tags": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(("text", "inner"), [
    ('{"a": 1}', '{"a": 1}'),
    ('```json\n{"a": 1}\n```', '{"a": 1}'),
    ('Here it is:\n\n```json\n{"a": 1}\n```\n\nAnything else?', '{"a": 1}'),
    ('Two blocks:\n```\n[1]\n```\nand\n```json\n[2]\n```', "[1]"),
    ("No fence: {}", "No fence: {}"),
])
def test_json_is_found_in_fences_with_or_without_prose(text: str, inner: str) -> None:
    assert extract_json_text(text) == inner


@pytest.mark.anyio
@pytest.mark.parametrize(("answer", "value", "explanation"), [
    ('{"name": "Ada", "age": 36, "tags": ["math"]}', 1.0, None),
    ('Sure:\n```json\n{"name": "Ada", "age": 36}\n```', 1.0, None),
    ('{"name": "Ada", "age": "36"}', 0.0, "$.age: '36' is not of type 'integer'"),
    ('{"name": "Ada", "age": 36, "tags": ["a", 2]}', 0.0, "$.tags[1]: 2 is not of type 'string'"),
    ('{"name": "Ada"}', 0.0, "$: 'age' is a required property"),
    ('{"name": "Ada", "age": 36, "email": "not an address"}', 0.0, "$.email: 'not an address' is not a 'email'"),
    ('{"name": "Ada", "age": -1}', 0.0, "$.age: -1 is less than the minimum of 0"),
    ("[1, 2]", 0.0, "$: [1, 2] is not of type 'object'"),
    ('{"name": "Ada", "age": 36,}', 0.0, "not JSON: "),  # the decoder's wording differs between Pythons
    ("", 0.0, "not JSON: Expecting value: line 1 column 1 (char 0)"),
    ('{"name": "\udcff", "age": 1}', 1.0, None),
    ('{"name": "Zoë 😀 \u202e", "age": 1}', 1.0, None),
])
async def test_first_violation_with_its_path(rate: Rate, answer: str, value: float, explanation: str | None) -> None:
    score = await rate(JsonSchema(PERSON), answer)
    assert score.value == value
    assert score.explanation is None if explanation is None else (score.explanation or "").startswith(explanation)


@pytest.mark.anyio
async def test_a_huge_answer_is_validated_and_the_explanation_stays_short(rate: Rate) -> None:
    tags = ["t" * 100] * 10_000  # about 1 MB
    valid = json.dumps({"name": "Ada", "age": 36, "tags": tags})
    assert len(valid) > 1_000_000
    assert (await rate(JsonSchema(PERSON), valid)).value == 1.0
    wrong = await rate(JsonSchema(PERSON), json.dumps(tags))
    assert wrong.value == 0.0 and wrong.metadata == {"path": "$", "keyword": "type"}
    assert len(wrong.explanation or "") <= 310 and (wrong.explanation or "").startswith("$: ['tttt")


@pytest.mark.anyio
async def test_schema_files_json_or_yaml_relative_to_the_job(rate: Rate, tmp_path: Path) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "person.json").write_text(json.dumps(PERSON))
    (tmp_path / "schemas" / "city.yaml").write_text("type: object\nrequired: [city]\n")
    from_json = build_scorer("json_schema", None, {"schema": "schemas/person.json"}, base_dir=tmp_path)
    assert (await rate(from_json, '{"name": "Ada", "age": 36}')).value == 1.0
    from_yaml = build_scorer("json_schema", "city_json", {"schema": "schemas/city.yaml"}, base_dir=tmp_path)
    assert (await rate(from_yaml, '{"town": "Paris"}')).explanation == "$: 'city' is a required property"
    assert from_yaml.name == "city_json"


def test_bad_schemas_fail_when_the_job_is_loaded(tmp_path: Path) -> None:
    (tmp_path / "broken.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[]")
    cases = [
        ({"schema": "missing.json"}, "cannot read the schema file"),
        ({"schema": "broken.json"}, "does not parse"),
        ({"schema": "list.json"}, "holds a list, not an object"),
        ({"schema": {"type": "objekt"}}, r"invalid schema at \$.type"),
        ({"schema": {"minLength": -1}}, "invalid schema"),
        ({}, "missing 1 required positional argument: 'schema'"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError, match=f"scorer 'json_schema': .*{message}"):
            build_scorer("json_schema", None, options, base_dir=tmp_path)


@pytest.mark.anyio
async def test_json_valid_reads_a_fence_inside_prose(rate: Rate) -> None:
    assert (await rate(JsonValid(), 'Here:\n```json\n{"ok": true}\n```\nDone.')).value == 1.0
    assert (await rate(JsonValid(), "Here: {ok}")).value == 0.0
