"""`manifest.json`: what a run directory holds, how it came about, and how to resume it.

Written at the start of a run (state "running") and again at the end, always atomically: a reader or
a crash never sees half a manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.output.store import RunStore, disk_full

MANIFEST_FILENAME = "manifest.json"
MANIFEST_VERSION = 1

# "budget_exhausted": the budget guard stopped dispatching; resuming with a larger budget continues.
# "submitted": `run --detach` sent its batches to the vendors and left; `evalpipe collect` continues.
RunState = Literal["running", "completed", "interrupted", "budget_exhausted", "submitted"]


@dataclass(frozen=True, slots=True)
class BackendEntry:
    """A backend of the run as the manifest lists it."""

    id: str
    backend: str
    model: str | None


@dataclass(frozen=True, slots=True)
class Manifest:
    """The contents of `manifest.json`."""

    job_name: str
    run_id: str
    state: RunState
    started_at: str  # this session's start; `created_at` is the first session's, before any resume
    finished_at: str | None
    created_at: str | None
    evalpipe_version: str
    job_file: str | None
    job_sha256: str | None
    job_hash: str | None
    backends: list[BackendEntry]
    tasks_total: int | None
    counts: dict[str, int]
    input_tokens: int
    output_tokens: int
    cost_usd: float
    outputs: dict[str, str]  # format -> path relative to the run directory
    resume_command: str
    manifest_version: int = MANIFEST_VERSION
    # Backends (and judges) that could not run here and were optional, with why; their tasks have no
    # rows and are counted in `tasks_skipped` and in `counts["skipped"]`.
    skipped_backends: dict[str, str] = field(default_factory=dict)
    tasks_skipped: int = 0
    # The job's budget and, when it stopped the run, what was spent against it.
    budget: dict[str, float | None] = field(default_factory=dict)
    shards: int = 0  # a sharded run's shard count: its rows are under shards/<k>/ (0: not sharded)

    @property
    def completed(self) -> bool:
        """Whether every task of the run got its row."""
        return self.state == "completed"


def file_sha256(path: str | Path) -> str:
    """The SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resume_command(job_file: str | Path | None, run_dir: str | Path) -> str:
    """The shell command that continues this run."""
    return shlex.join(["evalpipe", "run", str(job_file or "JOB.yaml"), "--resume", str(run_dir)])


def _version() -> str:
    # Imported here: the package's __init__ may import the pipeline, and a module-level import would cycle.
    import evalpipe

    return str(evalpipe.__version__)


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def build_manifest(
    job: JobSpec,
    store: RunStore,
    *,
    run_dir: str | Path,
    state: RunState,
    started_at: datetime,
    finished_at: datetime | None = None,
    job_file: str | Path | None = None,
    tasks_total: int | None = None,
    outputs: Mapping[str, str | Path] | None = None,
    skipped_backends: Mapping[str, str] | None = None,
    tasks_skipped: int = 0,
) -> Manifest:
    """The manifest of a run as it stands in `store` (counts, tokens and cost summed over its rows, the
    scorers' calls included); `tasks_skipped` (of `skipped_backends`) are added to the skipped count."""
    run_dir = Path(run_dir)
    totals = store.totals()
    relative = {name: str(Path(path).relative_to(run_dir) if Path(path).is_relative_to(run_dir) else path)
                for name, path in (outputs or {}).items()}
    counts = store.counts()
    counts["skipped"] = counts.get("skipped", 0) + tasks_skipped
    return Manifest(
        job_name=job.name,
        run_id=store.run_id,
        state=state,
        started_at=_timestamp(started_at),
        finished_at=None if finished_at is None else _timestamp(finished_at),
        created_at=store.get_meta("created_at"),
        evalpipe_version=_version(),
        job_file=None if job_file is None else str(job_file),
        job_sha256=None if job_file is None else file_sha256(job_file),
        job_hash=store.get_meta("job_hash"),
        backends=[BackendEntry(b.id, b.backend.value, b.model) for b in job.backends],
        tasks_total=tasks_total,
        counts=counts,
        input_tokens=totals.input_tokens,
        output_tokens=totals.output_tokens,
        cost_usd=round(totals.cost_usd, 6),
        outputs=relative,
        resume_command=resume_command(job_file, run_dir),
        skipped_backends=dict(skipped_backends or {}),
        tasks_skipped=tasks_skipped,
        budget={"max_cost_usd": job.budget.max_cost_usd, "max_tokens": job.budget.max_tokens,
                "spent_usd": round(totals.cost_usd, 6),
                "spent_tokens": totals.input_tokens + totals.output_tokens},
    )


def write_manifest(run_dir: str | Path, manifest: Manifest) -> Path:
    """Write `manifest.json` atomically (a temporary file renamed over the old one); returns its path."""
    path = Path(run_dir) / MANIFEST_FILENAME
    temp = path.with_name(f".{MANIFEST_FILENAME}.tmp")
    data = (json.dumps(asdict(manifest), indent=2, ensure_ascii=False) + "\n").encode()
    try:
        with temp.open("wb") as file:
            file.write(data)
            file.flush()
            # The manifest is written twice per run, so an fsync costs nothing and survives a power cut too.
            os.fsync(file.fileno())
        os.replace(temp, path)
    except OSError as error:
        temp.unlink(missing_ok=True)
        if not disk_full(error) or not path.is_file():
            raise
        # A full disk has no room for a second copy, but the old manifest's own blocks hold the new one
        # (the same size, give or take a timestamp): a run stopped by a full disk still says so.
        with path.open("r+b") as file:
            file.write(data)
            file.truncate()
            file.flush()
            os.fsync(file.fileno())
    return path


def read_manifest(run_dir: str | Path) -> Manifest:
    """The manifest of `run_dir`; ConfigError when it is missing or not an evalpipe manifest."""
    path = Path(run_dir) / MANIFEST_FILENAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{run_dir} has no {MANIFEST_FILENAME}") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"{path} cannot be read: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not an evalpipe manifest")
    known = {f.name for f in fields(Manifest)}
    # Keys from a newer evalpipe are ignored rather than refused: old readers keep working.
    values = {key: value for key, value in data.items() if key in known}
    try:
        values["backends"] = [BackendEntry(**entry) for entry in values.get("backends", [])]
        return Manifest(**values)
    except TypeError as error:
        raise ConfigError(f"{path} is not an evalpipe manifest: {error}") from None
