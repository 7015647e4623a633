"""Datasets: inline, JSONL, CSV and Parquet items with stable ids, streamed, re-iterable and counted."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]
import pytest

from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.dataset import Dataset, DatasetError
from evalpipe.pipeline.job.spec import DatasetSpec


def _dataset(path: Path, **options: Any) -> Dataset:
    return Dataset(DatasetSpec(path=path.name, **options), path.parent)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jsonl_items_keep_their_ids_fields_and_lines(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text('{"id": "a", "q": "one"}\n\n{"id": 7, "q": "two"}\n', encoding="utf-8")
    items = list(_dataset(path))
    assert [(i.id, i.position, i.line) for i in items] == [("a", 0, 1), ("7", 1, 3)]
    assert items[1].data == {"id": 7, "q": "two"}


def test_items_without_an_id_get_one_from_their_content(tmp_path: Path) -> None:
    first = _dataset(_write_jsonl(tmp_path / "a.jsonl", [{"q": "one", "a": 1}, {"q": "two", "a": 1}]))
    reordered = _dataset(_write_jsonl(tmp_path / "b.jsonl", [{"a": 1, "q": "two"}, {"a": 1, "q": "one"}]))
    ids = [item.id for item in first]
    assert len(set(ids)) == 2 and all(len(i) == 16 for i in ids)
    # The id depends on the content only: not on key order, position or file.
    assert [item.id for item in reordered] == ids[::-1]


def test_a_custom_id_field_is_used(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "q.jsonl", [{"key": "k1", "id": "ignored"}])
    assert [item.id for item in _dataset(path, id_field="key")] == ["k1"]


def test_a_dataset_iterates_twice_and_counts_with_its_limit(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "q.jsonl", [{"id": str(n)} for n in range(10)])
    dataset = _dataset(path, limit=4)
    assert [i.id for i in dataset] == [i.id for i in dataset] == ["0", "1", "2", "3"]
    assert len(dataset) == 4
    assert len(_dataset(path)) == 10


def test_inline_items(tmp_path: Path) -> None:
    dataset = Dataset(DatasetSpec(items=[{"id": "x", "q": 1}, {"q": 2}]), tmp_path)
    items = list(dataset)
    assert items[0].id == "x" and items[1].line is None and len(dataset) == 2
    assert dataset.source == "inline items" and dataset.location(items[1]) == "item 2"


def test_csv_values_are_text_and_quoted_fields_survive(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    # A byte-order mark as spreadsheets write it, a quoted comma and a quoted newline.
    path.write_bytes('\ufeffid,prompt,expected\nn1,"1, 2, 3,",4\nn2,"two\nlines",x\n\n'.encode())
    dataset = _dataset(path)
    items = list(dataset)
    assert [i.data for i in items] == [
        {"id": "n1", "prompt": "1, 2, 3,", "expected": "4"},
        {"id": "n2", "prompt": "two\nlines", "expected": "x"},
    ]
    assert [i.line for i in items] == [2, 4]
    assert len(dataset) == 2


def test_a_csv_row_with_the_wrong_field_count_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("id,q\na,1\nb,2,extra\n", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"q\.csv:3: row has 3 fields, the header has 2"):
        list(_dataset(path))


def test_parquet_streams_by_batches_and_counts_from_metadata(tmp_path: Path) -> None:
    path = tmp_path / "q.parquet"
    rows = 50_000
    table = pa.table({"id": [f"r{n}" for n in range(rows)], "text": ["x" * 200] * rows})
    pq.write_table(table, path, row_group_size=5_000)
    dataset = _dataset(path)
    assert len(dataset) == rows
    tracemalloc.start()
    try:
        iterator = iter(dataset)
        first = next(iterator)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first.id == "r0" and first.line is None
    # Converting all rows to Python at once would take well over 10 MB; one batch takes a fraction.
    assert peak < 3_000_000, peak
    assert sum(1 for _ in dataset) == rows
    assert dataset.location(first) == f"{dataset.source} row 1"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"id": 1}\n{"id": 2,,}\n', r"q\.jsonl:2: not valid JSON"),
        ('{"id": 1}\n[1, 2]\n', r"q\.jsonl:2: expected a JSON object per line, got list"),
    ],
)
def test_a_bad_jsonl_line_is_named(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "q.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DatasetError, match=expected):
        list(_dataset(path))


def test_bytes_that_are_not_utf8_are_named_by_line(tmp_path: Path) -> None:
    path = tmp_path / "q.jsonl"
    path.write_bytes(b'{"id": 1}\n{"id": "\xff"}\n')
    with pytest.raises(DatasetError, match=r"q\.jsonl:2: not valid UTF-8"):
        list(_dataset(path))


def test_missing_file_and_unknown_format_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="dataset file not found"):
        list(_dataset(tmp_path / "absent.jsonl"))
    (tmp_path / "q.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(DatasetError, match=r"unknown dataset format '\.txt'; expected one of: \.csv, \.jsonl"):
        len(_dataset(tmp_path / "q.txt"))


def test_a_file_that_is_not_parquet_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "q.parquet"
    path.write_text("not parquet", encoding="utf-8")
    with pytest.raises(DatasetError, match="not a readable Parquet file"):
        list(_dataset(path))
