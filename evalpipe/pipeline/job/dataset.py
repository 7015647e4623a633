"""A job's items: inline, or streamed from a JSONL, CSV or Parquet file without ever loading it whole.

Every item gets an id: the value of its `id_field`, or else a stable hash of its content, so the same
item has the same id on every machine and every run. A `Dataset` can be iterated any number of times
(each pass re-reads the file) and counted without building the items.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from array import array
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.compute as pc  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.spec import DatasetSpec
from evalpipe.pipeline.job.task import stable_hash

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Rows converted to Python objects at a time: one batch is all a Parquet pass holds in memory.
PARQUET_BATCH_ROWS = 2048
# One item's line in a JSONL file: larger is a mistake (a whole corpus on one line), and it would be
# sent with every task of the item. A prompt past the template sandbox's size limit fails at validate too.
MAX_ITEM_BYTES = 10_000_000


class DatasetError(ConfigError):
    """A dataset file cannot be used: missing, unreadable, malformed or of an unknown format."""

    def __init__(self, problem: str, *, source: str, line: int | None = None) -> None:
        super().__init__(f"{source}:{line}: {problem}" if line else f"{source}: {problem}")
        self.problem = problem
        self.source = source
        self.line = line


class DatasetItem(NamedTuple):
    """One item: its id, its fields, its 0-based position and, for JSONL and CSV, its line in the file."""

    # A named tuple, not a dataclass: a million of them are built per pass, and a tuple builds faster.
    id: str
    data: Mapping[str, Any]
    position: int  # 0-based, in file order
    line: int | None = None


def display_path(path: str | os.PathLike[str]) -> str:
    """`path` as a person would type it: normalised, and relative to the working directory when inside it."""
    normalised = os.path.normpath(path)
    if os.path.isabs(normalised):
        cwd = os.getcwd()
        if normalised.startswith(cwd.rstrip(os.sep) + os.sep):
            return os.path.relpath(normalised, cwd)
    return normalised


class Dataset:
    """The items of one `DatasetSpec`; iterate it for `DatasetItem`s, `len()` it to count them."""

    def __init__(self, spec: DatasetSpec, base_dir: Path | None = None) -> None:
        self.spec = spec
        self.path: Path | None = None
        self.format = "inline"
        if spec.path is not None:
            self.path = Path(spec.path) if Path(spec.path).is_absolute() else (base_dir or Path()) / spec.path
            self.format = FORMATS.get(self.path.suffix.lower(), "")
        self._count: int | None = None

    @property
    def source(self) -> str:
        """Where the items come from, for messages: the file, or "inline items"."""
        return display_path(self.path) if self.path is not None else "inline items"

    def location(self, item: DatasetItem) -> str:
        """Where `item` sits, for messages: `data/x.jsonl:12`, `data/x.parquet row 12` or `item 12`."""
        if self.path is None:
            return f"item {item.position + 1}"
        if item.line is not None:
            return f"{self.source}:{item.line}"
        return f"{self.source} row {item.position + 1}"

    def check_file(self) -> None:
        """Raise `DatasetError` unless the file exists, is readable and has a known format."""
        if self.path is None:
            return
        if not self.format:
            known = ", ".join(sorted(FORMATS))
            raise DatasetError(f"unknown dataset format {self.path.suffix!r}; expected one of: {known}",
                               source=self.source)
        if not self.path.is_file():
            raise DatasetError("dataset file not found", source=self.source)
        try:
            with self.path.open("rb") as handle:
                handle.read(1)
        except OSError as exc:
            raise DatasetError(f"cannot read the dataset file: {exc.strerror}", source=self.source) from None

    def __iter__(self) -> Iterator[DatasetItem]:
        """Each item in file order, up to the spec's `limit`; every call starts a fresh pass."""
        id_field = self.spec.id_field
        for index, (data, line) in enumerate(itertools.islice(self._records(), self.spec.limit)):
            value = data.get(id_field)
            yield DatasetItem(stable_hash(data, length=16) if value is None else str(value), data, index, line)

    def __len__(self) -> int:
        """The number of items (with `limit` applied), counted without building them; cached."""
        if self._count is None:
            total = self._count_records()
            self._count = total if self.spec.limit is None else min(total, self.spec.limit)
        return self._count

    def _records(self) -> Iterator[tuple[dict[str, Any], int | None]]:
        if self.spec.items is not None:
            for data in self.spec.items:
                yield data, None
            return
        self.check_file()
        readers = {"jsonl": self._jsonl_records, "csv": self._csv_records, "parquet": self._parquet_records}
        yield from readers[self.format]()

    def _jsonl_records(self) -> Iterator[tuple[dict[str, Any], int | None]]:
        assert self.path is not None
        with self.path.open("rb") as handle:
            # Binary lines: a bad byte is reported with its line instead of failing the whole decode.
            for number, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                if len(raw) > MAX_ITEM_BYTES:
                    raise DatasetError(f"the item is {len(raw):,} bytes long; at most {MAX_ITEM_BYTES:,} are allowed "
                                       "(split it into smaller items)",
                                       source=self.source, line=number)
                try:
                    data = json.loads(raw.decode().rstrip())  # str parses faster than bytes: no encoding sniffing
                except UnicodeDecodeError:
                    raise DatasetError("not valid UTF-8", source=self.source, line=number) from None
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"not valid JSON: {exc.msg} (column {exc.colno})",
                                       source=self.source, line=number) from None
                if not isinstance(data, dict):
                    raise DatasetError(f"expected a JSON object per line, got {type(data).__name__}",
                                       source=self.source, line=number)
                yield data, number

    def _csv_records(self) -> Iterator[tuple[dict[str, Any], int | None]]:
        assert self.path is not None
        # utf-8-sig: spreadsheets write a byte-order mark that would otherwise glue onto the first column name.
        with self.path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            try:
                header = next(reader, None)
                if header is None:
                    return
                repeated = sorted({name for name in header if header.count(name) > 1})
                if repeated or "" in header:
                    problem = f"repeated columns: {', '.join(repeated)}" if repeated else "a column has no name"
                    raise DatasetError(f"bad CSV header: {problem}", source=self.source, line=1)
                for row in reader:
                    if not row:
                        continue
                    if len(row) != len(header):
                        raise DatasetError(f"row has {len(row)} fields, the header has {len(header)}",
                                           source=self.source, line=reader.line_num)
                    yield dict(zip(header, row, strict=True)), reader.line_num
            except UnicodeDecodeError:
                raise DatasetError("not valid UTF-8", source=self.source, line=reader.line_num + 1) from None
            except csv.Error as exc:
                raise DatasetError(f"not valid CSV: {exc}", source=self.source, line=reader.line_num) from None

    def _parquet_file(self) -> pq.ParquetFile:
        assert self.path is not None
        try:
            return pq.ParquetFile(self.path)
        except Exception as exc:  # pyarrow raises ArrowInvalid, OSError or others for a broken file
            raise DatasetError(f"not a readable Parquet file: {exc}", source=self.source) from None

    def _parquet_records(self) -> Iterator[tuple[dict[str, Any], int | None]]:
        for batch in self._parquet_file().iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for data in batch.to_pylist():
                yield data, None

    def _count_records(self) -> int:
        if self.spec.items is not None:
            return len(self.spec.items)
        self.check_file()
        assert self.path is not None
        if self.format == "parquet":
            return int(self._parquet_file().metadata.num_rows)
        if self.format == "jsonl":
            with self.path.open("rb") as handle:
                return sum(1 for raw in handle if raw.strip())
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as handle:
                rows = sum(1 for row in csv.reader(handle) if row)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise DatasetError(f"not valid CSV: {exc}", source=self.source) from None
        return max(rows - 1, 0)  # the header


def id_digest(item_id: str) -> int:
    """A 64-bit digest of an item id, for `duplicate_items`: valid within one process only."""
    # Python's string hash is salted per process, which is fine here: digests are compared within one
    # check and never stored, and it costs far less than a cryptographic hash on a million ids.
    return hash(item_id)


def duplicate_items(dataset: Dataset, digests: array[int]) -> Iterator[tuple[DatasetItem, DatasetItem]]:
    """Each (first, again) pair of items sharing an id, given `id_digest` of every item's id (`array("q")`)."""
    values = pa.Array.from_buffers(pa.int64(), len(digests), [None, pa.py_buffer(digests)])
    counts = pc.value_counts(values)
    repeated = set(counts.filter(pc.greater(counts.field("counts"), 1)).field("values").to_pylist())
    if not repeated:
        return
    first_seen: dict[str, DatasetItem] = {}
    for item in dataset:  # a second pass that keeps only the few ids whose digests repeat
        if id_digest(item.id) in repeated:
            if item.id in first_seen:
                yield first_seen[item.id], item
            else:
                first_seen[item.id] = item
