"""What the `item` column (the item's fields as JSON text) costs in a run's Parquet, against no item at all
and against one column per field (`item.<field>`).

    python scripts/bench_item_column.py [--rows 10000] [--dataset data/quickstart.jsonl]

from the repository after `make install`. Rows are built as a job builds them (`execute.base_row`, one
backend, the answer an echo of the question, one criterion) and written by the run's own `ParquetSink`
(zstd, row groups of 5,000). Two datasets: the file's items repeated (a small dataset asked many times:
repeats, parameter sets, backends) and as many distinct items as rows (each item's text made unique,
a large dataset asked once). Prints bytes per row for each layout, and what building the JSON text
costs per row.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import timeit
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

from evalpipe import LLMBuilder
from evalpipe.backends.registry import parse_backend
from evalpipe.pipeline.job.spec import BackendSpec
from evalpipe.pipeline.job.task import ParamSet, Task, stable_hash
from evalpipe.pipeline.output.rows import normalize_row, row_schema
from evalpipe.pipeline.output.sinks import ParquetSink
from evalpipe.pipeline.running.backend import Backend
from evalpipe.pipeline.running.execute import base_row, item_json
from evalpipe.pipeline.running.limits import BackendLimiter
from evalpipe.types import ChatMessage, GenerationParams


def items(dataset: Path, rows: int, distinct: bool) -> Iterator[dict[str, Any]]:
    base = [json.loads(line) for line in dataset.read_text(encoding="utf-8").splitlines() if line.strip()]
    for index in range(rows):
        item = dict(base[index % len(base)])
        if distinct:  # a large dataset: every item's text is its own
            item = {key: f"{value} #{index}" if isinstance(value, str) else value for key, value in item.items()}
        yield item


def rows_of(dataset: Path, count: int, distinct: bool) -> list[dict[str, Any]]:
    spec = BackendSpec.model_validate({"id": "a", "backend": parse_backend("openai"), "model": "gpt-4o-mini"})
    provider = LLMBuilder().backend("openai").api_key("sk-bench").model("gpt-4o-mini").build()
    backend = Backend(spec, provider, BackendLimiter())
    now = datetime.now(UTC)
    rows = []
    for index, item in enumerate(items(dataset, count, distinct)):
        messages = (ChatMessage.system("Answer in one word."), ChatMessage.user(str(item.get("question", ""))))
        task = Task(stable_hash([index, item]), index, str(item.get("id", index)), item, "a",
                    ParamSet("default", GenerationParams()), 0, messages)
        answer = f"Echo: {messages[-1].content}"
        row = base_row(task, backend, "run-bench") | {
            "status": "ok", "response": answer, "finish_reason": "stop", "input_tokens": 12, "output_tokens": 9,
            "cost_usd": 0.00001, "latency_s": 0.5 + (index % 97) / 100, "ttft_s": 0.2, "attempts": 1,
            "score_contains": float(index % 2), "explanation_contains": None, "score_total": float(index % 2),
            "passed": bool(index % 2), "started_at": now, "finished_at": now}
        rows.append(row)
    return rows


def parquet_bytes(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> int:
    with tempfile.TemporaryDirectory() as directory:
        sink = ParquetSink(directory, schema)
        sink.write([dict(row) for row in rows])
        sink.close()
        return sum(path.stat().st_size for path in Path(directory).glob("*.parquet"))


def layouts(rows: Sequence[dict[str, Any]]) -> dict[str, int]:
    schema = row_schema(["contains"])
    without = schema.remove(schema.get_field_index("item"))
    fields = sorted({key for row in rows for key in json.loads(row["item"])})
    # One column per field; a nested value (a list, an object) as JSON text, as a prefix layout would need.
    prefixed = without
    for name in fields:
        prefixed = prefixed.append(pa.field(f"item.{name}", pa.string()))

    def flat(row: dict[str, Any]) -> dict[str, Any]:
        values = json.loads(row["item"])
        plain = {key: value for key, value in row.items() if key != "item"}
        return plain | {f"item.{k}": v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}

    return {
        "no item": parquet_bytes([normalize_row({k: v for k, v in r.items() if k != "item"}, without) for r in rows],
                                 without),
        "item (JSON text)": parquet_bytes([normalize_row(r, schema) for r in rows], schema),
        "item.<field> columns": parquet_bytes([normalize_row(flat(r), prefixed) for r in rows], prefixed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--dataset", type=Path, default=Path("data/quickstart.jsonl"))
    args = parser.parse_args()
    for distinct in (False, True):
        rows = rows_of(args.dataset, args.rows, distinct)
        sizes = layouts(rows)
        label = "distinct items" if distinct else "items repeated"
        print(f"{args.rows} rows, {label}:")
        for name, size in sizes.items():
            extra = size - sizes["no item"]
            print(f"  {name:22} {size:>10,} bytes  {size / args.rows:7.1f} B/row  (+{extra / args.rows:.1f} B/row)")
    sample = json.loads(rows_of(args.dataset, 1, False)[0]["item"])
    runs = 200_000
    seconds = timeit.timeit(lambda: item_json(sample), number=runs)
    print(f"item_json per row: {seconds / runs * 1e6:.2f} µs")


if __name__ == "__main__":
    main()
