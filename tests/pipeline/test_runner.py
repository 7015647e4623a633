"""The runner end to end against the fake provider server over HTTP: every fault ends as exactly one
row, resume repeats no paid call, the budget guard, skipped backends, score columns, the concurrency
caps and the rate limits. Windows and timeouts are shortened so the file runs in well under a minute."""

from __future__ import annotations

import csv
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pyarrow.dataset as pads  # type: ignore[import-untyped, unused-ignore]
import pytest
import structlog

from evalpipe.pipeline.job.expand import expand_job
from evalpipe.pipeline.job.load import JobFileError, LoadedJob, prepare_job
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.output.manifest import read_manifest
from evalpipe.pipeline.output.rows import row_schema
from evalpipe.pipeline.output.sinks import CSV_FILENAME, PARQUET_DIRNAME, unescape_csv_cell
from evalpipe.pipeline.output.store import RunStore
from evalpipe.pipeline.running.execute import Criterion, execute
from evalpipe.pipeline.running.job_backends import open_backends
from evalpipe.pipeline.running.outcome import RunOutcome
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.scoring.registry import build_scorer
from evalpipe.testing import FakeServer, Fault

pytestmark = pytest.mark.anyio

# What each fault of the fake server ends as when it never stops, and whether the runner retries it.
FAULT_ERRORS: dict[Fault, tuple[str, bool]] = {
    Fault.RATE_LIMIT_RETRY_AFTER: ("RateLimitError", True),
    Fault.RATE_LIMIT_RETRY_AFTER_MS: ("RateLimitError", True),
    Fault.RATE_LIMIT_HTTP_DATE: ("RateLimitError", True),
    Fault.RATE_LIMIT_GEMINI: ("RateLimitError", True),
    Fault.SERVER_ERROR: ("ServerError", True),
    Fault.UNAVAILABLE: ("OverloadedError", True),
    Fault.OVERLOADED: ("OverloadedError", True),
    Fault.HANG: ("TimeoutError", True),
    Fault.HANG_MIDSTREAM: ("TimeoutError", True),
    Fault.RESET_MIDSTREAM: ("ConnectionError", True),
    Fault.TRUNCATED_STREAM: ("ConnectionError", True),
    Fault.MALFORMED_JSON: ("ProtocolError", False),
    Fault.HTML_ERROR: ("ServerError", True),
    Fault.ERROR_EVENT: ("ServerError", True),
    Fault.INSUFFICIENT_QUOTA: ("QuotaExceededError", False),
    Fault.CONTEXT_LENGTH: ("ContextLengthError", False),
    Fault.NOT_FOUND: ("NotFoundError", False),
}
# Jobs stream by default: an in-stream error event is classified by the type it names, which the fake
# server's Anthropic event gives as overloaded_error.
STREAM_ERROR_EVENTS = {(Fault.ERROR_EVENT.value, "anthropic"): "OverloadedError"}
VENDORS = {"openai": "openai", "anthropic": "anthropic", "google": "gemini"}  # backend -> fake server vendor


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    """A key of this test's own, in the variable every backend of `backend()` reads."""
    key = f"sk-runner-{request.node.name}"
    monkeypatch.setenv("EVALPIPE_TEST_RUNNER_KEY", key)
    return key


def backend(srv: FakeServer, backend_id: str, kind: str = "openai", **options: Any) -> dict[str, Any]:
    return {"id": backend_id, "backend": kind, "model": f"{kind}-test-model", "base_url": srv.url_for(VENDORS[kind]),
            "api_key_env": "EVALPIPE_TEST_RUNNER_KEY", **options}


def job(items: Sequence[dict[str, Any]], backends: Sequence[dict[str, Any]], **fields: Any) -> LoadedJob:
    spec = {"name": "runner-test", "dataset": {"items": list(items)}, "prompt": {"user": "{{ q }}"},
            "backends": list(backends), **fields}
    return prepare_job(JobSpec.model_validate(spec))


async def run(loaded: LoadedJob, tmp_path: Path, **options: Any) -> RunOutcome:
    options.setdefault("out_root", tmp_path / "results")
    return await run_job(loaded, RunOptions(handle_signals=False, **options))


def task_ids(loaded: LoadedJob) -> set[str]:
    return {task.task_id for task in expand_job(loaded)}


def outputs(outcome: RunOutcome, criteria: Sequence[str] = ()) -> dict[str, list[dict[str, Any]]]:
    """The rows of the store, the Parquet parts and the CSV file of a finished run."""
    run_dir = outcome.run_dir
    with RunStore.open(run_dir, outcome.run_id, row_schema(list(criteria))) as store:
        stored = list(store.iter_rows())
    parquet = pads.dataset(run_dir / PARQUET_DIRNAME, format="parquet").to_table().to_pylist()
    with (run_dir / CSV_FILENAME).open(encoding="utf-8", newline="") as file:
        csv_rows = [{k: unescape_csv_cell(v) for k, v in row.items()} for row in csv.DictReader(file)]
    return {"store": stored, "parquet": parquet, "csv": csv_rows}


def assert_one_row_per_task(outcome: RunOutcome, expected_ids: set[str], criteria: Sequence[str] = ()) -> (
        dict[str, dict[str, Any]]):
    """Store, Parquet and CSV each hold exactly one row per task and agree on every row's outcome;
    returns the store's rows by task id."""
    found = outputs(outcome, criteria)
    for name, rows in found.items():
        ids = Counter(row["task_id"] for row in rows)
        assert not [i for i, n in ids.items() if n > 1], f"{name}: tasks with more than one row"
        assert set(ids) == expected_ids, f"{name}: {len(expected_ids - set(ids))} missing, " \
                                         f"{len(set(ids) - expected_ids)} unknown"

    def summary(row: dict[str, Any]) -> tuple[str, str, str]:
        return row["status"], row["error_type"] or "", row["response"] or ""

    by_id = {row["task_id"]: row for row in found["store"]}
    for name in ("parquet", "csv"):
        assert {r["task_id"]: summary(r) for r in found[name]} == {i: summary(r) for i, r in by_id.items()}, name
    return by_id


# -- faults -------------------------------------------------------------------------------------------


async def test_every_fault_ends_as_exactly_one_row_of_the_right_kind(api_key: str, tmp_path: Path) -> None:
    assert set(FAULT_ERRORS) == set(Fault), "a new fault type needs its expected error here"
    items = []
    for fault in Fault:
        items.append({"id": f"{fault.value}-always", "q": f"always [[fault:{fault.value}]]"})
        items.append({"id": f"{fault.value}-once", "q": f"once [[fault:{fault.value}:1]]"})
        items.append({"id": f"{fault.value}-twice", "q": f"twice [[fault:{fault.value}:2]]"})
    items.append({"id": "fine", "q": "no fault at all"})
    with FakeServer(retry_after_s=0.05) as srv:
        backends = [backend(srv, kind, kind, timeout_s=1.0, max_retries=2) for kind in VENDORS]
        loaded = job(items, backends, task_timeout_s=20)
        outcome = await run(loaded, tmp_path)
        stats = srv.stats(api_key)

    assert outcome.state == "completed"
    rows = assert_one_row_per_task(outcome, task_ids(loaded))
    assert len(rows) == len(items) * len(VENDORS)
    wrong = []
    for row in rows.values():
        name, _, how = row["item_id"].rpartition("-")
        error_type, retried = FAULT_ERRORS[Fault(name)] if name else ("", True)
        error_type = STREAM_ERROR_EVENTS.get((name, row["backend_id"]), error_type)
        if how == "fine" or (retried and how != "always"):
            expected = ("ok", None, {"fine": 1, "once": 2, "twice": 3}[how])
        else:
            expected = ("error", error_type, 3 if retried else 1)
        if (row["status"], row["error_type"], row["attempts"]) != expected:
            wrong.append(f"{row['backend_id']} {row['item_id']}: {row['status']} {row['error_type']} "
                         f"after {row['attempts']} attempts, expected {expected}")
        if row["status"] == "ok":
            assert row["response"] == "Echo: " + row["prompt"].split(" [[")[0]
        else:
            assert row["error_message"] and api_key not in row["error_message"]
    assert not wrong, "\n".join(wrong)
    # Every answer that was paid for is a row, and none was paid for twice.
    assert stats.succeeded == sum(row["status"] == "ok" for row in rows.values())


async def test_the_task_timeout_ends_a_task_that_keeps_hanging(api_key: str, tmp_path: Path) -> None:
    with FakeServer() as srv:
        loaded = job([{"q": "stuck [[fault:hang]]"}, {"q": "fine"}], [backend(srv, "b", timeout_s=5)],
                     task_timeout_s=0.5)
        started = time.monotonic()
        outcome = await run(loaded, tmp_path)
        elapsed = time.monotonic() - started
    rows = assert_one_row_per_task(outcome, task_ids(loaded))
    stuck = next(r for r in rows.values() if "stuck" in r["prompt"])
    assert (stuck["status"], stuck["error_type"]) == ("error", "TimeoutError")
    assert "0.5s" in stuck["error_message"]
    assert elapsed < 3


async def test_the_task_timeout_does_not_count_waiting_for_the_rate_limit(api_key: str, tmp_path: Path) -> None:
    # 4 requests per second: the eighth task waits about 1.75 s for its turn, far beyond its 0.5 s
    # timeout; the timeout is for the call, so every task still gets its answer.
    with FakeServer() as srv:
        loaded = job([{"q": f"question {i}"} for i in range(8)], [backend(srv, "b", rpm=4, max_concurrency=8)],
                     task_timeout_s=0.5)
        outcome = await run(loaded, tmp_path, period_s=1.0)
    assert outcome.counts == {"ok": 8, "error": 0, "skipped": 0}


async def test_each_backend_retries_as_often_as_its_own_max_retries(api_key: str, tmp_path: Path) -> None:
    with FakeServer() as srv:
        backends = [backend(srv, "never", max_retries=0), backend(srv, "thrice", "anthropic", max_retries=3)]
        loaded = job([{"q": "flaky [[fault:server_error:2]]"}], backends)
        outcome = await run(loaded, tmp_path)
    rows = {r["backend_id"]: r for r in assert_one_row_per_task(outcome, task_ids(loaded)).values()}
    assert (rows["never"]["status"], rows["never"]["attempts"]) == ("error", 1)
    assert (rows["thrice"]["status"], rows["thrice"]["attempts"]) == ("ok", 3)


# -- resume -------------------------------------------------------------------------------------------


async def test_a_finished_run_run_again_makes_no_call(api_key: str, tmp_path: Path) -> None:
    with FakeServer() as srv:
        loaded = job([{"q": f"question {i}"} for i in range(12)] + [{"q": "bad [[fault:not_found]]"}],
                     [backend(srv, "a"), backend(srv, "b", "anthropic")])
        first = await run(loaded, tmp_path)
        before = srv.stats(api_key)
        again = await run(loaded, tmp_path, run_dir=first.run_dir)
        after = srv.stats(api_key)
    assert before.requests == 26 and before.succeeded == 24
    assert after == before
    assert again.state == "completed" and again.counts == first.counts == {"ok": 24, "error": 2, "skipped": 0}
    assert_one_row_per_task(again, task_ids(loaded))


async def test_retry_errors_runs_only_the_error_rows_again_and_replaces_them(api_key: str, tmp_path: Path) -> None:
    items = [{"q": f"question {i}"} for i in range(10)] + [{"q": f"flaky {i} [[fault:server_error:1]]"}
                                                          for i in range(3)]
    with FakeServer() as srv:
        loaded = job(items, [backend(srv, "b", max_retries=0)])
        first = await run(loaded, tmp_path)
        assert first.counts == {"ok": 10, "error": 3, "skipped": 0}
        errors = {i for i, r in assert_one_row_per_task(first, task_ids(loaded)).items() if r["status"] == "error"}

        plain = await run(loaded, tmp_path, run_dir=first.run_dir)  # without --retry-errors: nothing to do
        assert plain.counts == first.counts and srv.stats(api_key).requests == 13

        retried = await run(loaded, tmp_path, run_dir=first.run_dir, retry_errors=True)
        stats = srv.stats(api_key)
    assert retried.state == "completed" and retried.counts == {"ok": 13, "error": 0, "skipped": 0}
    assert stats.requests == 16 and stats.succeeded == 13  # three more calls: one per error row
    rows = assert_one_row_per_task(retried, task_ids(loaded))
    assert all(rows[i]["status"] == "ok" and rows[i]["response"].startswith("Echo: flaky") for i in errors)


# -- budget -------------------------------------------------------------------------------------------


async def test_the_budget_stops_dispatching_lets_calls_in_flight_finish_and_resumes(
    api_key: str, tmp_path: Path
) -> None:
    # Each call is projected at its 4 output tokens ($4); it really costs "Echo: wN" = 2 tokens ($2).
    items = [{"q": f"w{i} [[latency:0.05]]"} for i in range(20)]
    priced = {"price_output_per_1m": 1_000_000, "max_concurrency": 4}

    def priced_job(max_cost_usd: float) -> LoadedJob:
        return job(items, [backend(srv, "b", **priced)], parameters={"sets": [{"name": "short", "max_tokens": 4}]},
                   budget={"max_cost_usd": max_cost_usd})

    with FakeServer() as srv, structlog.testing.capture_logs() as logs:
        first = await run(priced_job(17), tmp_path)
        paid_first = srv.stats(api_key).succeeded
        same_budget = await run(priced_job(17), tmp_path, run_dir=first.run_dir)
        paid_same = srv.stats(api_key).succeeded
        bigger = await run(priced_job(1000), tmp_path, run_dir=first.run_dir)
        stats = srv.stats(api_key)

    assert first.state == "budget_exhausted"
    assert 0 < first.counts["ok"] < 20 and first.counts["error"] == 0
    assert first.cost_usd <= 17 and first.cost_usd == 2 * first.counts["ok"]
    assert paid_first == first.counts["ok"]  # every call that was started finished and became a row
    assert any(e["event"].startswith("budget reached") for e in logs)
    # The budget is the run's: a resume counts what the earlier session spent.
    assert same_budget.state == "budget_exhausted" and same_budget.cost_usd <= 17
    assert paid_same - paid_first == same_budget.counts["ok"] - first.counts["ok"]
    assert bigger.state == "completed" and bigger.counts == {"ok": 20, "error": 0, "skipped": 0}
    assert stats.succeeded == 20 and bigger.cost_usd == 40
    assert_one_row_per_task(bigger, task_ids(priced_job(1000)))


async def test_the_token_budget_counts_projected_tokens(api_key: str, tmp_path: Path) -> None:
    with FakeServer() as srv:
        loaded = job([{"q": f"w{i}"} for i in range(10)], [backend(srv, "b", max_concurrency=1)],
                     parameters={"sets": [{"name": "short", "max_tokens": 4}]}, budget={"max_tokens": 20})
        outcome = await run(loaded, tmp_path)
    # Projection: 2 tokens of text ("w", a number) + 6 of chat framing (OpenAI's: 3 per message, 3 per
    # request) in, 4 out: 12; spend (the fake counts words): 1 + 2. With one call at a time, the second
    # call is projected to end at 3 + 12 = 15 tokens, the third at 6 + 12 = 18, the fourth at 21 > 20.
    assert outcome.state == "budget_exhausted"
    assert outcome.counts["ok"] == 3


# -- backends without a key ---------------------------------------------------------------------------


async def test_an_optional_backend_without_its_key_is_skipped_counted_and_the_rest_run(
    api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVALPIPE_TEST_ABSENT_KEY", raising=False)
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    with FakeServer() as srv, structlog.testing.capture_logs() as logs:
        backends = [backend(srv, "present"),
                    {**backend(srv, "absent"), "api_key_env": "EVALPIPE_TEST_ABSENT_KEY", "optional": True},
                    {"id": "groq", "backend": "groq", "model": "llama", "base_url": srv.url_for("groq"),
                     "optional": True}]
        loaded = job([{"q": f"question {i}"} for i in range(5)], backends)
        outcome = await run(loaded, tmp_path)
        stats = srv.stats()
    assert outcome.state == "completed"
    assert outcome.skipped_backends == {"absent": "EVALPIPE_TEST_ABSENT_KEY is not set",
                                        "groq": "GROQ_API_KEY is not set"}
    skipped = {e["backend"]: e["reason"] for e in logs if e["event"] == "backend skipped"}
    assert skipped == outcome.skipped_backends
    # The skipped backends' tasks are counted, not lost: 5 ran, 10 were skipped, 15 in all.
    assert outcome.total_tasks == 15 and outcome.counts == {"ok": 5, "error": 0, "skipped": 10}
    manifest = read_manifest(outcome.run_dir)
    assert (manifest.tasks_total, manifest.counts["skipped"], manifest.tasks_skipped) == (15, 10, 10)
    assert manifest.skipped_backends == outcome.skipped_backends
    present_only = {t.task_id for t in expand_job(loaded, backend_ids={"present"})}
    assert_one_row_per_task(outcome, present_only)
    assert stats.requests == 5


async def test_a_required_backend_without_its_key_stops_the_run_before_any_call(
    api_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVALPIPE_TEST_ABSENT_KEY", raising=False)
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    with FakeServer() as srv:
        backends = [backend(srv, "present"), {**backend(srv, "absent"), "api_key_env": "EVALPIPE_TEST_ABSENT_KEY"},
                    {"id": "groq", "backend": "groq", "model": "llama", "base_url": srv.url_for("groq")}]
        loaded = job([{"q": f"question {i}"} for i in range(5)], backends)
        with pytest.raises(JobFileError) as caught:
            await run(loaded, tmp_path)
        assert srv.stats().requests == 0
    lines = str(caught.value).splitlines()
    assert len(lines) == 2
    assert "backends[1]: backend 'absent' cannot run: EVALPIPE_TEST_ABSENT_KEY is not set" in lines[0]
    assert "backends[2]: backend 'groq' cannot run: GROQ_API_KEY is not set" in lines[1]
    assert "optional: true" in lines[1]
    assert not (tmp_path / "results").exists()  # no run directory for a run that cannot start


async def test_a_run_whose_every_backend_is_skipped_says_it_ran_nothing(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVALPIPE_TEST_ABSENT_KEY", raising=False)
    with FakeServer() as srv:
        absent = {**backend(srv, "absent"), "api_key_env": "EVALPIPE_TEST_ABSENT_KEY", "optional": True}
        outcome = await run(job([{"q": "question"}, {"q": "another"}], [absent]), tmp_path)
    assert outcome.executed == 0 and outcome.counts["skipped"] == 2 and outcome.total_tasks == 2
    assert read_manifest(outcome.run_dir).counts == {"ok": 0, "error": 0, "skipped": 2}


# -- scores -------------------------------------------------------------------------------------------


async def test_rows_carry_each_criterion_the_weighted_total_and_the_pass_verdict(
    api_key: str, tmp_path: Path
) -> None:
    scorers = [
        {"type": "contains", "name": "right", "values": ["{{ expected }}"], "weight": 2, "threshold": 1},
        {"type": "regex", "name": "echoes", "pattern": "^Echo"},
        {"type": "json_valid", "name": "json"},
    ]
    items = [{"id": "hit", "q": "capital paris", "expected": "Paris"},
             {"id": "miss", "q": "capital london", "expected": "Rome"}]
    with FakeServer() as srv:
        loaded = job(items, [backend(srv, "b")], scorers=scorers)
        outcome = await run(loaded, tmp_path)
    criteria = ["right", "echoes", "json"]
    found = outputs(outcome, criteria)
    for name in ("score_right", "explanation_right", "score_echoes", "score_json", "explanation_json",
                 "score_total", "passed"):
        assert name in found["parquet"][0] and name in found["csv"][0]
    rows = {r["item_id"]: r for r in found["parquet"]}
    hit, miss = rows["hit"], rows["miss"]
    assert (hit["score_right"], hit["score_echoes"], hit["score_json"]) == (1.0, 1.0, 0.0)
    assert hit["score_total"] == pytest.approx((2 * 1 + 1 + 0) / 4)
    assert hit["passed"] is True  # only `right` has a threshold
    assert (miss["score_right"], miss["score_echoes"]) == (0.0, 1.0)
    assert miss["score_total"] == pytest.approx((0 + 1 + 0) / 4)
    assert miss["passed"] is False
    assert "Rome" in miss["explanation_right"]
    csv_miss = next(r for r in found["csv"] if r["item_id"] == "miss")
    assert (csv_miss["score_total"], csv_miss["passed"]) == ("0.25", "false")


class ExplodingScorer:
    """A Scorer object that breaks its promise never to raise."""

    name = "explodes"

    async def __call__(self, item: Any, messages: Any, response: Any) -> Any:
        raise ZeroDivisionError("scorer bug")


async def test_a_scorer_that_raises_costs_its_score_not_the_row(api_key: str) -> None:
    with FakeServer() as srv:
        loaded = job([{"q": "question"}], [backend(srv, "b")])
        backends, _ = open_backends(loaded, 60.0)
        task = next(expand_job(loaded))
        criteria = [Criterion(ExplodingScorer(), threshold=0.5),
                    Criterion(build_scorer("contains", "echo", {"values": ["Echo"]}))]
        with structlog.testing.capture_logs() as logs:
            row = await execute(task, backends["b"], criteria, run_id="r", cache=NoCache(), timeout_s=10)
        await backends["b"].provider.aclose()
    assert row["status"] == "ok" and row["response"] == "Echo: question"
    assert row["score_explodes"] is None and "ZeroDivisionError: scorer bug" in row["explanation_explodes"]
    assert row["score_echo"] == 1.0 and row["score_total"] == 1.0 and row["passed"] is False  # missing: below it
    assert any(e["event"] == "scorer failed" for e in logs)


class NoCache:
    async def get(self, key: str) -> None:
        return None

    async def put(self, key: str, payload: dict[str, Any]) -> None:
        pass


# -- concurrency and rate limits ------------------------------------------------------------------------


async def sample_in_flight(srv: FakeServer, key: str, coroutine: Any) -> tuple[Any, int]:
    """Run `coroutine` while sampling the server's calls in flight; (its result, the most seen at once)."""
    most = 0
    result: Any = None

    async def body() -> None:
        nonlocal result
        result = await coroutine
        group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(body)
        while True:
            stats = srv.stats(key)
            most = max(most, stats.requests - sum(stats.by_status.values()))
            await anyio.sleep(0.01)
    return result, most


async def test_the_job_wide_concurrency_caps_calls_in_flight_across_backends(api_key: str, tmp_path: Path) -> None:
    with FakeServer() as srv:
        loaded = job([{"q": f"question {i} [[latency:0.2]]"} for i in range(12)],
                     [backend(srv, "a", max_concurrency=8), backend(srv, "b", "anthropic", max_concurrency=8)],
                     concurrency=3)
        started = time.monotonic()
        outcome, most = await sample_in_flight(srv, api_key, run(loaded, tmp_path))
        elapsed = time.monotonic() - started
    assert outcome.counts["ok"] == 24
    assert most == 3
    assert elapsed >= 24 * 0.2 / 3 * 0.95


async def test_a_backends_own_cap_holds_and_the_command_line_concurrency_overrides_the_job(
    api_key: str, tmp_path: Path
) -> None:
    with FakeServer() as srv:
        loaded = job([{"q": f"question {i} [[latency:0.2]]"} for i in range(10)],
                     [backend(srv, "a", max_concurrency=2)], concurrency=1)
        outcome, most = await sample_in_flight(srv, api_key, run(loaded, tmp_path, concurrency=20))
    assert outcome.counts["ok"] == 10
    assert most == 2


async def finish_times(tmp_path: Path, concurrency: int, slow: dict[str, Any], fast: dict[str, Any],
                       items: int = 40) -> tuple[RunOutcome, dict[str, float]]:
    """Run `items` items on both backends; seconds from the start to each backend's last answer.

    More items than the job-wide concurrency: tasks of a held-back backend must not fill the places."""
    loaded = job([{"q": f"question {i}"} for i in range(items)], [slow, fast], concurrency=concurrency)
    started = time.time()
    outcome = await run(loaded, tmp_path, period_s=1.0)
    return outcome, {b: max(r["finished_at"].timestamp() for r in outputs(outcome)["parquet"] if r["backend_id"] == b)
                     - started for b in ("slow", "fast")}


async def test_a_rate_limited_backend_does_not_hold_back_the_others(api_key: str, tmp_path: Path) -> None:
    # `slow` may send 12 requests a second: its 40 calls take 3.3 s. `fast` has no limit and must not wait.
    with FakeServer() as srv:
        outcome, finished = await finish_times(tmp_path, 16, backend(srv, "slow", rpm=12, max_concurrency=8),
                                               backend(srv, "fast", "anthropic"))
    assert outcome.counts["ok"] == 80
    assert finished["slow"] > 3
    assert finished["fast"] < 1


async def test_a_retry_after_pauses_only_its_own_backend(api_key: str, tmp_path: Path) -> None:
    # The first call to `slow` gets a 429 asking for a 2 s pause; `fast`, on another server, answers in
    # 0.1 s: 40 calls, 8 at a time, take 0.5 s if nothing holds them back.
    with FakeServer(retry_after_s=2.0) as paused, FakeServer(latency_s=0.1) as srv:
        paused.set_fault("rate_limit_retry_after", times=1)
        outcome, finished = await finish_times(tmp_path, 16, backend(paused, "slow", max_concurrency=8),
                                               backend(srv, "fast", "anthropic"))
    assert outcome.counts["ok"] == 80
    assert finished["slow"] >= 2
    assert finished["fast"] < 1.5


async def test_calls_waiting_out_a_pause_hold_no_job_wide_place(api_key: str, tmp_path: Path) -> None:
    # As above with a job-wide cap of 4: `slow`'s calls waiting out the pause take 3 of the 4 places,
    # and `fast` would make its 20 calls one at a time (2 s) instead of 4 at a time (0.5 s).
    with FakeServer(retry_after_s=2.0) as paused, FakeServer(latency_s=0.1) as srv:
        paused.set_fault("rate_limit_retry_after", times=1)
        outcome, finished = await finish_times(tmp_path, 4, backend(paused, "slow", max_concurrency=8),
                                               backend(srv, "fast", "anthropic"), items=20)
    assert outcome.counts["ok"] == 40
    assert finished["fast"] < 1.5  # 0.5 s with 4 places, 2 s if held to one


def pace(stamps: Sequence[float], window_s: float, weight: float = 1) -> float:
    """The steady pace per window from the first stamp to the last."""
    return (len(stamps) - 1) * weight * window_s / (max(stamps) - min(stamps))


async def test_the_runner_keeps_to_the_request_rate_without_a_429_at_nearly_the_full_rate(
    api_key: str, tmp_path: Path
) -> None:
    # The limiter keeps 2% of the window as headroom for the time between a call's admission and its
    # arrival. A run's first call also builds the provider's HTTP client after its admission (50 to
    # 200 ms on a loaded machine), so the window is long enough for 2% to cover that: 160 ms.
    rpm, window_s, tasks = 80, 8.0, 100
    with FakeServer(rpm=rpm, window_s=window_s) as srv:
        loaded = job([{"q": f"question {i}"} for i in range(tasks)], [backend(srv, "b", rpm=rpm, max_concurrency=8)])
        outcome = await run(loaded, tmp_path, period_s=window_s)
        stats = srv.stats(api_key)
    answered = sorted(r["finished_at"].timestamp() for r in outputs(outcome)["parquet"])
    achieved = pace(answered[1:], window_s)  # from the second call: the first one also opened the connection
    print(f"rpm: {achieved:.2f} of {rpm} per window = {achieved / rpm:.3f}")
    assert outcome.counts["ok"] == tasks
    assert stats.by_status == {200: tasks}
    assert achieved >= 0.95 * rpm


async def test_the_runner_keeps_to_the_token_rate_without_a_429_at_nearly_the_full_rate(
    api_key: str, tmp_path: Path
) -> None:
    # Ten words in, "Echo:" and ten words out: 21 tokens a call, estimated as 10 + max_tokens 11.
    # A two-second window: late wake-ups on a busy 2-core machine cost less of it than of one second.
    tpm, window_s, tasks, tokens = 2000, 2.0, 120, 21
    words = " ".join(f"w{i}" for i in range(9))
    with FakeServer(tpm=tpm, window_s=window_s) as srv:
        loaded = job([{"q": f"{words} q{i}"} for i in range(tasks)], [backend(srv, "b", tpm=tpm, max_concurrency=8)],
                     parameters={"sets": [{"name": "fit", "max_tokens": 11}]})
        outcome = await run(loaded, tmp_path, period_s=window_s)
        stats = srv.stats(api_key)
    answered = sorted(r["finished_at"].timestamp() for r in outputs(outcome)["parquet"])
    achieved = pace(answered[1:], window_s, tokens)
    print(f"tpm: {achieved:.0f} of {tpm} per window = {achieved / tpm:.3f}")
    assert outcome.counts["ok"] == tasks
    assert stats.by_status == {200: tasks} and stats.input_tokens + stats.output_tokens == tasks * tokens
    assert achieved >= 0.95 * tpm
