"""What `evalpipe` says and exits with when a job cannot run as written: a backend without its key or
model file (2, unless optional), nothing left to run (3), a run or plan over the budget (4), an error
rate above `--fail-on-error` (1). A nightly job must not pass with most of its backends missing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from evalpipe.testing import FakeServer
from tests.test_cli import (
    CANARY,
    GOOD_JOB,
    KEY_VARIABLE,
    cli,
    no_calls,
    restore_logging,  # noqa: F401  (an autouse fixture)
    write_job,
)

ABSENT_KEY = "EVALPIPE_TEST_CLI_ABSENT"


def with_backend(entry: str) -> str:
    """GOOD_JOB with one more backend (YAML lines of a list entry) after its fake one."""
    return GOOD_JOB.replace("parameters:", entry + "parameters:", 1)


def absent_key_backend(srv: FakeServer, optional: bool = False) -> str:
    return ("  - id: absent\n    backend: anthropic\n    model: claude-test\n"
            f"    base_url: {srv.url_for('anthropic')}\n    api_key_env: {ABSENT_KEY}\n"
            + ("    optional: true\n" if optional else ""))


def missing_model_backend(path: Path, optional: bool = False) -> str:
    return f"  - id: gemma\n    backend: local\n    model: {path}\n" + ("    optional: true\n" if optional else "")


def run_args(command: str, tmp_path: Path) -> list[str | Path]:
    return ["--out", tmp_path / "results"] if command == "run" else []


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv(KEY_VARIABLE, CANARY)
    with FakeServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_absent_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ABSENT_KEY, raising=False)
    monkeypatch.delenv("GROQ_API_KEY", raising=False)


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_backends_without_their_key_are_errors_one_line_each_and_nothing_is_called(
    command: str, server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    groq = f"  - id: groq\n    backend: groq\n    model: llama\n    base_url: {server.url_for('groq')}\n"
    job = write_job(tmp_path, server, with_backend(absent_key_backend(server) + groq))
    code, out, err = cli(capsys, command, job, *run_args(command, tmp_path))
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert lines[0].startswith("error: ") and len(lines) == 2, err
    assert "job.yaml:15: backends[1]: backend 'absent' cannot run: EVALPIPE_TEST_CLI_ABSENT is not set" in lines[0]
    assert "job.yaml:20: backends[2]: backend 'groq' cannot run: GROQ_API_KEY is not set" in lines[1]
    assert all("optional: true" in line for line in lines)
    assert no_calls(server) and not (tmp_path / "results").exists()


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_a_local_model_file_that_is_not_there_is_an_error(
    command: str, server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "models" / "gemma-typo.gguf"
    job = write_job(tmp_path, server, with_backend(missing_model_backend(model)))
    code, _, err = cli(capsys, command, job, *run_args(command, tmp_path))
    assert code == 2
    assert f"backends[1]: backend 'gemma' cannot run: model file not found: {model}; fix the path" in err
    assert no_calls(server) and not (tmp_path / "results").exists()


def test_optional_backends_that_cannot_run_are_skipped_with_a_line_and_counted(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "absent.gguf"
    job = write_job(tmp_path, server, with_backend(absent_key_backend(server, optional=True)
                                                   + missing_model_backend(model, optional=True)))
    code, out, err = cli(capsys, "validate", job)
    assert code == 0 and "1 of 3 backends can run here" in out
    assert "skipped backend absent (optional): EVALPIPE_TEST_CLI_ABSENT is not set" in err.splitlines()
    assert f"skipped backend gemma (optional): model file not found: {model}" in err.splitlines()
    code, out, err = cli(capsys, "run", job, "--out", tmp_path / "results")
    assert code == 0
    table = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if "│" in line]
    assert ["12", "4", "0", "8"] in [cells[:4] for cells in table], out  # tasks, ok, errors, skipped
    manifest = json.loads(next((tmp_path / "results").glob("*/*/manifest.json")).read_text())
    assert manifest["counts"] == {"ok": 4, "error": 0, "skipped": 8} and manifest["tasks_total"] == 12
    assert set(manifest["skipped_backends"]) == {"absent", "gemma"}
    assert server.stats().requests == 4


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
def test_a_job_whose_every_backend_is_skipped_exits_3(
    command: str, server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    only_absent = GOOD_JOB.replace("    api_key_env: EVALPIPE_TEST_CLI_KEY\n",
                                   f"    api_key_env: {ABSENT_KEY}\n    optional: true\n")
    code, _, err = cli(capsys, command, write_job(tmp_path, server, only_absent), *run_args(command, tmp_path))
    assert code == 3
    assert "skipped backend fake (optional)" in err and "nothing to run" in err
    assert no_calls(server)


def test_fail_on_error_exits_1_when_the_error_rate_is_above_the_rate(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, server)
    server.set_fault("not_found")  # every call fails for good: 4 error rows of 4
    code, _, err = cli(capsys, "run", job, "--out", tmp_path / "a", "--fail-on-error", "0.5")
    assert code == 1 and "error rate 100.0% (4 of 4 rows) is above --fail-on-error 0.5" in err
    code, _, _ = cli(capsys, "run", job, "--out", tmp_path / "b", "--fail-on-error", "1")
    assert code == 0  # not above
    code, _, _ = cli(capsys, "run", job, "--out", tmp_path / "c")
    assert code == 0  # no gate asked for


@pytest.mark.parametrize("command", [["plan"], ["run", "--dry-run"]])
def test_plan_says_when_its_projection_exceeds_the_budget_and_exits_4(
    command: list[str], server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, server, GOOD_JOB + "budget:\n  max_cost_usd: 0.000001\n  max_tokens: 20\n")
    code, _, err = cli(capsys, *command, job)
    assert code == 4
    lines = [line for line in err.splitlines() if line.startswith("over budget: ")]
    assert len(lines) == 2
    assert "exceeds the budget max_cost_usd $1e-06 (about 0 of 4 tasks fit)" in lines[0]
    assert "exceed the budget max_tokens 20 (about 0 of 4 tasks fit)" in lines[1]
    assert no_calls(server)
    fits = write_job(tmp_path, server, GOOD_JOB + "budget:\n  max_cost_usd: 1\n", name="fits.yaml")
    code, _, err = cli(capsys, "plan", fits)
    assert code == 0 and "over budget" not in err


def test_a_run_stopped_by_its_budget_exits_4_and_the_manifest_says_so(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, server, GOOD_JOB + "concurrency: 1\nbudget:\n  max_tokens: 40\n")
    code, _, err = cli(capsys, "run", job, "--out", tmp_path / "results")
    assert code == 4 and "stopped at the budget (max_tokens 40): 2 of 4 tasks ran" in err
    manifest = json.loads(next((tmp_path / "results").glob("*/*/manifest.json")).read_text())
    assert manifest["state"] == "budget_exhausted" and manifest["budget"]["max_tokens"] == 40
    assert 0 < manifest["counts"]["ok"] < 4 and manifest["budget"]["spent_tokens"] <= 40
    assert server.stats().input_tokens + server.stats().output_tokens <= 40


def test_a_judged_run_stops_before_its_spend_could_cross_the_budget_and_exits_4(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALPIPE_TEST_CLI_JUDGE_KEY", "sk-cli-judge")
    job = yaml.safe_load(GOOD_JOB.replace("URL", server.url_for("openai")))
    job["dataset"]["items"] = [{"id": f"q{i}", "question": f"What is {i} + {i}?"} for i in range(10)]
    job["backends"][0]["max_concurrency"] = 2
    # The judge is what costs: about $0.06 a call against $0.00001 for an answer.
    job["judges"] = [{"id": "judge", "backend": "anthropic", "model": "claude-test",
                      "base_url": server.url_for("anthropic"), "api_key_env": "EVALPIPE_TEST_CLI_JUDGE_KEY",
                      "price_input_per_1m": 1000, "price_output_per_1m": 2000}]
    job["scorers"] = [{"type": "llm_judge", "backend": "judge", "max_tokens": 8, "scale": [0, 10],
                       "rubric": "Is it right? [[reply:Score: 8/10 because it echoes]]"}]
    job["budget"] = {"max_cost_usd": 0.2}
    path = tmp_path / "judged.yaml"
    path.write_text(yaml.safe_dump(job), encoding="utf-8")
    code, _, err = cli(capsys, "run", path, "--out", tmp_path / "results")
    answers, judge = server.stats(CANARY), server.stats("sk-cli-judge")
    spent = (answers.input_tokens * 1.0 + judge.input_tokens * 1000.0 + judge.output_tokens * 2000.0) / 1e6
    assert code == 4 and "stopped at the budget (max_cost_usd 0.2)" in err
    assert 0 < judge.requests < 20 and judge.requests == answers.requests
    assert spent <= 0.2, spent  # as the server counted it
