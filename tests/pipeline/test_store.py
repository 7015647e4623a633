"""The run store: WAL, one row per task, the response cache, and committed batches surviving a SIGKILL."""

from __future__ import annotations

import random
import sqlite3
import textwrap
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest

from evalpipe.errors import ConfigError
from evalpipe.pipeline.output.rows import row_schema
from evalpipe.pipeline.output.store import STORE_FILENAME, RunStore
from evalpipe.pipeline.running.response_cache import StoreCache
from tests.pipeline.killing import run_until_killed

SCHEMA = row_schema(["c"])


def row(task_id: str, index: int, status: str = "ok", **columns: Any) -> dict[str, Any]:
    return {"task_id": task_id, "task_index": index, "status": status, **columns}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with RunStore.open(tmp_path, "run-1", SCHEMA) as opened:
        yield opened


def test_store_file_is_in_wal_mode(store: RunStore, tmp_path: Path) -> None:
    other = sqlite3.connect(tmp_path / STORE_FILENAME)
    try:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        other.close()


def test_finished_ids_count_ok_and_error_rows_and_retry_errors_drops_errors(store: RunStore) -> None:
    store.record([row("a", 0), row("b", 1, "error", error_type="RateLimitError"), row("c", 2, "skipped")])

    assert store.finished_ids() == {"a", "b"}
    assert store.finished_ids(retry_errors=True) == {"a"}
    assert store.is_finished("b") and not store.is_finished("b", retry_errors=True)
    assert not store.is_finished("c")  # never attempted: a resume attempts it
    assert not store.is_finished("unknown")
    assert store.counts() == {"ok": 1, "error": 1, "skipped": 1}


def test_a_retried_error_row_replaces_the_old_one(store: RunStore) -> None:
    store.record([row("a", 0, "error", error_type="ServerError", input_tokens=5)])
    store.record([row("a", 0, "ok", response="fine", input_tokens=7, output_tokens=3, cost_usd=0.25)])

    rows = list(store.iter_rows())
    assert len(rows) == 1
    assert rows[0]["status"] == "ok" and rows[0]["response"] == "fine" and rows[0]["error_type"] is None
    assert store.counts() == {"ok": 1, "error": 0, "skipped": 0}
    totals = store.totals()
    assert (totals.rows, totals.input_tokens, totals.output_tokens, totals.cost_usd) == (1, 7, 3, 0.25)


def test_rows_come_back_in_task_order_with_types_and_run_id(store: RunStore) -> None:
    started = datetime(2024, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)
    store.record([row("z", 2), row("y", 0, started_at=started, score_c=float("nan"))])
    store.record([row("x", 1, run_id="explicit")])

    rows = list(store.iter_rows())

    assert [r["task_id"] for r in rows] == ["y", "x", "z"]
    assert rows[0]["started_at"] == started
    assert rows[0]["score_c"] != rows[0]["score_c"]  # NaN survives the JSON round trip
    assert [r["run_id"] for r in rows] == ["run-1", "explicit", "run-1"]


def test_a_batch_with_an_invalid_row_is_not_kept_at_all(store: RunStore) -> None:
    with pytest.raises(ValueError, match="unknown_column"):
        store.record([row("a", 0), row("b", 1, unknown_column=1)])
    with pytest.raises(ValueError, match="task_id"):
        store.record([row("c", 2), {"status": "ok"}])

    assert list(store.iter_rows()) == []
    store.record([row("d", 3)])  # the store is still usable after a rolled-back batch
    assert store.finished_ids() == {"d"}


def test_response_cache_round_trips_and_persists(tmp_path: Path) -> None:
    payload = {"text": "Grüße ✓", "input_tokens": 3, "ttft_s": None}
    with RunStore.open(tmp_path, "run-1", SCHEMA) as first:
        assert first.cached_response("k1") is None
        first.cache_response("k1", payload)
        assert first.cached_response("k1") == payload

    with RunStore.open(tmp_path, "run-1", SCHEMA) as again:
        assert again.cached_response("k1") == payload
        assert again.cached_response("k2") is None


def count_commits(store: RunStore) -> list[str]:
    """The transactions `store` commits from now on, one entry each: an explicit COMMIT, or a write
    outside any transaction (which SQLite commits on its own)."""
    commits: list[str] = []
    state = {"open": False}

    def trace(sql: str) -> None:
        if sql.startswith("BEGIN"):
            state["open"] = True
        elif sql == "COMMIT":
            state["open"] = False
            commits.append(sql)
        elif sql.startswith("INSERT") and not state["open"]:
            commits.append(sql)

    store._connection.set_trace_callback(trace)
    return commits


def test_a_batch_of_answers_is_committed_in_one_transaction(tmp_path: Path) -> None:
    """A burst of answers goes in one commit, and every one of them is durable when the call returns."""
    answers = [(f"k{i}", {"text": f"answer {i}", "input_tokens": i}) for i in range(50)]
    with RunStore.open(tmp_path, "run-1", SCHEMA) as store:
        commits = count_commits(store)
        store.cache_responses(answers)
        assert len(commits) == 1
        # Visible to another connection at once: committed, not merely buffered.
        other = sqlite3.connect(tmp_path / STORE_FILENAME)
        try:
            assert other.execute("SELECT COUNT(*) FROM response_cache").fetchone()[0] == 50
        finally:
            other.close()
        assert store.cached_response("k49") == {"text": "answer 49", "input_tokens": 49}


def test_meta_and_run_id_guard(tmp_path: Path) -> None:
    with RunStore.open(tmp_path, "run-1", SCHEMA) as store:
        store.set_meta("job_hash", "abc")
        assert store.get_meta("job_hash") == "abc"
        assert store.get_meta("missing") is None

    meta = RunStore.read_meta(tmp_path)
    assert meta["run_id"] == "run-1" and meta["job_hash"] == "abc"
    assert datetime.fromisoformat(meta["created_at"]).tzinfo is not None
    with pytest.raises(ConfigError, match="belongs to run 'run-1'"):
        RunStore.open(tmp_path, "run-2", SCHEMA)
    with pytest.raises(ConfigError, match="not a run directory"):
        RunStore.read_meta(tmp_path / "elsewhere")


def test_calls_from_many_threads_at_once_are_serialized(store: RunStore) -> None:
    def work(worker: int) -> None:
        for i in range(40):
            store.cache_response(f"{worker}-{i}", {"i": i})
            assert store.cached_response(f"{worker}-{i}") == {"i": i}
        store.record([row(f"{worker}-{i}", worker * 100 + i) for i in range(20)])

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))

    assert store.totals().rows == 160


# A writer in its own process, recording batches of BATCH rows and printing how many batches are
# committed. With a "pause" argument it stops in the middle of batch PAUSE_AT, inside the transaction.
WRITER = textwrap.dedent("""
    import itertools, sys, time
    from evalpipe.pipeline.output.rows import row_schema
    from evalpipe.pipeline.output.store import RunStore

    BATCH, PAUSE_AT = 25, 5
    store = RunStore.open(sys.argv[1], "run-1", row_schema(["c"]))
    pause = sys.argv[2] == "pause"

    def rows(batch):
        for i in range(BATCH):
            if pause and batch == PAUSE_AT and i == BATCH // 2:
                print("inside", flush=True)
                time.sleep(60)
            n = batch * BATCH + i
            yield {"task_id": f"t{n:06d}", "task_index": n, "status": "ok", "response": "x" * 300, "score_c": 0.5}

    for batch in itertools.count():
        store.record(rows(batch))
        print(f"committed {batch + 1}", flush=True)
""")
BATCH = 25


def _kill_writer(run_dir: Path, mode: str, after_lines: int) -> int:
    """Run the writer, SIGKILL it after `after_lines` lines (or at "inside"); return the batches it reported."""
    def stop(line: str) -> bool:
        return line == "inside" or (line.startswith("committed") and int(line.split()[1]) >= after_lines)

    lines = run_until_killed(WRITER, str(run_dir), mode, stop=stop)
    return max((int(line.split()[1]) for line in lines if line.startswith("committed")), default=0)


def _stored_ids(run_dir: Path) -> list[str]:
    with RunStore.open(run_dir, "run-1", SCHEMA) as store:
        return [r["task_id"] for r in store.iter_rows()]


def test_sigkill_inside_a_batch_keeps_exactly_the_committed_batches(tmp_path: Path) -> None:
    reported = _kill_writer(tmp_path, "pause", after_lines=10**9)

    assert reported == 5
    assert (tmp_path / f"{STORE_FILENAME}-wal").exists()  # the crash left a WAL that opening must recover
    assert _stored_ids(tmp_path) == [f"t{n:06d}" for n in range(5 * BATCH)]
    check = sqlite3.connect(tmp_path / STORE_FILENAME)
    try:
        assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        check.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sigkill_at_a_random_moment_keeps_whole_batches_only(tmp_path: Path, seed: int) -> None:
    reported = _kill_writer(tmp_path, "run", after_lines=random.Random(seed).randint(3, 60))

    ids = _stored_ids(tmp_path)
    # The writer may commit a batch or two between its last line and the kill, never part of one.
    assert len(ids) % BATCH == 0
    assert len(ids) >= reported * BATCH
    assert ids == [f"t{n:06d}" for n in range(len(ids))]


def test_finished_answers_like_the_set_of_finished_ids(store: RunStore) -> None:
    store.record([{"task_id": f"t{i}", "task_index": i, "status": "error" if i % 3 == 0 else "ok"}
                  for i in range(300)])
    for retry_errors in (False, True):
        exact, compact = store.finished_ids(retry_errors=retry_errors), store.finished(retry_errors=retry_errors)
        assert len(compact) == len(exact)
        assert all(f"t{i}" in compact for i in range(300) if f"t{i}" in exact)
        assert not any(f"t{i}" in compact for i in range(300) if f"t{i}" not in exact)
        assert "t1000" not in compact and "t1-000" not in compact


@pytest.mark.anyio
async def test_answers_arriving_together_share_one_commit(tmp_path: Path) -> None:
    """Puts that queue behind one being written go in one transaction: one commit, not one each."""
    with RunStore.open(tmp_path, "run-1", SCHEMA) as store:
        commits = count_commits(store)
        cache = StoreCache(store, empty=True, on_failure=lambda error: None)
        async with anyio.create_task_group() as group:
            for i in range(30):
                group.start_soon(cache.put, f"k{i}", {"text": f"answer {i}"})
        # The first put goes alone; the 29 queued behind it while it was written go together.
        assert len(commits) == 2
        assert all(store.cached_response(f"k{i}") == {"text": f"answer {i}"} for i in range(30))


@pytest.mark.anyio
async def test_puts_handed_to_a_writer_wait_for_it_not_for_a_commit(tmp_path: Path) -> None:
    """With a writer attached, a put queues the answer and wakes the writer once per burst; the answers
    are committed in the writer's trip (one transaction), and what is left by the end is flushed."""
    with RunStore.open(tmp_path, "run-1", SCHEMA) as store:
        commits = count_commits(store)
        cache = StoreCache(store, empty=True, on_failure=lambda error: None)
        wakes: list[int] = []
        cache.hand_to_writer(lambda: wakes.append(1))
        for i in range(30):
            await cache.put(f"k{i}", {"text": f"answer {i}"})
        assert len(wakes) == 1 and commits == [] and store.cached_response("k0") is None
        answers, ticket = cache.take()
        store.cache_responses(answers)  # what the runner's writer does in its worker thread
        cache.committed(ticket)
        assert len(commits) == 1
        assert all(store.cached_response(f"k{i}") == {"text": f"answer {i}"} for i in range(30))
        await cache.put("late", {"text": "after the writer's last batch"})
        assert len(wakes) == 2
        cache.flush()
        assert store.cached_response("late") == {"text": "after the writer's last batch"} and cache.take()[0] == []
