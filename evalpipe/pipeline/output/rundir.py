"""The run directory: `results/<job>/<run_id>/` for a new run, or an existing one to resume.

A run directory belongs to one job. Resuming it with a job that would produce different tasks or
rows mixes two experiments in one output, so it is refused (unless forced) with the list of changes.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.job.task import stable_hash
from evalpipe.pipeline.output.runlock import LOCK_FILENAME, RunLock
from evalpipe.pipeline.output.store import STORE_FILENAME, RunStore

# Settings that change how fast or how far a run goes, not what its rows say: resuming with a higher
# concurrency, a bigger budget or a longer timeout is what people do after a crash or a 429 storm.
_OPERATIONAL_JOB_KEYS = frozenset({"description", "concurrency", "task_timeout_s", "output", "budget", "executor"})
_OPERATIONAL_BACKEND_KEYS = frozenset({"max_concurrency", "rpm", "tpm", "timeout_s", "max_retries", "api_key_env",
                                       "optional", "stream"})
_MAX_LISTED_CHANGES = 8


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by start time: UTC timestamp plus a short random suffix (`20250101T120000Z-1a2b3c`)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def job_fingerprint(job: JobSpec, *, inputs: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What decides a job's tasks and rows, as plain JSON data; `inputs` names digests of files it reads
    (the dataset), so an edited dataset counts as a change too."""
    data = job.model_dump(mode="json", exclude=set(_OPERATIONAL_JOB_KEYS))
    data["backends"] = [
        {key: value for key, value in backend.items() if key not in _OPERATIONAL_BACKEND_KEYS}
        for backend in data["backends"]
    ]
    if inputs:
        data["inputs"] = dict(sorted(inputs.items()))
    hidden: dict[str, Any] = _header_values_hashed(data)
    return hidden


def _header_values_hashed(data: Any) -> Any:
    """`data` with every `headers` value replaced by its hash: a header may carry a credential, and
    the fingerprint is stored in the run; a changed value still shows as a change."""
    if isinstance(data, list):
        return [_header_values_hashed(item) for item in data]
    if not isinstance(data, dict):
        return data
    return {key: ({name: f"hash:{stable_hash(value, 16)}" for name, value in value.items()}
                  if key == "headers" and isinstance(value, dict) else _header_values_hashed(value))
            for key, value in data.items()}


def job_changes(old: Any, new: Any, path: str = "") -> list[str]:
    """Human-readable differences between two fingerprints, such as `backends[0].model: 'a' -> 'b'`."""
    if isinstance(old, dict) and isinstance(new, dict):
        changes: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in old:
                changes.append(f"{where} added")
            elif key not in new:
                changes.append(f"{where} removed")
            else:
                changes += job_changes(old[key], new[key], where)
        return changes
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [change for i, (a, b) in enumerate(zip(old, new, strict=True))
                for change in job_changes(a, b, f"{path}[{i}]")]
    if old != new:
        return [f"{path or 'job'}: {_short(old)} -> {_short(new)}"]
    return []


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True, slots=True)
class RunDir:
    """Where a run writes, under which id, and whether it continues an earlier run."""

    path: Path
    run_id: str
    resumed: bool
    fingerprint: dict[str, Any] = field(repr=False)
    lock: RunLock | None = field(default=None, repr=False, compare=False)  # held until `release`

    def release(self) -> None:
        """Let another process use the run directory (the end of the process does it too)."""
        if self.lock is not None:
            self.lock.release()

    @property
    def job_hash(self) -> str:
        """The hash of the job's fingerprint, as recorded in the store and the manifest."""
        return stable_hash(self.fingerprint)

    def remember(self, store: RunStore) -> None:
        """Record the job in the store, so that a later resume can tell whether the job changed."""
        store.set_meta("job_hash", self.job_hash)
        store.set_meta("job_fingerprint", json.dumps(self.fingerprint, sort_keys=True, ensure_ascii=False))


def prepare_run_dir(
    job: JobSpec,
    *,
    root: str | Path | None = None,
    run_dir: str | Path | None = None,
    force: bool = False,
    inputs: Mapping[str, str] | None = None,
    now: datetime | None = None,
    lock: bool = True,
) -> RunDir:
    """The run directory to use, created if new.

    With `run_dir`: resume it when it holds a run store (refused if the job changed, unless `force`),
    else start a new run there (it must be empty). Otherwise a new `<root>/<job name>/<run_id>/`, with
    `root` defaulting to the job's `output.dir`. With `lock`, the directory is locked for this process
    (`RunDirLockedError`, naming the holder, when another one has it) until `RunDir.release`."""
    fingerprint = job_fingerprint(job, inputs=inputs)
    if run_dir is None:
        run_id = new_run_id(now)
        path = Path(root if root is not None else job.output.dir) / job.name / run_id
        path.mkdir(parents=True, exist_ok=False)
        return RunDir(path, run_id, resumed=False, fingerprint=fingerprint, lock=_locked(path, lock))
    path = Path(run_dir)
    if not (path / STORE_FILENAME).is_file() and path.exists() and (
            not path.is_dir() or any(entry.name != LOCK_FILENAME for entry in path.iterdir())):
        raise ConfigError(f"{path} exists and is not a run directory (no {STORE_FILENAME}); choose an empty "
                          "or new directory")
    path.mkdir(parents=True, exist_ok=True)
    # Locked before deciding between a new run and a resume: a process that held it may just have
    # created the store.
    held = _locked(path, lock)
    try:
        if (path / STORE_FILENAME).is_file():
            return _resume(path, fingerprint, force, held)
        return RunDir(path, new_run_id(now), resumed=False, fingerprint=fingerprint, lock=held)
    except BaseException:
        if held is not None:
            held.release()
        raise


def _locked(path: Path, lock: bool) -> RunLock | None:
    return RunLock(path).acquire() if lock else None


def _resume(path: Path, fingerprint: dict[str, Any], force: bool, lock: RunLock | None) -> RunDir:
    meta = RunStore.read_meta(path)
    run_id = meta.get("run_id") or path.name
    recorded_hash = meta.get("job_hash")
    if recorded_hash is not None and recorded_hash != stable_hash(fingerprint) and not force:
        recorded = meta.get("job_fingerprint")
        changes = job_changes(json.loads(recorded), fingerprint) if recorded else ["(the old job was not recorded)"]
        listed = "; ".join(changes[:_MAX_LISTED_CHANGES])
        if len(changes) > _MAX_LISTED_CHANGES:
            listed += f"; and {len(changes) - _MAX_LISTED_CHANGES} more"
        raise ConfigError(
            f"{path} was run with a different job; changed: {listed}. Start a new run, or resume with --force "
            "to keep the old rows beside the new ones"
        )
    return RunDir(path, run_id, resumed=True, fingerprint=fingerprint, lock=lock)
