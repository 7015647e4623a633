"""The run store: one SQLite file per run directory holding every finished task's row, the response cache
and the run's metadata. A task counts as done once its row is committed here; resume reads it back.

Only the runner's writer calls it, but possibly from different worker threads (`anyio.to_thread`), and
cache lookups may come from several at once; one lock serializes them on the single connection.
"""

from __future__ import annotations

import bisect
import errno
import json
import sqlite3
import threading
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]

from evalpipe.errors import ConfigError
from evalpipe.pipeline.output.rows import STATUSES, Row, normalize_row, row_from_json, row_to_json, spend_of

STORE_FILENAME = "run.sqlite"
# `json.dumps(ensure_ascii=False, separators=(",", ":"))` with one encoder: `json.dumps` builds one per call,
# which costs more than encoding a row's payload.
_compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class WriteFailed(Exception):
    """A file of the run directory could not be written: the disk is full, or an I/O error."""

    def __init__(self, path: Path, error: BaseException) -> None:
        super().__init__(path, error)
        self.path = path
        self.error = error

    @property
    def disk_full(self) -> bool:
        """Whether the file system ran out of space (or of quota)."""
        return disk_full(self.error)

    @property
    def message(self) -> str:
        """One line for people: what failed on which file."""
        if self.disk_full:
            return f"disk full writing {self.path}"
        reason = self.error.strerror if isinstance(self.error, OSError) and self.error.strerror else self.error
        return f"cannot write {self.path}: {reason}"

    def __str__(self) -> str:
        return self.message


def disk_full(error: BaseException) -> bool:
    """Whether `error` says that there is no room left (OSError ENOSPC/EDQUOT, SQLite's SQLITE_FULL)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if isinstance(error, sqlite3.Error) and getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
        return True
    return "No space left on device" in str(error)  # pyarrow's IO errors carry only the text

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rows (
    task_id TEXT PRIMARY KEY,
    task_index INTEGER,
    status TEXT,
    input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rows_by_index ON rows (task_index);
CREATE TABLE IF NOT EXISTS response_cache (
    request_key TEXT PRIMARY KEY,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_chunks (
    chunk_id TEXT PRIMARY KEY,
    backend_id TEXT NOT NULL,
    step TEXT NOT NULL,
    entries TEXT NOT NULL,
    file_id TEXT,
    batch_id TEXT,
    vendor_status TEXT,
    counts TEXT,
    step_at REAL NOT NULL,
    submitted_at REAL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# "skipped" rows (a backend without its key, a budget that ran out) were never attempted, so a
# resume attempts them; "error" rows are attempted again only when asked (`--retry-errors`).
_DONE = ("ok", "error")
_DONE_WITHOUT_ERRORS = ("ok",)


@dataclass(frozen=True, slots=True)
class RunTotals:
    """Sums over the stored rows, for the manifest and the summary line."""

    rows: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


def _connect(path: Path) -> sqlite3.Connection:
    # isolation_level=None: no implicit transactions; `record` opens and commits its own, so a batch
    # is exactly one transaction. check_same_thread=False: calls arrive from anyio's worker threads.
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30.0)
    mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        connection.close()
        raise ConfigError(f"the run store needs SQLite's WAL mode, which this file system refused ({mode!r})")
    # With WAL, NORMAL does not fsync at each commit: a commit is appended to the -wal file with write(),
    # and the OS keeps it even if this process is SIGKILLed, so a process crash loses no committed batch
    # (https://www.sqlite.org/pragma.html#pragma_synchronous). Only an OS crash or power cut can drop the
    # last commits, and the database stays consistent; those tasks then simply run again. FULL would
    # fsync every batch and make the writer the bottleneck for no protection a crashed run needs.
    connection.execute("PRAGMA synchronous=NORMAL")
    return connection


class FinishedIds:
    """A read-only set of task ids kept as sorted 64-bit digests. Two ids share a digest with a
    probability of about n²/2⁶⁵ (3·10⁻⁸ for a million tasks): a risk worth 100 MB less on resume.

    The digest is Python's string hash (SipHash, salted per process): the digests are compared
    within this process only and never stored, and it is far cheaper than a cryptographic hash."""

    def __init__(self, task_ids: Iterable[str]) -> None:
        # Built in numpy (8 bytes an id, sorted in place), looked up with bisect on an `array`: a numpy
        # scalar lookup costs several times more per task.
        digests = np.fromiter((hash(task_id) for task_id in task_ids), dtype=np.int64)
        digests.sort()
        self._digests = array("q")
        self._digests.frombytes(digests.tobytes())

    def __len__(self) -> int:
        return len(self._digests)

    def __contains__(self, task_id: object) -> bool:
        if not isinstance(task_id, str):
            return False
        digest = hash(task_id)
        index = bisect.bisect_left(self._digests, digest)
        return index < len(self._digests) and self._digests[index] == digest


@dataclass(slots=True)
class BatchChunk:
    """One batch of a backend in `mode: batch` as the run store records it.

    `step` moves uploading -> uploaded -> creating -> submitted -> ended -> collected; each is committed
    before the remote step it names starts and after it ends, and `chunk_id` (the marker the vendor
    keeps with the file or batch) lets a resumed run recognise a step a killed process already did."""

    chunk_id: str
    backend_id: str
    step: str
    entries: list[tuple[str, str]]  # (custom_id = task id, request key) of every request in the chunk
    step_at: float  # epoch seconds when `step` was recorded
    file_id: str | None = None
    batch_id: str | None = None
    vendor_status: str | None = None
    counts: dict[str, int] | None = None
    submitted_at: float | None = None
    detail: str | None = None  # why it failed or was rejected, for `evalpipe status`


def _batch_chunks(connection: sqlite3.Connection, backend_id: str | None) -> list[BatchChunk]:
    query = ("SELECT chunk_id, backend_id, step, entries, step_at, file_id, batch_id, vendor_status, counts, "
             "submitted_at, detail FROM batch_chunks")
    rows = connection.execute(query + (" WHERE backend_id = ?" if backend_id else "") + " ORDER BY rowid",
                              (backend_id,) if backend_id else ()).fetchall()
    return [BatchChunk(chunk_id, backend, step, [(a, b) for a, b in json.loads(entries)], step_at, file_id,
                       batch_id, status, json.loads(counts) if counts else None, submitted_at, detail)
            for chunk_id, backend, step, entries, step_at, file_id, batch_id, status, counts, submitted_at, detail
            in rows]


def _save_chunk(connection: sqlite3.Connection, chunk: BatchChunk) -> None:
    connection.execute(
        "INSERT INTO batch_chunks (chunk_id, backend_id, step, entries, step_at, file_id, batch_id, vendor_status,"
        " counts, submitted_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (chunk_id) DO UPDATE SET"
        " step = excluded.step, step_at = excluded.step_at, file_id = excluded.file_id, batch_id = excluded.batch_id,"
        " vendor_status = excluded.vendor_status, counts = excluded.counts, submitted_at = excluded.submitted_at,"
        " detail = excluded.detail",
        (chunk.chunk_id, chunk.backend_id, chunk.step, json.dumps(chunk.entries), chunk.step_at, chunk.file_id,
         chunk.batch_id, chunk.vendor_status, json.dumps(chunk.counts) if chunk.counts is not None else None,
         chunk.submitted_at, chunk.detail))


class RunStore:
    """Rows, response cache and metadata of one run, in `<run_dir>/run.sqlite`."""

    def __init__(self, connection: sqlite3.Connection, path: Path, run_id: str, schema: pa.Schema) -> None:
        self._connection = connection
        self._lock = threading.Lock()
        self.path = path
        self.run_id = run_id
        self.schema = schema

    @classmethod
    def open(cls, run_dir: str | Path, run_id: str, schema: pa.Schema) -> RunStore:
        """Open (or create) the store of `run_dir`; refuses a store that belongs to another run id."""
        path = Path(run_dir) / STORE_FILENAME
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            connection = _connect(path)
        except sqlite3.OperationalError as error:
            raise WriteFailed(path, error) from error
        try:
            connection.executescript(_SCHEMA)
            row = connection.execute("SELECT value FROM meta WHERE key = 'run_id'").fetchone()
            if row is None:
                connection.executemany("INSERT INTO meta (key, value) VALUES (?, ?)",
                                       [("run_id", run_id), ("created_at", datetime.now(UTC).isoformat())])
            elif row[0] != run_id:
                raise ConfigError(f"{path} belongs to run {row[0]!r}, not {run_id!r}")
        except sqlite3.OperationalError as error:
            connection.close()
            raise WriteFailed(path, error) from error
        except BaseException:
            connection.close()
            raise
        return cls(connection, path, run_id, schema)

    @staticmethod
    def read_meta(run_dir: str | Path) -> dict[str, str]:
        """The metadata of the store in `run_dir` without opening it for writing; ConfigError if there is none."""
        path = Path(run_dir) / STORE_FILENAME
        if not path.is_file():
            raise ConfigError(f"{run_dir} is not a run directory: it has no {STORE_FILENAME}")
        connection = sqlite3.connect(path)
        try:
            return dict(connection.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as error:
            raise ConfigError(f"{path} is not a readable run store: {error}") from None
        finally:
            connection.close()

    # -- rows -------------------------------------------------------------------------------------------

    def record(self, rows: Iterable[Mapping[str, Any]]) -> list[Row]:
        """Commit `rows` in one transaction (replacing earlier rows of the same tasks); returns them normalized.

        A row without `run_id` gets this run's. Nothing of the batch is kept if any row is invalid."""
        normalized: list[Row] = []

        def parameters() -> Iterator[tuple[Any, ...]]:
            for raw in rows:
                row = normalize_row(raw, self.schema)
                if row["task_id"] is None or row["status"] is None:
                    raise ValueError("a row needs a task_id and a status")
                if row["run_id"] is None:
                    row["run_id"] = self.run_id
                normalized.append(row)
                yield (row["task_id"], row["task_index"], row["status"], *spend_of(row),
                       _compact_json(row_to_json(row)))

        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                # Rows are inserted as the iterable yields them, all inside this one transaction.
                self._connection.executemany(
                    "INSERT OR REPLACE INTO rows (task_id, task_index, status, input_tokens, output_tokens,"
                    " cost_usd, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    parameters(),
                )
                self._connection.execute("COMMIT")
            except BaseException as error:
                if self._connection.in_transaction:  # a failed COMMIT on a full disk may have ended it
                    self._connection.execute("ROLLBACK")
                if isinstance(error, sqlite3.OperationalError):
                    raise WriteFailed(self.path, error) from error
                raise
        return normalized

    def is_finished(self, task_id: str, *, retry_errors: bool = False) -> bool:
        """Whether `task_id` has a final row; with `retry_errors`, an error row does not count."""
        done = _DONE_WITHOUT_ERRORS if retry_errors else _DONE
        with self._lock:
            row = self._connection.execute(
                f"SELECT 1 FROM rows WHERE task_id = ? AND status IN ({', '.join('?' * len(done))})",
                (task_id, *done),
            ).fetchone()
        return row is not None

    def finished_ids(self, *, retry_errors: bool = False) -> set[str]:
        """Every task id with a final row (see `is_finished`); for huge runs prefer `finished`."""
        with self._lock:
            return {task_id for (task_id,) in self._finished_cursor(retry_errors)}

    def finished(self, *, retry_errors: bool = False) -> FinishedIds:
        """The finished task ids in 8 bytes each (a set of the ids takes over 100 MB per million)."""
        with self._lock:  # streamed from the cursor: the ids are never all in memory as text
            return FinishedIds(task_id for (task_id,) in self._finished_cursor(retry_errors))

    def _finished_cursor(self, retry_errors: bool) -> sqlite3.Cursor:
        done = _DONE_WITHOUT_ERRORS if retry_errors else _DONE
        return self._connection.execute(f"SELECT task_id FROM rows WHERE status IN ({', '.join('?' * len(done))})",
                                        done)

    def iter_rows(self) -> Iterator[Row]:
        """Every stored row in task_index order, streamed from a snapshot of the store."""
        # A connection of its own: WAL gives it a consistent snapshot, and the writer is never blocked
        # while a caller consumes the rows slowly (a sink rebuild, an export).
        connection = sqlite3.connect(self.path)
        try:
            cursor = connection.execute("SELECT data FROM rows ORDER BY task_index, task_id")
            for (data,) in cursor:
                yield row_from_json(json.loads(data), self.schema)
        finally:
            connection.close()

    def iter_columns(self, names: Sequence[str], *, order_by: Sequence[str] = ("task_index",)) -> Iterator[Row]:
        """Only these columns of every stored row, sorted by `order_by`, streamed: cheaper than `iter_rows`
        when a few columns are needed. SQLite sorts on disk when the rows do not fit its cache."""
        unknown = sorted((set(names) | set(order_by)) - set(self.schema.names))
        if unknown:  # the names become JSON paths in the query: only columns of the schema
            raise ValueError(f"not columns of this run: {', '.join(unknown)}")
        select = ", ".join(f"json_extract(data, '$.{name}')" for name in names)
        order = ", ".join(f"json_extract(data, '$.{name}')" for name in order_by)
        connection = sqlite3.connect(self.path)  # its own snapshot, as in `iter_rows`
        try:
            for values in connection.execute(f"SELECT {select} FROM rows ORDER BY {order}"):
                yield dict(zip(names, values, strict=True))
        finally:
            connection.close()

    def counts(self) -> dict[str, int]:
        """The number of rows per status: "ok", "error" and "skipped", each present even at 0."""
        with self._lock:
            found = dict(self._connection.execute("SELECT status, COUNT(*) FROM rows GROUP BY status").fetchall())
        return {status: int(found.get(status, 0)) for status in STATUSES}

    def totals(self) -> RunTotals:
        """Row count and the sums of tokens and cost over all stored rows."""
        with self._lock:
            rows, input_tokens, output_tokens, cost = self._connection.execute(
                "SELECT COUNT(*), TOTAL(input_tokens), TOTAL(output_tokens), TOTAL(cost_usd) FROM rows"
            ).fetchone()
        return RunTotals(rows, int(input_tokens), int(output_tokens), float(cost))

    # -- response cache ---------------------------------------------------------------------------------

    def cached_response(self, request_key: str) -> dict[str, Any] | None:
        """The payload stored for this exact request, if it was already answered."""
        with self._lock:
            row = self._connection.execute(
                "SELECT payload FROM response_cache WHERE request_key = ?", (request_key,)
            ).fetchone()
        return None if row is None else dict(json.loads(row[0]))

    def cache_response(self, request_key: str, payload: Mapping[str, Any]) -> None:
        """Store the answer to a request, durably (committed) before returning: a paid call is never lost."""
        text = _compact_json(dict(payload))
        with self._lock:
            try:
                self._connection.execute(
                    "INSERT OR REPLACE INTO response_cache (request_key, payload, created_at) VALUES (?, ?, ?)",
                    (request_key, text, datetime.now(UTC).isoformat()),
                )
            except sqlite3.OperationalError as error:
                raise WriteFailed(self.path, error) from error

    def cache_responses(self, items: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Store several answers in one transaction, committed before returning (see `cache_response`).

        One commit for a burst of answers instead of one each: a commit costs far more than its insert."""
        self._cache_in_one_transaction(items, None)

    def _cache_in_one_transaction(self, items: Iterable[tuple[str, Mapping[str, Any]]],
                                  chunk: BatchChunk | None) -> None:
        """`items` into the response cache, and `chunk`'s step when given, committed together."""
        stamp = datetime.now(UTC).isoformat()
        values = [(key, _compact_json(dict(payload)), stamp)
                  for key, payload in items]
        with self._lock:
            try:
                self._connection.execute("BEGIN IMMEDIATE")
                try:
                    self._connection.executemany(
                        "INSERT OR REPLACE INTO response_cache (request_key, payload, created_at) VALUES (?, ?, ?)",
                        values)
                    if chunk is not None:
                        _save_chunk(self._connection, chunk)
                    self._connection.execute("COMMIT")
                except BaseException:
                    if self._connection.in_transaction:  # a failed COMMIT on a full disk may have ended it
                        self._connection.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as error:
                raise WriteFailed(self.path, error) from error

    # -- batches ----------------------------------------------------------------------------------------

    def batch_chunks(self, backend_id: str | None = None) -> list[BatchChunk]:
        """The batch chunks recorded for `backend_id` (all backends when None), in the order they were planned."""
        with self._lock:
            return _batch_chunks(self._connection, backend_id)

    def save_batch_chunk(self, chunk: BatchChunk) -> None:
        """Record a chunk's step, committed before returning: written before and after each remote step."""
        with self._lock:
            try:
                _save_chunk(self._connection, chunk)
            except sqlite3.OperationalError as error:
                raise WriteFailed(self.path, error) from error

    def collect_batch_chunk(self, chunk: BatchChunk, answers: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """The chunk's results into the response cache and the chunk as collected, in one transaction:
        a process killed while collecting has either collected all of it or none."""
        self._cache_in_one_transaction(answers, chunk)

    @staticmethod
    def read_batch_chunks(run_dir: str | Path) -> list[BatchChunk]:
        """The batch chunks of the store in `run_dir`, read without opening it for writing (`evalpipe status`)."""
        path = Path(run_dir) / STORE_FILENAME
        if not path.is_file():
            raise ConfigError(f"{run_dir} is not a run directory: it has no {STORE_FILENAME}")
        connection = sqlite3.connect(path)
        try:
            return _batch_chunks(connection, None)
        except sqlite3.OperationalError as error:
            if "no such table" in str(error):  # a run store from before batch mode
                return []
            raise ConfigError(f"{path} is not a readable run store: {error}") from None
        finally:
            connection.close()

    # -- metadata ---------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A metadata value (job hash, started_at, ...), or None."""
        with self._lock:
            row = self._connection.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Set a metadata value, committed at once."""
        with self._lock:
            try:
                self._connection.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
            except sqlite3.OperationalError as error:
                raise WriteFailed(self.path, error) from error

    def meta(self) -> dict[str, str]:
        """All metadata."""
        with self._lock:
            return dict(self._connection.execute("SELECT key, value FROM meta").fetchall())

    # -- lifecycle --------------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the store; SQLite folds the WAL back into the main file when the last connection closes."""
        with self._lock:
            self._connection.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
