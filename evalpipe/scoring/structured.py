"""Criteria on structured answers: json_valid, json_schema."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema.exceptions import best_match

from evalpipe.scoring.base import Score
from evalpipe.scoring.prompts import clipped
from evalpipe.types import ChatMessage, ChatResponse

_WHOLE_FENCE = re.compile(r"^```(?:json)?[ \t]*\n(.*?)\n?```$", re.DOTALL | re.IGNORECASE)
# A fenced block inside prose ("Here you go:\n```json\n{...}\n```\nAnything else?"): the first one.
_INNER_FENCE = re.compile(r"^```(?:json)?[ \t]*\n(.*?)\n```[ \t]*$", re.DOTALL | re.IGNORECASE | re.MULTILINE)


def extract_json_text(text: str) -> str:
    """The JSON part of an answer: models often wrap it in a ```json fence, with or without prose around it."""
    stripped = text.strip()
    fenced = _WHOLE_FENCE.match(stripped)
    if fenced is None and "```" in stripped:
        fenced = _INNER_FENCE.search(stripped)
    return fenced.group(1) if fenced else stripped


class JsonValid:
    """1 when the answer (inside a code fence or not) parses as JSON."""

    def __init__(self, *, name: str = "json_valid") -> None:
        self.name = name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        try:
            json.loads(extract_json_text(response.text))
        except ValueError as exc:
            return Score(0.0, f"not JSON: {exc}")
        return Score(1.0)


class JsonSchema:
    """1 when the answer's JSON is valid for `schema`; otherwise 0, explained by the first violation.

    `schema` is the schema itself or the path of a .json/.yaml file (relative to `base_dir`, the job
    file's folder). The draft comes from the schema's `$schema` (the latest when absent), and
    `format` is checked (`email`, `date`, ...) since answers that merely look right are the point.
    """

    def __init__(self, schema: Mapping[str, Any] | str, *, base_dir: Path | None = None,
                 name: str = "json_schema") -> None:
        self.schema = dict(schema) if isinstance(schema, Mapping) else _load_schema(Path(schema), base_dir)
        validator_class = jsonschema.validators.validator_for(self.schema)
        try:
            validator_class.check_schema(self.schema)
        except jsonschema.SchemaError as exc:
            raise ValueError(f"invalid schema at {exc.json_path}: {exc.message}") from None
        self.validator = validator_class(self.schema, format_checker=validator_class.FORMAT_CHECKER)
        self.name = name

    async def __call__(
        self, item: Mapping[str, Any], messages: Sequence[ChatMessage], response: ChatResponse
    ) -> Score:
        try:
            instance = json.loads(extract_json_text(response.text))
        except ValueError as exc:
            return Score(0.0, f"not JSON: {exc}")
        # best_match is the error jsonschema's own `validate` reports: the shallowest, most relevant one.
        error = best_match(self.validator.iter_errors(instance))
        if error is None:
            return Score(1.0)
        # The message quotes the offending value, which may be the whole (huge) answer.
        return Score(0.0, f"{error.json_path}: {clipped(error.message)}",
                     metadata={"path": error.json_path, "keyword": str(error.validator)})


def _load_schema(path: Path, base_dir: Path | None) -> dict[str, Any]:
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot read the schema file {str(path)!r}: {exc.strerror or exc}") from None
    try:
        schema = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"the schema file {str(path)!r} does not parse: {exc}") from None
    if not isinstance(schema, dict):
        raise ValueError(f"the schema file {str(path)!r} holds a {type(schema).__name__}, not an object")
    return schema
