"""`evalpipe history JOB_DIR`: every run of one job, in start order, and where a metric moved.

```
results/<job>/<run_id>/ ... ─discover, order by the manifests' start─▶ runs
run ─one pass (per part): group by backend, parameter set, item─▶ per-item sums and counts
    ─▶ level per metric: mean over rows, 95% interval resampling items (repeats stay together)
    ─▶ change from the previous readable run: per shared item the difference of the item means,
       paired on item (consecutive nightly runs share the dataset); flagged when its interval excludes 0
```

Metrics, counted as `summary` counts them: every score column (over the rows that have it), the pass rate
(over attempted rows, an error a fail; only when the rows carry verdicts), the error rate (over all rows),
the cost per row (generation plus scoring) and the median latency of ok rows (`clustered_medians`: from
each item's latencies on 1%-wide log buckets, resampled and paired on items too).

Each flag is a test at the 95% level: over many metrics and groups an occasional flag comes by chance; a
change that holds on the next run is real.

The runs are read a batch of groups at a time (about 250,000 rows of each run), one run after the other, and
each group's per-item aggregates replace the previous run's as soon as its change is computed: about two
runs' aggregates of one batch of groups are held, whatever the number and size of the runs and groups.
With a `HistoryCache` (the viewer keeps one), a run's points are computed once while its parts and the run
before it are unchanged. A run that cannot be read is listed with the reason, never raised; a partial run
is listed with its warnings.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from evalpipe.analysis.clustered_medians import clustered_median, paired_median_change
from evalpipe.analysis.item_tables import RATE_METRICS, Group, ItemTable, groups_of, item_tables
from evalpipe.analysis.runs import Run, RunDirError, open_run
from evalpipe.analysis.stats import CONFIDENCE, RESAMPLES, Estimate, IntArray, clustered_means
from evalpipe.errors import ConfigError
from evalpipe.pipeline.output.manifest import MANIFEST_FILENAME, Manifest, read_manifest
from evalpipe.pipeline.output.sinks import CSV_FILENAME, PARQUET_DIRNAME
from evalpipe.pipeline.output.store import STORE_FILENAME, RunStore

LATENCY_METRIC = "latency_p50_s"
LOWER_IS_BETTER = frozenset({"error_rate", "cost_usd", LATENCY_METRIC})
Verdict = Literal["better", "worse", "no clear change"]


@dataclass(frozen=True, slots=True)
class Change:
    """The paired, item-clustered change of one metric from the previous run that has the group."""

    since: str  # the previous run's name
    difference: Estimate  # now − before, over the items both runs have the metric for
    verdict: Verdict  # better / worse when the interval excludes 0, by the metric's direction

    @property
    def significant(self) -> bool:
        """Whether the 95% interval of the difference excludes 0."""
        return self.verdict != "no clear change"


@dataclass(frozen=True, slots=True)
class Point:
    """One metric of one group in one run: its estimate (the median for latency), items and change."""

    estimate: Estimate
    items: int
    change: Change | None


@dataclass(frozen=True, slots=True)
class GroupPoints:
    """One backend and parameter set in one run."""

    backend_id: str
    param_set: str
    items: int
    rows: int
    metrics: dict[str, Point]
    notes: tuple[str, ...] = ()  # item sets that differ from the previous run's

    @property
    def repeats(self) -> float:
        """Rows per item (repeats × turns)."""
        return self.rows / self.items if self.items else 0.0


@dataclass(frozen=True, slots=True)
class RunPoints:
    """One run of the job: when it started, what state it is in, and its groups (none when unreadable)."""

    name: str
    path: str
    started_at: str | None
    state: str
    warnings: tuple[str, ...]
    error: str | None
    groups: list[GroupPoints]

    @property
    def partial(self) -> bool:
        """Whether rows of the run are (or may be) missing."""
        return bool(self.warnings)

    @property
    def label(self) -> str:
        """`damaged: ...`, `partial: ...` or empty."""
        if self.error is not None:
            return f"damaged: {self.error}"
        return "partial: " + "; ".join(self.warnings) if self.warnings else ""


@dataclass(frozen=True, slots=True)
class History:
    """The runs of one job directory in start order, with every metric per group."""

    directory: str
    jobs: list[str]
    metrics: list[str]
    groups: list[Group]
    runs: list[RunPoints]
    notes: list[str] = field(default_factory=list)


def discover(directory: str | Path) -> list[Path]:
    """The run directories directly under a job's directory; RunDirError when there are none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise RunDirError(f"{directory} is not a directory" if directory.exists() else f"{directory} does not exist")
    if _looks_like_run(directory):
        raise RunDirError(f"{directory} is one run; history reads the job directory that holds its runs "
                          f"({directory.parent})")
    found = sorted(path for path in directory.iterdir() if path.is_dir() and _looks_like_run(path))
    if not found:
        raise RunDirError(f"{directory} holds no run directories (each with a {MANIFEST_FILENAME} or a "
                          f"{PARQUET_DIRNAME}/ folder); pass results/<job>/")
    return found


def _looks_like_run(path: Path) -> bool:
    return any((path / name).exists() for name in (MANIFEST_FILENAME, PARQUET_DIRNAME, CSV_FILENAME, STORE_FILENAME))


RunSignature = tuple[str, str, tuple[tuple[str, int, int], ...]]


def run_signature(run: Run) -> RunSignature:
    """What a run's points are computed from: its directory, name and readable parts (size, modification time)."""
    parts = []
    for part in run.parts:
        stat = part.stat()
        parts.append((part.name, stat.st_size, stat.st_mtime_ns))
    return str(run.path), run.name, tuple(parts)


@dataclass(frozen=True, slots=True)
class _CachedPoints:
    since: dict[Group, RunSignature | None]  # per group, the run its change was measured from
    groups: list[GroupPoints]


class HistoryCache:
    """The points of runs already computed, for a reader that asks again (the viewer): a run's points are reused
    while its parts, and the run each of its groups' changes is measured from, are unchanged. Bounded to the
    `size` runs used last; safe to share between threads."""

    def __init__(self, size: int = 512) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[RunSignature, int, float], _CachedPoints] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[RunSignature, int, float]) -> _CachedPoints | None:
        """The entry under `key`, marked as used."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[RunSignature, int, float], entry: _CachedPoints) -> None:
        """Keep `entry`, dropping the least recently used past the size."""
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)


def build_history(directory: str | Path, *, resamples: int = RESAMPLES, confidence: float = CONFIDENCE,
                  cache: HistoryCache | None = None) -> History:
    """The history of the job whose runs are under `directory`; with `cache`, only runs (or changes) not computed
    before read their rows."""
    opened: list[tuple[datetime | None, Path, Run | None, str | None]] = []
    for path in discover(directory):
        try:
            run: Run | None = open_run(path)
            error = None
        except RunDirError as failure:
            run, error = None, failure.message
        opened.append((_start_of(path, run), path, run, error))
    opened.sort(key=lambda entry: (entry[0] or datetime.max.replace(tzinfo=UTC), entry[1].name))
    jobs = sorted({run.manifest.job_name for _, _, run, _ in opened if run is not None and run.manifest is not None})
    notes = [f"the runs belong to {len(jobs)} jobs: {', '.join(jobs)}"] if len(jobs) > 1 else []
    metrics = list(dict.fromkeys(m for _, _, run, _ in opened if run is not None for m in run.metrics))
    metrics += [*RATE_METRICS, LATENCY_METRIC]
    failed: dict[Path, str] = {}
    while True:  # again without a run whose rows broke while read: the changes after it skip it
        try:
            runs = _points_of_runs(opened, failed, cache, resamples, confidence)
            break
        except _BrokenRun as broken:
            failed[broken.path] = broken.message
    order = list(dict.fromkeys((g.backend_id, g.param_set) for r in runs for g in r.groups))
    return History(str(directory), jobs, metrics, order, runs, notes)


class _BrokenRun(Exception):
    """A run whose rows could not be read while its groups' tables were."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(message)
        self.path, self.message = path, message


@dataclass(slots=True)
class _Pending:
    """A run whose points are computed: its groups in the order of the job's tasks, with their rows, and per
    group the run its change is measured from."""

    run: Run
    started: str | None
    state: str
    signature: RunSignature
    groups: list[tuple[Group, int]]
    since: dict[Group, RunSignature | None]
    points: dict[Group, GroupPoints] = field(default_factory=dict)


def _points_of_runs(opened: list[tuple[datetime | None, Path, Run | None, str | None]], failed: dict[Path, str],
                    cache: HistoryCache | None, resamples: int, confidence: float) -> list[RunPoints]:
    """Every run's points: first which runs are cached and which groups each new one has (no rows read but
    the group counts), then the new runs' tables a batch of groups at a time across the runs, each group's
    table dropped once the next run's change from it is computed: about two runs' tables of one batch of
    groups are held, whatever the number of runs and groups. `_BrokenRun` when a run's rows break."""
    previous = _Previous()
    sequence: list[tuple[Run, RunSignature, _CachedPoints | _Pending]] = []
    runs: list[RunPoints | _Pending] = []
    for start, path, run, error in opened:
        started = start.isoformat() if start is not None else None
        if run is None:
            runs.append(RunPoints(path.name, str(path), started, "damaged", (), error, []))
            continue
        state = run.manifest.state if run.manifest is not None else "unknown"
        if path in failed:
            runs.append(RunPoints(run.name, str(path), started, state, run.warnings, failed[path], []))
            continue
        signature = run_signature(run)
        cached = cache.get((signature, resamples, confidence)) if cache is not None else None
        if cached is None or any(previous.signature(group) != since for group, since in cached.since.items()):
            try:
                groups = groups_of(run)
            except RunDirError as failure:
                runs.append(RunPoints(run.name, str(path), started, state, run.warnings, failure.message, []))
                continue
            pending = _Pending(run, started, state, signature, groups,
                               {group: previous.signature(group) for group, _ in groups})
            sequence.append((run, signature, pending))
            runs.append(pending)
            for group, _ in groups:
                previous.add(group, run, signature, None)
        else:
            sequence.append((run, signature, cached))
            runs.append(RunPoints(run.name, str(path), started, state, run.warnings, None, cached.groups))
            for group in cached.since:
                previous.add(group, run, signature, None)
    new = [entry for _, _, entry in sequence if isinstance(entry, _Pending)]
    for batch in _batches(new):
        previous = _Previous()  # this batch's groups only: their tables go with it
        for run, signature, entry in sequence:
            if isinstance(entry, _CachedPoints):
                for group in batch & entry.since.keys():
                    previous.add(group, run, signature, None)
                continue
            wanted = [group for group, _ in entry.groups if group in batch]
            if not wanted:
                continue
            try:
                tables = item_tables(run, wanted)
            except RunDirError as failure:
                raise _BrokenRun(run.path, failure.message) from None
            for group in wanted:
                table = tables.pop(group, None)
                if table is None:
                    continue
                entry.points[group] = _group_points(run.name, group, table, run.metrics, previous.tables(group),
                                                    resamples, confidence)
                previous.add(group, run, signature, table)
    found: list[RunPoints] = []
    for listed in runs:
        if isinstance(listed, RunPoints):
            found.append(listed)
            continue
        points = _CachedPoints(listed.since, [listed.points[g] for g, _ in listed.groups if g in listed.points])
        if cache is not None:
            cache.put((listed.signature, resamples, confidence), points)
        found.append(RunPoints(listed.run.name, str(listed.run.path), listed.started, listed.state,
                               listed.run.warnings, None, points.groups))
    return found


class _Previous:
    """Per group, the last run before the one at hand that has it, and its table there (read only when a
    change must be computed: a run whose points come from the cache does not read its rows)."""

    def __init__(self) -> None:
        self._last: dict[Group, tuple[Run, RunSignature, ItemTable | None]] = {}

    def signature(self, group: Group) -> RunSignature | None:
        """The signature of the last run with `group`."""
        found = self._last.get(group)
        return found[1] if found is not None else None

    def tables(self, group: Group) -> tuple[str, ItemTable] | None:
        """The last run with `group`: its name and the group's table."""
        found = self._last.get(group)
        if found is None:
            return None
        run, signature, table = found
        if table is None:
            try:
                table = item_tables(run, [group]).get(group)
            except RunDirError:  # readable when its points were computed, not now: no change to measure from
                return None
            if table is None:
                return None
            self._last[group] = (run, signature, table)
        return run.name, table

    def add(self, group: Group, run: Run, signature: RunSignature, table: ItemTable | None) -> None:
        """`run` is now the last run with `group` (with its table when it was read)."""
        self._last[group] = (run, signature, table)


def _start_of(path: Path, run: Run | None) -> datetime | None:
    """When the run first started: the manifest's creation (or session start), else the run store's creation,
    else the timestamp its id starts with (to the second only)."""
    manifest = run.manifest if run is not None else _manifest_of(path)
    texts = [manifest.created_at, manifest.started_at] if manifest is not None else []
    with contextlib.suppress(ConfigError):  # no store (copied output) or an unreadable one
        texts.append(RunStore.read_meta(path).get("created_at"))
    for text in texts:
        if text:
            try:
                return datetime.fromisoformat(text).astimezone(UTC)
            except ValueError:
                continue
    try:  # run ids start with their UTC start time (pipeline.rundir.new_run_id)
        return datetime.strptime(path.name[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def _manifest_of(path: Path) -> Manifest | None:
    """The manifest of a run whose rows cannot be read: it still says when the run started."""
    try:
        return read_manifest(path)
    except ConfigError:
        return None


ROWS_PER_BATCH = 250_000  # rows of the groups read in one pass: a million-row run's item tables stay small


def _batches(runs: Sequence[_Pending]) -> list[set[Group]]:
    """The groups of `runs`, in order of first appearance, in batches of about `ROWS_PER_BATCH` rows of the
    largest run (a group with more on its own)."""
    rows: dict[Group, int] = {}
    for entry in runs:
        for group, count in entry.groups:
            rows[group] = max(rows.get(group, 0), count)
    batches: list[set[Group]] = []
    total = 0
    for group, count in rows.items():
        if not batches or total + count > ROWS_PER_BATCH:
            batches.append(set())
            total = 0
        batches[-1].add(group)
        total += count
    return batches


# -- estimates -----------------------------------------------------------------------------------------


def _group_points(run_name: str, group: Group, table: ItemTable, scores: list[str],
                  previous: tuple[str, ItemTable] | None, resamples: int, confidence: float) -> GroupPoints:
    """Every metric's level in this run and its change from `previous`."""
    metrics = [*scores, *RATE_METRICS]
    key = f"history|{run_name}|{group[0]}|{group[1]}"
    levels = clustered_means(table.sums, table.counts.astype(np.float64), metrics, key=key, resamples=resamples,
                             confidence=confidence, proportions=[*scores, "pass_rate", "error_rate"])
    median = clustered_median(table.latency, key=f"{key}|{LATENCY_METRIC}", resamples=resamples,
                              confidence=confidence)
    changes: dict[str, Estimate] = {}
    notes: tuple[str, ...] = ()
    if previous is not None:
        since, before = previous
        changes, notes = _changes(since, before, table, key, resamples, confidence)
    points: dict[str, Point] = {}
    for index, metric in enumerate(metrics):
        items = int((table.counts[:, index] > 0).sum())
        points[metric] = Point(levels[metric], items, _change(previous, changes.get(metric), metric))
    points[LATENCY_METRIC] = Point(median, median.items,
                                   _change(previous, changes.get(LATENCY_METRIC), LATENCY_METRIC))
    rows = int(table.counts[:, metrics.index("error_rate")].sum())
    return GroupPoints(group[0], group[1], len(table.ids), rows, points, notes)


def _change(previous: tuple[str, ItemTable] | None, difference: Estimate | None, metric: str) -> Change | None:
    if previous is None or difference is None:
        return None
    verdict: Verdict = "no clear change"
    if difference.above(0) or difference.below(0):
        higher_is_better = metric not in LOWER_IS_BETTER
        verdict = "better" if difference.above(0) == higher_is_better else "worse"
    return Change(previous[0], difference, verdict)


def _shared(before: pl.Series, now: pl.Series) -> tuple[IntArray, IntArray]:
    """The positions in `before` and in `now` of the ids both hold, in id order (both are sorted by id)."""
    found = (before.to_frame("id").with_row_index("before")
             .join(now.to_frame("id").with_row_index("now"), on="id", how="inner").sort("before"))
    return found["before"].to_numpy().astype(np.int64), found["now"].to_numpy().astype(np.int64)


def _changes(since: str, before: ItemTable, now: ItemTable, key: str, resamples: int,
             confidence: float) -> tuple[dict[str, Estimate], tuple[str, ...]]:
    """Per metric both runs have, the mean over shared items of (item mean now − item mean before),
    resampling items; and what differs between the runs' items and metrics."""
    index_before, index_now = _shared(before.ids, now.ids)
    notes: list[str] = []
    only_before, only_now = len(before.ids) - len(index_before), len(now.ids) - len(index_now)
    if only_before or only_now:
        notes.append(f"items differ from {since}: {only_before} only there, {only_now} only here; "
                     f"changes pair the {len(index_before)} shared items")
    metrics = [m for m in now.metrics if m in before.metrics]
    new = [m for m in now.metrics if m not in before.metrics]
    if new:
        notes.append(f"{', '.join(new)} not in {since}: no change for it")
    cells_before = np.ix_(index_before, np.array([before.metrics.index(m) for m in metrics], dtype=np.int64))
    cells_now = np.ix_(index_now, np.array([now.metrics.index(m) for m in metrics], dtype=np.int64))
    sums_b, counts_b = before.sums[cells_before], before.counts[cells_before]
    sums_n, counts_n = now.sums[cells_now], now.counts[cells_now]
    both = (counts_b > 0) & (counts_n > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        differences = np.where(both, sums_n / np.where(both, counts_n, 1) - sums_b / np.where(both, counts_b, 1), 0.0)
    found = clustered_means(differences, both.astype(np.float64), metrics, key=f"{key}|change", resamples=resamples,
                            confidence=confidence)
    found[LATENCY_METRIC] = paired_median_change(before.latency, now.latency, index_before, index_now,
                                                 key=f"{key}|change|{LATENCY_METRIC}", resamples=resamples,
                                                 confidence=confidence)
    return found, tuple(notes)


