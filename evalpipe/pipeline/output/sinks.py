"""Where rows end up for people and tools: Parquet part files, `rows.csv` and optionally `rows.jsonl`.

The run store is the source of truth; the sinks are views of it written as rows arrive. A killed
process leaves every file it finished readable (Parquet parts are renamed into place only once
closed), and a resumed run rebuilds the sinks from the store, so the output holds exactly one row
per task. Only the runner's single writer task calls them, so there is no locking.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol, cast

import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from evalpipe.pipeline.job.spec import OutputFormat
from evalpipe.pipeline.output.rows import Row, normalize_row, row_to_json
from evalpipe.pipeline.output.store import RunStore, WriteFailed

PARQUET_DIRNAME = "parquet"
CSV_FILENAME = "rows.csv"
JSONL_FILENAME = "rows.jsonl"

# OWASP's CSV injection rule (https://owasp.org/www-community/attacks/CSV_Injection): a cell starting
# with one of these is a formula to a spreadsheet, so it gets a leading apostrophe, which spreadsheets
# hide. A cell that already starts with an apostrophe gets one more, so unescaping is exact.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "'")


def escape_csv_cell(text: str) -> str:
    """`text` made inert for spreadsheets: a leading `'` when it could start a formula."""
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def unescape_csv_cell(text: str) -> str:
    """The original text of a cell written by `escape_csv_cell`."""
    return text[1:] if text.startswith("'") else text


@dataclass(frozen=True, slots=True)
class Rebuild:
    """A sink being rewritten: `write` batches of rows in task order, then `finish` to put them in place."""

    write: Callable[[Sequence[Row]], None]
    finish: Callable[[], None]


class Sink(Protocol):
    """One output format of a run."""

    path: Path

    def write(self, rows: Sequence[Row]) -> None:
        """Append normalized rows."""

    def flush(self) -> None:
        """Make everything written so far readable on disk."""

    def start_rebuild(self) -> Rebuild:
        """Start rewriting the output from scratch: the rebuild's rows replace everything when it finishes."""

    def close(self) -> None:
        """Flush and close; the sink is not used afterwards."""


class ParquetSink:
    """Zstd Parquet parts `part-00000.parquet`, ... in `directory`, each renamed into place when closed.

    A part closes after `rows_per_part` rows, or on the first write once it has been open
    `seconds_per_part` seconds, or on `flush`; rows go into the open part in row groups of
    `row_group_rows`, so memory stays flat."""

    def __init__(
        self,
        directory: str | Path,
        schema: pa.Schema,
        *,
        rows_per_part: int = 100_000,
        seconds_per_part: float = 300.0,
        row_group_rows: int = 5_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(directory)
        self.schema = schema
        self.rows_per_part = rows_per_part
        self.seconds_per_part = seconds_per_part
        self.row_group_rows = min(row_group_rows, rows_per_part)
        self._clock = clock
        self._buffer: list[Row] = []
        self._writer: pq.ParquetWriter | None = None
        self._part_rows = 0  # rows of the open part, written or buffered
        self._part_opened = 0.0
        self.path.mkdir(parents=True, exist_ok=True)
        self._next_part = self._prepare_directory()

    def _prepare_directory(self) -> int:
        """Drop unfinished parts of a killed writer (unreadable: no footer) and return the next free number."""
        for stale in self.path.glob(".part-*.tmp"):
            stale.unlink()
        numbers = [int(p.stem.removeprefix("part-")) for p in self.path.glob("part-*.parquet")]
        return max(numbers, default=-1) + 1

    def parts(self) -> list[Path]:
        """The closed, readable parts, in order."""
        return sorted(self.path.glob("part-*.parquet"))

    def write(self, rows: Sequence[Row]) -> None:
        """Add rows to the open part, writing full row groups and closing the part when it is due."""
        for row in rows:
            if self._part_rows == 0:
                self._part_opened = self._clock()
            self._buffer.append(row)
            self._part_rows += 1
            if self._part_rows >= self.rows_per_part:
                self._close_part()
            elif len(self._buffer) >= self.row_group_rows:
                self._write_row_group()
        if self._part_rows and self._clock() - self._part_opened >= self.seconds_per_part:
            self._close_part()

    def flush(self) -> None:
        """Close the open part now, so that every row written so far is in a readable file."""
        self._close_part()

    def close(self) -> None:
        """Close the open part."""
        self._close_part()

    def _temp_path(self, number: int) -> Path:
        # A dot name: globs for `*.parquet` and pyarrow / polars dataset readers skip it.
        return self.path / f".part-{number:05d}.parquet.tmp"

    def _write_row_group(self) -> None:
        if not self._buffer:
            return
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._temp_path(self._next_part), self.schema, compression="zstd")
        self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
        self._buffer.clear()

    def _close_part(self) -> None:
        if self._part_rows == 0:
            return
        self._write_row_group()
        assert self._writer is not None
        self._writer.close()
        self._writer = None
        os.replace(self._temp_path(self._next_part), self.path / f"part-{self._next_part:05d}.parquet")
        self._next_part += 1
        self._part_rows = 0

    def start_rebuild(self) -> Rebuild:
        """New parts in a staging directory that replaces the parts directory once it is complete."""
        self._buffer.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._part_rows = 0
        staging = self.path.with_name(f".{self.path.name}.rebuild")
        retired = self.path.with_name(f".{self.path.name}.old")
        for leftover in (staging, retired):  # from a rebuild that was itself killed
            shutil.rmtree(leftover, ignore_errors=True)
        fresh = ParquetSink(staging, self.schema, rows_per_part=self.rows_per_part,
                            seconds_per_part=math.inf, row_group_rows=self.row_group_rows)

        def finish() -> None:
            fresh.close()
            rebuilt_parts = len(fresh.parts())
            if self.path.exists():
                self.path.rename(retired)
            staging.rename(self.path)
            shutil.rmtree(retired, ignore_errors=True)
            self._next_part = rebuilt_parts

        return Rebuild(fresh.write, finish)


class _TextLinesSink:
    """A text file appended batch by batch and flushed after each; rebuilt through a temporary file."""

    def __init__(self, path: str | Path, schema: pa.Schema) -> None:
        self.path = Path(path)
        self.schema = schema
        self._file: IO[str] | None = None

    def _start(self, file: IO[str]) -> None:
        """Write what a new file begins with."""

    def _append(self, file: IO[str], rows: Iterable[Row]) -> None:
        raise NotImplementedError

    def _open(self) -> IO[str]:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # newline="": the csv module writes its own line endings (RFC 4180's CRLF).
            self._file = self.path.open("a", encoding="utf-8", newline="")
            if self._file.tell() == 0:
                self._start(self._file)
        return self._file

    def write(self, rows: Sequence[Row]) -> None:
        """Append rows and flush them to the OS, so a killed process keeps every finished batch."""
        file = self._open()
        self._append(file, rows)
        file.flush()

    def flush(self) -> None:
        """Flush buffered text to the OS."""
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            file, self._file = self._file, None
            file.close()  # closed even when its last flush fails (a full disk): the error is raised

    def start_rebuild(self) -> Rebuild:
        """A temporary file that is renamed over the old one once it is complete."""
        self.close()
        temp = self.path.with_name(f".{self.path.name}.tmp")
        file = temp.open("w", encoding="utf-8", newline="")
        self._start(file)

        def finish() -> None:
            file.close()
            os.replace(temp, self.path)

        return Rebuild(lambda rows: self._append(file, rows), finish)


class CsvSink(_TextLinesSink):
    """`rows.csv`: a header, then one line per row; text cells escaped against formula injection.

    Empty cells are nulls, booleans are `true` / `false`, timestamps ISO 8601, numbers as Python prints them."""

    def __init__(self, path: str | Path, schema: pa.Schema) -> None:
        super().__init__(path, schema)
        # Column positions by kind, computed once: only text, boolean and timestamp cells need converting
        # (the csv module already writes None as an empty cell and numbers as they are).
        self._text = [i for i, f in enumerate(schema) if pa.types.is_string(f.type)]
        self._flags = [i for i, f in enumerate(schema) if pa.types.is_boolean(f.type)]
        self._times = [i for i, f in enumerate(schema) if pa.types.is_timestamp(f.type)]

    def _start(self, file: IO[str]) -> None:
        csv.writer(file).writerow(self.schema.names)

    def _cells(self, row: Row) -> list[Any]:
        cells = list(row.values())
        for i in self._text:
            if cells[i]:
                cells[i] = escape_csv_cell(cells[i])
        for i in self._flags:
            if cells[i] is not None:
                cells[i] = "true" if cells[i] else "false"
        for i in self._times:
            if cells[i] is not None:
                cells[i] = cells[i].isoformat()
        return cells

    def _append(self, file: IO[str], rows: Iterable[Row]) -> None:
        csv.writer(file).writerows(map(self._cells, rows))


class JsonlSink(_TextLinesSink):
    """`rows.jsonl`: one JSON object per row, timestamps as ISO 8601 text, non-finite numbers as null."""

    def __init__(self, path: str | Path, schema: pa.Schema) -> None:
        super().__init__(path, schema)
        self._floats = [f.name for f in schema if pa.types.is_floating(f.type)]

    def _append(self, file: IO[str], rows: Iterable[Row]) -> None:
        for row in rows:
            data = row_to_json(row)
            for name in self._floats:
                value = data[name]
                # Strict JSON has no NaN or Infinity: other tools could not read the line.
                if value is not None and not math.isfinite(value):
                    data[name] = None
            file.write(json.dumps(data, ensure_ascii=False, allow_nan=False) + "\n")


class Sinks:
    """The sinks of one run, written together by the runner's writer task.

    A resumed run calls `rebuild_from(store)` before writing: the files of the killed run may hold
    half a CSV line, and rows that the resume writes again (retried errors) must not appear twice."""

    def __init__(self, schema: pa.Schema, sinks: Mapping[str, Sink]) -> None:
        self.schema = schema
        self.sinks = dict(sinks)

    @classmethod
    def for_run(
        cls,
        run_dir: str | Path,
        schema: pa.Schema,
        formats: Sequence[OutputFormat],
        *,
        rows_per_part: int = 100_000,
        seconds_per_part: float = 300.0,
        row_group_rows: int = 5_000,
    ) -> Sinks:
        """The sinks `formats` asks for (from `OutputSpec.formats`) under `run_dir`; the rest tunes Parquet parts."""
        run_dir = Path(run_dir)
        sinks: dict[str, Sink] = {}
        for output_format in dict.fromkeys(formats):
            if output_format == "parquet":
                sinks[output_format] = ParquetSink(run_dir / PARQUET_DIRNAME, schema, rows_per_part=rows_per_part,
                                                      seconds_per_part=seconds_per_part, row_group_rows=row_group_rows)
            elif output_format == "csv":
                sinks[output_format] = CsvSink(run_dir / CSV_FILENAME, schema)
            elif output_format == "jsonl":
                sinks[output_format] = JsonlSink(run_dir / JSONL_FILENAME, schema)
            else:
                raise ValueError(f"unknown output format {output_format!r}")
        return cls(schema, sinks)

    @property
    def paths(self) -> dict[str, Path]:
        """Where each format goes (the Parquet entry is the directory of parts)."""
        return {name: sink.path for name, sink in self.sinks.items()}

    def write(self, rows: Sequence[Mapping[str, Any]], *, normalized: bool = False) -> None:
        """Write a batch to every sink. Rows are normalized first, so a wrong column fails here, not in a
        file; `normalized=True` says they already are (the run store's `record` returns them so)."""
        batch = cast(list[Row], list(rows)) if normalized else [normalize_row(row, self.schema) for row in rows]
        for sink in self.sinks.values():
            with _naming(sink):
                sink.write(batch)

    def flush(self) -> None:
        """Make every row written so far readable on disk (closes the open Parquet part)."""
        for sink in self.sinks.values():
            with _naming(sink):
                sink.flush()

    def rebuild_from(self, store: RunStore, batch_rows: int = 5_000) -> None:
        """Rewrite every sink from the store, in one pass over it: what a resumed run does before it writes."""
        try:
            rebuilds = [sink.start_rebuild() for sink in self.sinks.values()]
            rows = store.iter_rows()
            while batch := list(itertools.islice(rows, batch_rows)):
                for rebuild in rebuilds:
                    rebuild.write(batch)
            for rebuild in rebuilds:
                rebuild.finish()
        except OSError as error:
            raise WriteFailed(Path(getattr(error, "filename", None) or store.path.parent), error) from error

    def close(self) -> None:
        """Close every sink; every one is closed even when one fails (the first failure is raised)."""
        failure: WriteFailed | None = None
        for sink in self.sinks.values():
            try:
                with _naming(sink):
                    sink.close()
            except WriteFailed as error:
                failure = failure or error
        if failure is not None:
            raise failure


@contextmanager
def _naming(sink: Sink) -> Iterator[None]:
    """An OSError of `sink` as a `WriteFailed` naming its file (a write() error carries no file name)."""
    try:
        yield
    except OSError as error:
        raise WriteFailed(sink.path, error) from error
