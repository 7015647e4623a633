"""The one flat row schema: one row per task, every column known before the first row is written.

A row is a plain `dict[str, Any]`. `row_schema(criteria)` gives the Arrow schema every sink writes;
`normalize_row` puts a row in that shape (missing columns become None, values get their column's
type) and refuses columns the schema does not have, which would otherwise vanish silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

from evalpipe.errors import ConfigError

Row = dict[str, Any]
Status = Literal["ok", "error", "skipped"]
STATUSES: tuple[Status, ...] = ("ok", "error", "skipped")

TIMESTAMP = pa.timestamp("us", tz="UTC")

# Before the criterion columns.
_LEADING: tuple[tuple[str, Any], ...] = (
    ("run_id", pa.string()),
    ("task_id", pa.string()),
    ("task_index", pa.int64()),
    ("item_id", pa.string()),
    ("backend_id", pa.string()),
    ("provider", pa.string()),
    ("model", pa.string()),
    ("param_set", pa.string()),
    ("temperature", pa.float64()),
    ("top_p", pa.float64()),
    ("top_k", pa.int64()),
    ("max_tokens", pa.int64()),
    ("seed", pa.int64()),
    ("repeat", pa.int64()),
    ("turn", pa.int64()),
    ("reasoning_effort", pa.string()),
    ("reasoning_budget_tokens", pa.int64()),
    ("item", pa.string()),  # the dataset item's fields as JSON: the expected answer beside the answer
    ("prompt", pa.string()),
    ("messages", pa.string()),  # the full prompt as sent (system prompt included), as JSON [{role, content}]
    ("response", pa.string()),
    ("reasoning", pa.string()),
    ("refusal", pa.string()),
    ("tool_calls", pa.string()),  # the tools the model called, as JSON [{id, name, arguments, raw_arguments}]
    ("trajectory", pa.string()),  # a multi-step tool loop's steps as JSON: each call's text, calls, results, usage
    ("safety", pa.string()),  # the vendor's safety detail as JSON
    ("finish_reason", pa.string()),
    ("input_tokens", pa.int64()),
    ("output_tokens", pa.int64()),  # all billed output, reasoning included
    ("reasoning_tokens", pa.int64()),
    ("cached_input_tokens", pa.int64()),
    ("cache_write_input_tokens", pa.int64()),
    ("cost_usd", pa.float64()),
    ("scoring_input_tokens", pa.int64()),  # what the scorers' own model calls (judges, embeddings) used
    ("scoring_output_tokens", pa.int64()),
    ("scoring_cost_usd", pa.float64()),
    ("latency_s", pa.float64()),
    ("ttft_s", pa.float64()),
    ("attempts", pa.int64()),
    ("cached", pa.bool_()),
    ("status", pa.string()),
    ("error_type", pa.string()),
    ("error_message", pa.string()),
)
# After the criterion columns.
_TRAILING: tuple[tuple[str, Any], ...] = (
    ("score_total", pa.float64()),
    ("passed", pa.bool_()),
    ("started_at", TIMESTAMP),
    ("finished_at", TIMESTAMP),
)

COLUMNS: tuple[str, ...] = tuple(name for name, _ in _LEADING + _TRAILING)
"""The fixed columns in schema order; each criterion's `score_<name>` and `explanation_<name>`
sit between `error_message` and `score_total`."""

TIMESTAMP_COLUMNS: frozenset[str] = frozenset({"started_at", "finished_at"})

# A criterion name becomes part of two column names; Parquet accepts any text, but whitespace and
# control characters make columns that people cannot type in a query.
_CRITERION_NAME = re.compile(r"^[^\s\x00-\x1f\x7f]+$")


def criterion_columns(name: str) -> tuple[str, str]:
    """The score and explanation column names of criterion `name`."""
    return f"score_{name}", f"explanation_{name}"


def row_schema(criteria: Sequence[str]) -> pa.Schema:
    """The Arrow schema of a job's rows: the fixed columns with two columns per criterion, all nullable."""
    fields = [pa.field(name, type_, nullable=True) for name, type_ in _LEADING]
    seen: set[str] = set()
    for name in criteria:
        if not _CRITERION_NAME.match(name):
            raise ConfigError(f"criterion name {name!r} cannot name a column: no spaces or control characters")
        if name in seen:
            raise ConfigError(f"criterion {name!r} appears twice; each criterion needs its own name")
        score, explanation = criterion_columns(name)
        if score in COLUMNS or explanation in COLUMNS:
            raise ConfigError(f"criterion name {name!r} clashes with the fixed column {score!r}; rename it")
        seen.add(name)
        fields += [pa.field(score, pa.float64(), nullable=True), pa.field(explanation, pa.string(), nullable=True)]
    fields += [pa.field(name, type_, nullable=True) for name, type_ in _TRAILING]
    return pa.schema(fields)


def criteria_of(schema: pa.Schema) -> list[str]:
    """The criterion names of a row schema, in column order."""
    return [name.removeprefix("score_") for name in schema.names if name.startswith("score_") and name not in COLUMNS]


def spend_of(row: Mapping[str, Any]) -> tuple[int, int, float]:
    """(input tokens, output tokens, cost) a row's calls spent: the answer's and its scorers'."""
    return ((row.get("input_tokens") or 0) + (row.get("scoring_input_tokens") or 0),
            (row.get("output_tokens") or 0) + (row.get("scoring_output_tokens") or 0),
            (row.get("cost_usd") or 0.0) + (row.get("scoring_cost_usd") or 0.0))


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    raise TypeError(f"expected str, got {type(value).__name__}")


def _to_int(value: Any) -> int:
    # bool is an int subclass, but True in a token column is a bug, not a count.
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError(f"expected int, got {type(value).__name__} {value!r}")


def _to_float(value: Any) -> float:
    # YAML reads `temperature: 1` as an int; the column is float64 all the same.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise TypeError(f"expected float, got {type(value).__name__}")


def _to_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise TypeError(f"expected bool, got {type(value).__name__}")


def to_utc(value: Any) -> datetime:
    """A timestamp as an aware UTC datetime: from a datetime (naive means UTC), ISO 8601 text or epoch seconds."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    raise TypeError(f"expected a datetime, got {type(value).__name__}")


_Plan = tuple[frozenset[str], tuple[tuple[str, Any], ...]]
# Keyed by identity: hashing a pyarrow schema costs tens of microseconds, more than normalizing the row.
_PLANS: dict[int, tuple[pa.Schema, _Plan]] = {}


def _plan(schema: pa.Schema) -> _Plan:
    """The column names and (column, converter) pairs of `schema`, computed once per schema object."""
    cached = _PLANS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    pairs = []
    for field in schema:
        type_ = field.type
        if pa.types.is_timestamp(type_):
            convert: Any = to_utc
        elif pa.types.is_boolean(type_):
            convert = _to_bool
        elif pa.types.is_integer(type_):
            convert = _to_int
        elif pa.types.is_floating(type_):
            convert = _to_float
        elif pa.types.is_string(type_):
            convert = _to_str
        else:
            raise TypeError(f"unsupported column type {type_} for {field.name!r}")
        pairs.append((field.name, convert))
    plan: _Plan = (frozenset(schema.names), tuple(pairs))
    if len(_PLANS) >= 64:  # a long-lived process that builds many schemas (tests) must not grow without end
        _PLANS.clear()
    _PLANS[id(schema)] = (schema, plan)  # holding the schema keeps its id from being reused
    return plan


def normalize_row(row: Mapping[str, Any], schema: pa.Schema) -> Row:
    """`row` in schema order with every column present (None when missing) and each value of its column's type."""
    names, converters = _plan(schema)
    if not names.issuperset(row):
        unknown = sorted(set(row) - names)
        raise ValueError(f"row has columns the schema does not know: {', '.join(unknown)}")
    normalized: Row = {}
    for name, convert in converters:
        value = row.get(name)
        if value is not None:
            try:
                value = convert(value)
            except (TypeError, ValueError) as error:
                raise TypeError(f"column {name!r}: {error}") from None
        normalized[name] = value
    status = normalized["status"]
    if status is not None and status not in STATUSES:
        raise ValueError(f"column 'status' must be one of {', '.join(STATUSES)}, got {status!r}")
    return normalized


def row_to_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A normalized row with timestamps as ISO 8601 text, ready for `json.dumps`."""
    data = dict(row)
    for name in TIMESTAMP_COLUMNS:
        value = data.get(name)
        if value is not None:
            data[name] = value.isoformat()
    return data


def row_from_json(data: Mapping[str, Any], schema: pa.Schema) -> Row:
    """A row stored by `row_to_json`, projected onto `schema`: columns it lacks are None, others are dropped.

    Dropping is deliberate: a run resumed with `--force` after a criterion was removed still reads its
    old rows."""
    return normalize_row({name: data[name] for name in schema.names if name in data}, schema)

