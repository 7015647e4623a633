"""The row schema: fixed column order, criterion columns, and the normalization that guards every write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pytest

from evalpipe.errors import ConfigError
from evalpipe.pipeline.output.rows import COLUMNS, criteria_of, normalize_row, row_from_json, row_schema, row_to_json

EXPECTED_LEADING = [
    "run_id", "task_id", "task_index", "item_id", "backend_id", "provider", "model", "param_set",
    "temperature", "top_p", "top_k", "max_tokens", "seed", "repeat", "turn", "reasoning_effort",
    "reasoning_budget_tokens", "item", "prompt", "messages", "response", "reasoning", "refusal", "tool_calls",
    "trajectory", "safety",
    "finish_reason", "input_tokens", "output_tokens", "reasoning_tokens", "cached_input_tokens",
    "cache_write_input_tokens", "cost_usd", "scoring_input_tokens",
    "scoring_output_tokens", "scoring_cost_usd", "latency_s", "ttft_s",
    "attempts", "cached", "status", "error_type", "error_message",
]
EXPECTED_TRAILING = ["score_total", "passed", "started_at", "finished_at"]


def test_columns_in_documented_order_with_two_columns_per_criterion() -> None:
    schema = row_schema(["json_valid", "relevance"])

    assert schema.names == [
        *EXPECTED_LEADING,
        "score_json_valid", "explanation_json_valid", "score_relevance", "explanation_relevance",
        *EXPECTED_TRAILING,
    ]
    assert list(COLUMNS) == EXPECTED_LEADING + EXPECTED_TRAILING
    assert criteria_of(schema) == ["json_valid", "relevance"]


def test_column_types_and_every_column_nullable() -> None:
    schema = row_schema(["judge"])

    assert schema.field("task_index").type == pa.int64()
    assert schema.field("temperature").type == pa.float64()
    assert schema.field("cached").type == pa.bool_()
    assert schema.field("score_judge").type == pa.float64()
    assert schema.field("explanation_judge").type == pa.string()
    assert schema.field("started_at").type == pa.timestamp("us", tz="UTC")
    assert all(field.nullable for field in schema)


@pytest.mark.parametrize(
    ("criteria", "message"),
    [(["a", "a"], "appears twice"), (["total"], "clashes"), (["has space"], "cannot name"),
     (["tab\there"], "cannot name"), ([""], "cannot name")],
)
def test_bad_criterion_names_are_refused(criteria: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        row_schema(criteria)


def test_normalize_fills_missing_columns_and_keeps_schema_order() -> None:
    schema = row_schema(["c"])

    row = normalize_row({"status": "error", "task_id": "t1", "error_type": "RateLimitError"}, schema)

    assert list(row) == schema.names
    assert row["task_id"] == "t1"
    assert row["response"] is None
    assert row["score_c"] is None


def test_normalize_rejects_unknown_columns() -> None:
    with pytest.raises(ValueError, match="score_typo"):
        normalize_row({"task_id": "t", "score_typo": 1.0}, row_schema(["c"]))


@pytest.mark.parametrize(
    ("column", "value"),
    [("input_tokens", "12"), ("input_tokens", True), ("cached", 1), ("temperature", "hot"), ("prompt", 3),
     ("input_tokens", 1.5), ("started_at", [2024])],
)
def test_normalize_rejects_wrong_types(column: str, value: object) -> None:
    with pytest.raises(TypeError, match=column):
        normalize_row({column: value}, row_schema([]))


def test_normalize_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="status"):
        normalize_row({"status": "done"}, row_schema([]))


def test_normalize_coerces_numbers_and_timestamps_to_column_types() -> None:
    plus_two = timezone(timedelta(hours=2))
    row = normalize_row(
        {"temperature": 1, "input_tokens": 3.0, "started_at": datetime(2024, 5, 1, 14, 0, tzinfo=plus_two),
         "finished_at": "2024-05-01T12:00:01+00:00"},
        row_schema([]),
    )

    assert row["temperature"] == 1.0 and isinstance(row["temperature"], float)
    assert row["input_tokens"] == 3 and isinstance(row["input_tokens"], int)
    assert row["started_at"] == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert row["started_at"].tzinfo is UTC
    assert row["finished_at"] == datetime(2024, 5, 1, 12, 0, 1, tzinfo=UTC)


def test_normalized_rows_build_a_table_with_exactly_the_schema() -> None:
    schema = row_schema(["c"])
    rows = [normalize_row({"task_id": "a", "status": "error"}, schema),
            normalize_row({"task_id": "b", "status": "ok", "score_c": 0.5, "passed": True,
                           "started_at": datetime(2024, 1, 1, tzinfo=UTC)}, schema)]

    table = pa.Table.from_pylist(rows, schema=schema)

    assert table.schema == schema
    assert table.column("score_c").to_pylist() == [None, 0.5]


def test_json_form_round_trips_and_projects_onto_a_newer_schema() -> None:
    old = row_schema(["gone"])
    row = normalize_row({"task_id": "t", "status": "ok", "score_gone": 1.0,
                         "finished_at": datetime(2024, 1, 1, 8, 30, tzinfo=UTC)}, old)

    assert row_from_json(row_to_json(row), old) == row
    projected = row_from_json(row_to_json(row), row_schema(["new"]))
    assert "score_gone" not in projected
    assert projected["score_new"] is None
    assert projected["finished_at"] == datetime(2024, 1, 1, 8, 30, tzinfo=UTC)
