"""The fake server's batch jobs: stored files, jobs and their lifecycle, batch controls and counters.

A job is vendor-neutral: a list of requests (each with the caller's id for it), a processing delay
and the options in force when it was created. Its state is computed from the clock whenever it is
read, so nothing runs in the background and a job outlives the connections that made or poll it:

    0 ........ 0.1 D ................................ 0.9 D ......... D
    validating | in_progress (request i answered at its |  finalizing   | completed / expired
               | own moment, evenly spread)             |               |

D is the processing delay (`BatchOptions.delay_s`). A request is answered once, by the same
machinery as a live call, the first time the job is read after its moment. A cancelled job answers
nothing more; it shows "cancelling" for 0.1 D, then ends "cancelled" with the answered requests kept
and the others cancelled. A job whose input failed validation ends "failed" after 0.1 D.

Everything here is guarded by one lock: tests read counters and set options from their own thread
while the server's event loop serves the jobs.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from evalpipe.testing._wire import HttpRequest, new_id

VALIDATING, IN_PROGRESS, FINALIZING, CANCELLING = "validating", "in_progress", "finalizing", "cancelling"
COMPLETED, FAILED, EXPIRED, CANCELLED = "completed", "failed", "expired", "cancelled"
# What happened to one request of a job.
PENDING, SUCCEEDED, ERRORED = "pending", "succeeded", "errored"


@dataclass
class BatchOptions:
    """How the fake processes batch jobs created from now on.

    `delay_s`: seconds a job takes from creation to its end (0: done at the first poll).
    `fail_fraction`: share of requests (0 to 1) answered with a server error instead, chosen by a
    stable hash of their id, so the same ids fail every time. `expire_after`: None, or the number
    of requests a job answers before it expires at the end of its delay (0: all of them expire).
    """

    delay_s: float = 0.0
    fail_fraction: float = 0.0
    expire_after: int | None = None

    def as_json(self) -> dict[str, Any]:
        """The options as a JSON object."""
        return {"delay_s": self.delay_s, "fail_fraction": self.fail_fraction, "expire_after": self.expire_after}


@dataclass
class BatchStats:
    """Counters of the batch APIs, all keys or one key.

    `files_uploaded`, `batches_created` (validation failures included) and `result_downloads`
    (OpenAI output/error file contents, Anthropic results, Gemini jobs read once ended with results)
    count API calls. `requests_answered` counts requests of jobs answered by the fake, `succeeded`
    and `errored` split them; `input_tokens`/`output_tokens` add up the succeeded ones.
    `answers_by_id` counts answers per request id (`custom_id`; Gemini: `metadata.key`, else the
    request's position): any value above 1 is a request that was submitted and answered twice.
    """

    files_uploaded: int = 0
    batches_created: int = 0
    result_downloads: int = 0
    requests_answered: int = 0
    succeeded: int = 0
    errored: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    answers_by_id: dict[str, int] = field(default_factory=dict)

    def add(self, other: BatchStats) -> None:
        """Add another key's counters to these."""
        for name in ("files_uploaded", "batches_created", "result_downloads", "requests_answered",
                     "succeeded", "errored", "input_tokens", "output_tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for key, n in other.answers_by_id.items():
            self.answers_by_id[key] = self.answers_by_id.get(key, 0) + n

    def as_json(self) -> dict[str, Any]:
        """The counters as a JSON object."""
        return {
            "files_uploaded": self.files_uploaded,
            "batches_created": self.batches_created,
            "result_downloads": self.result_downloads,
            "requests_answered": self.requests_answered,
            "succeeded": self.succeeded,
            "errored": self.errored,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "answers_by_id": dict(sorted(self.answers_by_id.items())),
        }


@dataclass(frozen=True)
class LineAnswer:
    """The answer to one request of a job: the HTTP status and JSON body a live call would get."""

    status: int
    body: Any
    input_tokens: int = 0
    output_tokens: int = 0


@dataclass
class StoredFile:
    """A file uploaded to, or written by, the fake (OpenAI Files, Gemini Files)."""

    id: str
    account: str
    vendor: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    mime_type: str = "application/jsonl"


@dataclass
class BatchItem:
    """One request of a job: the caller's id for it, the live request it stands for, its outcome."""

    custom_id: str
    request: HttpRequest
    outcome: str = PENDING  # pending, succeeded, errored, cancelled, expired
    answer: LineAnswer | None = None
    extras: dict[str, Any] = field(default_factory=dict)  # vendor details (Gemini's metadata)


@dataclass
class BatchJob:
    """One batch job; `phase(now)` and `advance(now, ...)` follow the module docstring's timeline."""

    id: str
    vendor: str
    account: str
    items: list[BatchItem]
    options: BatchOptions
    created_at: float  # wall-clock seconds
    started: float  # monotonic seconds
    errors: list[dict[str, Any]] = field(default_factory=list)  # validation errors: the job fails
    fail_ids: frozenset[str] = frozenset()  # request ids the fail fraction picked
    cancel_at: float | None = None  # monotonic
    ended: str | None = None  # completed, failed, expired, cancelled
    ended_at: float | None = None  # wall-clock
    changed_at: float = 0.0  # wall-clock of the last change of state
    extras: dict[str, Any] = field(default_factory=dict)  # vendor details (endpoint, files, metadata...)

    def counts(self) -> Counter[str]:
        """How many requests have each outcome."""
        return Counter(item.outcome for item in self.items)

    def phase(self, now: float) -> str:
        """The job's state at monotonic time `now` (call `advance` first)."""
        if self.ended is not None:
            return self.ended
        if self.cancel_at is not None:
            return CANCELLING
        elapsed, delay = now - self.started, self.options.delay_s
        # A zero-delay job ends at its first `advance`: not ended yet, it was never read.
        if elapsed < 0.1 * delay or delay == 0:
            return VALIDATING
        return IN_PROGRESS if elapsed < 0.9 * delay else FINALIZING

    def advance(self, now: float, answer: Callable[[BatchJob, BatchItem], None]) -> None:
        """Answer the requests whose moment has come and end the job when its time is up."""
        if self.ended is not None:
            return
        delay = self.options.delay_s
        elapsed = now - self.started
        if self.errors:
            if elapsed >= 0.1 * delay:
                self._end(FAILED)
            return
        horizon = elapsed if self.cancel_at is None else min(elapsed, self.cancel_at - self.started)
        limit = self.options.expire_after
        answered = sum(1 for item in self.items if item.outcome != PENDING)
        for index, item in enumerate(self.items):
            if item.outcome != PENDING:
                continue
            if limit is not None and answered >= limit:
                break
            if self._moment(index) > horizon:
                break
            answer(self, item)
            answered += 1
        if self.cancel_at is not None:
            if now >= self.cancel_at + 0.1 * delay:
                self._finish(CANCELLED)
        elif elapsed >= delay:
            self._finish(COMPLETED if answered == len(self.items) else EXPIRED)

    def cancel(self, now: float, answer: Callable[[BatchJob, BatchItem], None]) -> None:
        """Stop the job: the requests answered so far are kept, the rest will be cancelled."""
        self.advance(now, answer)
        if self.ended is None and self.cancel_at is None:
            self.cancel_at = now
            self.changed_at = time.time()
            self.advance(now, answer)

    def expire(self, now: float, answer: Callable[[BatchJob, BatchItem], None]) -> None:
        """End the job now as expired: what was due is answered, the rest expires."""
        self.advance(now, answer)
        if self.ended is None:
            self._finish(EXPIRED)

    def _moment(self, index: int) -> float:
        delay = self.options.delay_s
        return 0.1 * delay + (index + 1) / len(self.items) * 0.8 * delay

    def _finish(self, state: str) -> None:
        leftover = CANCELLED if state == CANCELLED else EXPIRED
        for item in self.items:
            if item.outcome == PENDING:
                item.outcome = leftover
        self._end(state)

    def _end(self, state: str) -> None:
        self.ended, self.ended_at = state, time.time()
        self.changed_at = self.ended_at


def fraction_of(custom_id: str) -> float:
    """A stable number in [0, 1) for a request id (which requests a fail fraction picks)."""
    digest = hashlib.blake2b(custom_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class BatchStore:
    """Files, jobs, options and counters of the batch APIs of one fake server."""

    def __init__(self, options: BatchOptions) -> None:
        self.lock = threading.RLock()
        self._default = options
        self.options = BatchOptions(**options.as_json())
        self.files: dict[str, StoredFile] = {}
        self.jobs: dict[str, BatchJob] = {}
        self._stats: dict[str, BatchStats] = {}

    # -- options and counters -------------------------------------------------------------------
    def set_options(self, **changes: Any) -> BatchOptions:
        """Change some options (`delay_s`, `fail_fraction`, `expire_after`); returns them all."""
        with self.lock:
            unknown = set(changes) - set(BatchOptions().as_json())
            if unknown:
                raise ValueError(f"unknown batch option(s): {', '.join(sorted(unknown))}")
            merged = {**self.options.as_json(), **changes}
            delay, fraction, expire = merged["delay_s"], merged["fail_fraction"], merged["expire_after"]
            if not isinstance(delay, int | float) or delay < 0:
                raise ValueError(f"delay_s must be a number of seconds >= 0, not {delay!r}")
            if not isinstance(fraction, int | float) or not 0 <= fraction <= 1:
                raise ValueError(f"fail_fraction must be a number from 0 to 1, not {fraction!r}")
            if expire is not None and (not isinstance(expire, int) or isinstance(expire, bool) or expire < 0):
                raise ValueError(f"expire_after must be null or a count >= 0, not {expire!r}")
            self.options = BatchOptions(float(delay), float(fraction), expire)
            return self.options

    def stats(self, key: str | None) -> BatchStats:
        """A copy of the counters of one key, or of all keys added up."""
        with self.lock:
            chosen = [self._stats.get(key, BatchStats())] if key is not None else list(self._stats.values())
            total = BatchStats()
            for stats in chosen:
                total.add(stats)
            return total

    def count(self, account: str, name: str) -> None:
        """Count one API call (`files_uploaded`, `batches_created`, `result_downloads`)."""
        with self.lock:
            stats = self._stats.setdefault(account, BatchStats())
            setattr(stats, name, getattr(stats, name) + 1)

    def count_answer(self, account: str, custom_id: str, answer: LineAnswer) -> None:
        """Count one request of a job answered."""
        with self.lock:
            stats = self._stats.setdefault(account, BatchStats())
            stats.requests_answered += 1
            stats.answers_by_id[custom_id] = stats.answers_by_id.get(custom_id, 0) + 1
            if answer.status == 200:
                stats.succeeded += 1
                stats.input_tokens += answer.input_tokens
                stats.output_tokens += answer.output_tokens
            else:
                stats.errored += 1

    def reset(self) -> None:
        """Forget counters and restore the constructor's options; stored files and jobs stay."""
        with self.lock:
            self._stats.clear()
            self.options = BatchOptions(**self._default.as_json())

    # -- files and jobs -------------------------------------------------------------------------
    def add_file(self, account: str, vendor: str, filename: str, purpose: str, data: bytes,
                 prefix: str = "file-", mime_type: str = "application/jsonl") -> StoredFile:
        """Store a file under a new id."""
        with self.lock:
            stored = StoredFile(new_id(prefix), account, vendor, filename, purpose, data, int(time.time()),
                                mime_type)
            self.files[stored.id] = stored
            return stored

    def file(self, account: str, vendor: str, file_id: str) -> StoredFile | None:
        """A file of this key and vendor, or None."""
        with self.lock:
            stored = self.files.get(file_id)
            return stored if stored is not None and (stored.account, stored.vendor) == (account, vendor) else None

    def add_job(self, account: str, vendor: str, items: list[BatchItem], prefix: str,
                errors: list[dict[str, Any]] | None = None, **extras: Any) -> BatchJob:
        """Create a job with the options in force now."""
        with self.lock:
            options = BatchOptions(**self.options.as_json())
            fail_ids = frozenset(item.custom_id for item in items
                                 if fraction_of(item.custom_id) < options.fail_fraction)
            wall = time.time()
            job = BatchJob(new_id(prefix), vendor, account, items, options, wall, time.monotonic(),
                           errors=list(errors or []), fail_ids=fail_ids, changed_at=wall, extras=dict(extras))
            self.jobs[job.id] = job
            return job

    def job(self, account: str, vendor: str, job_id: str) -> BatchJob | None:
        """A job of this key and vendor, or None."""
        with self.lock:
            job = self.jobs.get(job_id)
            return job if job is not None and (job.account, job.vendor) == (account, vendor) else None

    def jobs_of(self, account: str, vendor: str) -> list[BatchJob]:
        """This key's jobs on this vendor, most recent first."""
        with self.lock:
            mine = [job for job in self.jobs.values() if (job.account, job.vendor) == (account, vendor)]
            return sorted(mine, key=lambda job: job.created_at, reverse=True)

    def unfinished(self, account: str | None) -> list[BatchJob]:
        """Jobs not ended yet, of one key or of all keys."""
        with self.lock:
            return [job for job in self.jobs.values()
                    if job.ended is None and (account is None or job.account == account)]
