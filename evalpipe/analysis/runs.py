"""Opening a run directory for analysis: which Parquet parts can be read, what the manifest says, and
why the numbers may be incomplete.

A run directory can be damaged in ordinary ways: a run killed before its final manifest, a part file cut
short by a full disk, a manifest deleted by hand. None of these should end in a traceback. What cannot be
analysed at all raises `RunDirError` with a sentence saying why; what can be analysed in part opens with
`warnings`, which every output prints as a "partial" label.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pyarrow as pa  # type: ignore[import-untyped, unused-ignore]
import pyarrow.parquet as pq  # type: ignore[import-untyped, unused-ignore]

from evalpipe.errors import ConfigError
from evalpipe.pipeline.output.manifest import MANIFEST_FILENAME, Manifest, read_manifest
from evalpipe.pipeline.output.rows import criteria_of
from evalpipe.pipeline.output.sharded import shard_dirs, shard_parquet_parts
from evalpipe.pipeline.output.sinks import CSV_FILENAME, PARQUET_DIRNAME

BEST_OF_FILENAME = "best_of.parquet"
_NO_SHARED_SUBPLANS = pl.QueryOptFlags(comm_subplan_elim=False)
# The fixed columns analysis reads. Not all of `rows.COLUMNS`: the schema grows, and runs written before
# a new column was added must stay readable.
REQUIRED_COLUMNS = ("run_id", "task_index", "item_id", "backend_id", "model", "param_set", "temperature", "top_p",
                    "repeat", "turn", "prompt", "response", "input_tokens", "output_tokens", "cost_usd", "latency_s",
                    "ttft_s", "status", "error_type", "error_message", "score_total", "passed")
BEST_OF_REQUIRED_COLUMNS = ("item_id", "winner_backend_id")


class RunDirError(ConfigError):
    """A run directory that cannot be analysed: missing, without readable rows, or not evalpipe output."""


@dataclass(frozen=True, slots=True)
class Run:
    """A run directory opened for analysis: its readable parts, schema, manifest and what is missing."""

    path: Path
    manifest: Manifest | None
    parts: tuple[Path, ...]
    schema: pa.Schema
    rows: int
    warnings: tuple[str, ...]
    best_of: Path | None = None

    @property
    def name(self) -> str:
        """The run id, or the directory name when the manifest is missing."""
        return self.manifest.run_id if self.manifest is not None else self.path.name

    @property
    def partial(self) -> bool:
        """Whether some rows of the run are (or may be) missing from what can be read."""
        return bool(self.warnings)

    @property
    def criteria(self) -> list[str]:
        """The criterion names, in column order."""
        return criteria_of(self.schema)

    @property
    def metrics(self) -> list[str]:
        """The score columns worth a mean and a confidence interval: the total first, then each criterion."""
        return ["score_total", *(f"score_{name}" for name in self.criteria)]

    def has(self, column: str) -> bool:
        """Whether the rows have `column`."""
        return column in self.schema.names

    def scan(self, columns: Sequence[str] | None = None, parts: Sequence[Path] | None = None) -> pl.LazyFrame:
        """A lazy scan of the readable parts (or of `parts`), limited to `columns` that exist (all when None)."""
        frame = pl.scan_parquet(list(self.parts if parts is None else parts))
        if columns is None:
            return frame
        return frame.select([name for name in dict.fromkeys(columns) if self.has(name)])

    def scan_best_of(self) -> pl.LazyFrame | None:
        """The best-of table written beside the rows, when there is one."""
        return None if self.best_of is None else pl.scan_parquet(self.best_of)


def collect(frame: pl.LazyFrame, run: Run) -> pl.DataFrame:
    """Run a query over `run`'s files; a part that breaks mid-read becomes a RunDirError, not a traceback."""
    return collect_all([frame], run)[0]


def collect_all(frames: Sequence[pl.LazyFrame], run: Run) -> list[pl.DataFrame]:
    """Run several queries over `run`'s files at once, on polars' streaming engine: aggregations that it
    streams (sums, counts, min/max, first, group-by and semi-join) hold their groups, not the rows.

    Without common-subplan elimination: for queries sharing a scan it would cache the scanned rows
    whole, the opposite of streaming."""
    if not frames:
        return []
    try:
        found = pl.collect_all(frames, engine="streaming", optimizations=_NO_SHARED_SUBPLANS)
    except (pl.exceptions.PolarsError, OSError) as error:
        raise RunDirError(f"{run.path}: the Parquet output cannot be read ({_first_line(error)}); "
                          "a part file may be corrupt") from None
    assert isinstance(found, list)
    return found


Merge = Callable[[pl.DataFrame], pl.DataFrame]


def collect_per_part(run: Run, columns: Sequence[str], queries: Callable[[pl.LazyFrame], Sequence[pl.LazyFrame]],
                     merges: Sequence[Merge]) -> list[pl.DataFrame]:
    """Run `queries` over each part of `run` in turn, folding each query's results into those of the parts
    before it with its merge (given the two stacked, earlier part first: sum counts, keep the first value).

    One part at a time bounds memory by a part's rows (the runner closes a part at 100,000), whatever
    the run's size: a query over all parts at once lets polars read ahead in several files per scan."""
    merged: list[pl.DataFrame] = []
    for part in run.parts:
        found = collect_all(queries(run.scan(columns, [part])), run)
        merged = found if not merged else [
            merge(pl.concat([so_far, frame], how="diagonal_relaxed"))
            for merge, so_far, frame in zip(merges, merged, found, strict=True)]
    return merged


def open_run(path: str | Path) -> Run:
    """Open `path` for analysis; RunDirError when nothing in it can be analysed."""
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path} is not a directory" if path.exists() else f"{path} does not exist")
    warnings: list[str] = []
    manifest = _manifest_or_warning(path, warnings)
    parquet_dir = path / PARQUET_DIRNAME
    if manifest is not None and "parquet" in manifest.outputs:
        parquet_dir = path / manifest.outputs["parquet"]
    parts, schema, rows = _readable_parts(path, parquet_dir, warnings)
    missing = [name for name in REQUIRED_COLUMNS if name not in schema.names]
    if missing:
        listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise RunDirError(f"{parquet_dir} does not hold evalpipe rows: no column {listed}")
    if manifest is not None:
        _compare_with_manifest(manifest, rows, warnings)
    best_of = _best_of(path, warnings)
    return Run(path, manifest, tuple(parts), schema, rows, tuple(warnings), best_of)


def _manifest_or_warning(path: Path, warnings: list[str]) -> Manifest | None:
    try:
        return read_manifest(path)
    except ConfigError as error:
        if not (path / MANIFEST_FILENAME).exists():
            warnings.append(f"no {MANIFEST_FILENAME}: the run's state is unknown, so rows may be missing")
        else:
            warnings.append(f"{error.message}; the run's state is unknown, so rows may be missing")
        return None


def _readable_parts(path: Path, parquet_dir: Path, warnings: list[str]) -> tuple[list[Path], pa.Schema, int]:
    """The parts whose footer reads and whose schema matches the first readable one, with their row count."""
    candidates = sorted(parquet_dir.glob("part-*.parquet")) if parquet_dir.is_dir() else []
    if not candidates and shard_dirs(path):  # a sharded run: each shard's own parts
        candidates = shard_parquet_parts(path, PARQUET_DIRNAME)
    if not candidates:
        if (path / CSV_FILENAME).is_file():
            raise RunDirError(f"{path} has rows.csv but no Parquet parts; analysis reads Parquet, so add "
                              "'parquet' to the job's output.formats (and resume the run to write them)")
        if (path / MANIFEST_FILENAME).is_file() or parquet_dir.is_dir():
            raise RunDirError(f"{path} has no finished Parquet parts yet: the run wrote no rows")
        raise RunDirError(f"{path} is not an evalpipe run directory (no {MANIFEST_FILENAME}, no {PARQUET_DIRNAME}/)")
    parts: list[Path] = []
    schema: pa.Schema | None = None
    rows = 0
    for part in candidates:
        where = part.relative_to(path)
        try:
            metadata = pq.read_metadata(part)  # the footer only: a truncated file fails here, cheaply
            part_schema = metadata.schema.to_arrow_schema()
        except (OSError, pa.ArrowException) as error:
            warnings.append(f"{where} cannot be read and was left out ({_first_line(error)})")
            continue
        if schema is None:
            schema = part_schema
        elif not part_schema.equals(schema):
            warnings.append(f"{where} has other columns than the first part and was left out")
            continue
        parts.append(part)
        rows += metadata.num_rows
    if schema is None:
        raise RunDirError(f"{path}: none of its {len(candidates)} Parquet parts can be read; "
                          f"the first fails with: {warnings[-1]}")
    return parts, schema, rows


def _compare_with_manifest(manifest: Manifest, rows: int, warnings: list[str]) -> None:
    recorded = sum(manifest.counts.values())
    if manifest.state != "completed":
        total = f" of {manifest.tasks_total:,}" if manifest.tasks_total is not None else ""
        state = {"running": "still running, or killed before it finished",
                 "interrupted": "interrupted", "budget_exhausted": "stopped at its budget",
                 "submitted": "submitted as batches, not yet collected"}.get(manifest.state,
                                                                                                manifest.state)
        warnings.append(f"the run was {state}: {recorded:,}{total} tasks have rows")
    if rows < recorded:
        warnings.append(f"the Parquet parts hold {rows:,} rows but the run recorded {recorded:,}; "
                        f"resume the run to rewrite its output")


def _best_of(path: Path, warnings: list[str]) -> Path | None:
    best_of = path / BEST_OF_FILENAME
    if not best_of.is_file():
        return None
    try:
        names = pq.read_metadata(best_of).schema.to_arrow_schema().names
    except (OSError, pa.ArrowException) as error:
        warnings.append(f"{BEST_OF_FILENAME} cannot be read and was left out ({_first_line(error)})")
        return None
    missing = [name for name in BEST_OF_REQUIRED_COLUMNS if name not in names]
    if missing:
        warnings.append(f"{BEST_OF_FILENAME} has no column {', '.join(missing)} and was left out")
        return None
    return best_of


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
