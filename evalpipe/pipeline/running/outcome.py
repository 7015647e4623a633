"""What a run reports: its progress as rows are committed (for a display), and how it ended."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalpipe.pipeline.output.manifest import RunState
from evalpipe.pipeline.output.rows import spend_of


@dataclass(slots=True)
class RunProgress:
    """Counters the runner updates as rows are committed; a display reads them."""

    total: int = 0
    done: int = 0
    already_done: int = 0  # finished by an earlier session of the run (resume): not this session's pace
    errors: int = 0
    calls: int = 0  # answers paid for in this process (not from the cache)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    scored: int = 0  # rows with a pass/fail verdict
    passed: int = 0
    last_error_type: str | None = None
    started: float = field(default_factory=time.monotonic)
    batches: dict[str, str] = field(default_factory=dict)  # backend id -> its batches' state, in batch mode

    def add(self, row: Mapping[str, Any]) -> None:
        self.done += 1
        self.errors += row.get("status") == "error"
        if row.get("status") == "error":
            self.last_error_type = row.get("error_type") or self.last_error_type
        if row.get("passed") is not None:
            self.scored += 1
            self.passed += bool(row.get("passed"))
        if row.get("status") == "ok" and not row.get("cached"):
            self.calls += 1
            input_tokens, output_tokens, cost = spend_of(row)
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens
            self.cost_usd += cost


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """How a run ended and where its results are.

    `total_tasks` counts every task of the job, those of skipped backends too; `counts["skipped"]`
    includes those tasks, so ok + error + skipped = total_tasks once a run is complete."""

    run_dir: Path
    run_id: str
    state: RunState
    counts: dict[str, int]
    total_tasks: int
    cost_usd: float
    outputs: dict[str, Path]
    skipped_backends: dict[str, str]
    resume_command: str
    input_tokens: int = 0  # the run's answers and scorers, over all its sessions
    output_tokens: int = 0
    write_failure: str | None = None  # the write that stopped the run ("disk full writing ..."), state interrupted

    @property
    def executed(self) -> int:
        """Tasks of the run that have a row from a call: ok or error."""
        return self.counts.get("ok", 0) + self.counts.get("error", 0)

    @property
    def error_rate(self) -> float:
        """Error rows over rows from a call (0 when there are none)."""
        return self.counts.get("error", 0) / self.executed if self.executed else 0.0


__all__ = ["RunOutcome", "RunProgress"]
