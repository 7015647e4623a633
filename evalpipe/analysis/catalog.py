"""The runs under a results directory (`DIR/<job>/<run_id>/`), read from their manifests: the viewer's
runs list, `evalpipe runs`, and `JOB_DIR/latest` wherever a command takes a run directory.

Listing is cheap enough to repeat every few seconds: one small JSON file per run. A run in progress
has written its manifest ("running") at the start and rewrites it only at the end, and its Parquet part
is renamed into place only when it closes; its rows so far are counted in its run store, opened read-only
(the viewer never writes into a run directory).
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from evalpipe.analysis.runs import RunDirError
from evalpipe.errors import ConfigError
from evalpipe.pipeline.output.manifest import MANIFEST_FILENAME, Manifest, read_manifest
from evalpipe.pipeline.output.sinks import CSV_FILENAME, PARQUET_DIRNAME
from evalpipe.pipeline.output.store import STORE_FILENAME

_RUN_MARKERS = (MANIFEST_FILENAME, PARQUET_DIRNAME, CSV_FILENAME, STORE_FILENAME)
LATEST = "latest"  # `results/<job>/latest`: the newest run of the job


@dataclass(frozen=True, slots=True)
class RunEntry:
    """One run as the runs list shows it."""

    job: str
    run_id: str
    state: str  # the manifest's state, or "unknown" without a manifest
    started_at: str | None  # ISO 8601, UTC
    rows: int | None
    errors: int | None
    cost_usd: float | None
    latest: bool = False  # the newest run of its job
    # The start to the microsecond where the manifest has it: two runs started within a second still order.
    started_exactly: str | None = field(default=None, compare=False, repr=False)

    @property
    def order(self) -> tuple[str, str, str]:
        """Sorts runs by start (oldest first)."""
        return self.started_exactly or self.started_at or "", self.job, self.run_id

    @property
    def live(self) -> bool:
        """Whether the run is (as far as its manifest says) still writing rows."""
        return self.state == "running"

    def as_json(self) -> dict[str, object]:
        """The entry as plain JSON data."""
        return {"job": self.job, "run_id": self.run_id, "state": self.state, "started_at": self.started_at,
                "rows": self.rows, "errors": self.errors, "cost_usd": self.cost_usd, "latest": self.latest,
                "live": self.live}


def check_results_dir(directory: Path) -> Path:
    """`directory` if it is a directory; ConfigError saying what to pass otherwise."""
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise ConfigError(f"{directory} {what}; pass the results directory that holds <job>/<run_id>/ folders")
    return directory


def run_path(directory: Path, job: str, run_id: str) -> Path:
    """The directory of run `run_id` of `job`; RunDirError when the names do not name one under `directory`."""
    for name in (job, run_id):
        if not name or name.startswith(".") or "/" in name or "\\" in name:
            raise RunDirError(f"{name!r} is not a job or run name")
    path = directory / job / run_id
    if not (path.is_dir() and _looks_like_run(path)):
        raise RunDirError(f"{job}/{run_id} is not a run under {directory}")
    return path


def job_path(directory: Path, job: str) -> Path:
    """The directory of `job`; RunDirError when it is not one under `directory`."""
    if not job or job.startswith(".") or "/" in job or "\\" in job or not (directory / job).is_dir():
        raise RunDirError(f"{job!r} is not a job under {directory}")
    return directory / job


def list_runs(directory: Path) -> list[RunEntry]:
    """Every run under `directory`, newest first, the newest of each job marked `latest`."""
    entries: list[RunEntry] = []
    for job_dir in _children(directory):
        entries += [_entry(job_dir.name, path) for path in _children(job_dir) if _looks_like_run(path)]
    entries.sort(key=lambda e: e.order, reverse=True)
    seen: set[str] = set()
    marked = []
    for entry in entries:
        marked.append(replace(entry, latest=entry.job not in seen))
        seen.add(entry.job)
    return marked


def resolve_latest(path: Path) -> Path:
    """`path` itself, or for `JOB_DIR/latest` (when no such directory exists) the newest run of JOB_DIR;
    RunDirError when JOB_DIR holds no run."""
    if path.name != LATEST or path.exists():
        return path
    job_dir = path.parent
    runs = [_entry(job_dir.name, run) for run in _children(job_dir) if _looks_like_run(run)]
    if not runs:
        where = "does not exist" if not job_dir.is_dir() else "holds no run"
        raise RunDirError(f"{path}: {job_dir} {where}, so it has no latest run (evalpipe runs lists them)")
    newest = max(runs, key=lambda e: e.order)
    return job_dir / newest.run_id


def _children(directory: Path) -> list[Path]:
    try:
        return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:  # removed or unreadable between listing and reading: not this listing's concern
        return []


def _looks_like_run(path: Path) -> bool:
    return any((path / name).exists() for name in _RUN_MARKERS)


def _entry(job: str, path: Path) -> RunEntry:
    manifest: Manifest | None = None
    with contextlib.suppress(ConfigError):
        manifest = read_manifest(path)
    if manifest is None:
        return RunEntry(job, path.name, "unknown", _started_from_id(path.name), None, None, None)
    counts, cost = manifest.counts, manifest.cost_usd
    if manifest.state == "running":
        counts, cost = _store_counts(path) or (counts, cost)
    started = manifest.created_at or manifest.started_at
    return RunEntry(job, path.name, manifest.state, _iso(started) or _started_from_id(path.name),
                    sum(counts.values()), counts.get("error", 0), cost, started_exactly=_iso(started, "microseconds"))


def _store_counts(path: Path) -> tuple[dict[str, int], float] | None:
    """Rows per status and generation cost recorded so far, from the run store opened read-only."""
    store = path / STORE_FILENAME
    # Without its write-ahead log the store has no writer; opening it would create the log's index file,
    # and the viewer writes nothing into a run directory.
    if not (store.is_file() and store.with_name(f"{STORE_FILENAME}-wal").is_file()):
        return None
    try:
        connection = sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        counts = dict(connection.execute("SELECT status, COUNT(*) FROM rows GROUP BY status").fetchall())
        (cost,) = connection.execute("SELECT TOTAL(cost_usd) FROM rows").fetchone()
        return {str(k): int(v) for k, v in counts.items()}, float(cost)
    except sqlite3.Error:  # busy or being created: the manifest's numbers stand until the next poll
        return None
    finally:
        connection.close()


def _iso(text: str | None, timespec: str = "seconds") -> str | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).astimezone(UTC).isoformat(timespec=timespec)
    except ValueError:
        return None


def _started_from_id(run_id: str) -> str | None:
    """Run ids start with their UTC start time (`pipeline.rundir.new_run_id`)."""
    try:
        return datetime.strptime(run_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).isoformat()
    except ValueError:
        return None
