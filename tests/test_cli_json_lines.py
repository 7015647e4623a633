"""`--log-format json`, before or after the subcommand: every line the command writes on stderr is a JSON
object (warnings, skipped backends, the progress line, budget lines, errors, a bad option), while stdout keeps
the tables asked for."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from evalpipe.testing import FakeServer
from tests.test_cli import GOOD_JOB, restore_logging, write_job  # noqa: F401  (an autouse fixture)
from tests.test_cli import server as server  # noqa: F401  (a fixture)
from tests.test_cli_start import REPO, command

# Warnings at every stage: a concurrency the backends cannot reach, a swept seed a backend never sends, an
# optional backend without its key.
NOISY_JOB = GOOD_JOB.replace("name: cli-test\n", "name: cli-test\nconcurrency: 16\n").replace(
    "parameters:", "  - id: absent\n    backend: anthropic\n    model: claude-test\n    base_url: URL\n"
                   "    api_key_env: EVALPIPE_TEST_JSON_ABSENT\n    optional: true\nparameters:", 1).replace(
    "max_tokens: 8}", "max_tokens: 8, seed: 1}", 1).replace("max_tokens: 8}", "max_tokens: 8, seed: 2}", 1)
OVER_BUDGET_JOB = GOOD_JOB + "budget:\n  max_tokens: 12\n"


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line of `stderr` as JSON; fails on the first that is not."""
    events = []
    for line in stderr.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line on stderr: {line!r}\n--- all of stderr:\n{stderr}")
        assert isinstance(event, dict) and event.get("event") and event.get("level"), line
        events.append(event)
    return events


def said(events: list[dict[str, Any]], text: str, level: str | None = None) -> list[dict[str, Any]]:
    return [e for e in events if text in str(e["event"]) and (level is None or e["level"] == level)]


@pytest.mark.parametrize("where", ["before", "after"])
def test_every_stderr_line_is_json_before_or_after_the_subcommand(
        where: str, server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.delenv("EVALPIPE_TEST_JSON_ABSENT", raising=False)
    flag = ["--log-format", "json"] if where == "before" else ["--log-format=json"]
    job = write_job(tmp_path, server, NOISY_JOB.replace("URL", server.url_for("openai")))

    def run(*args: str | Path, code: int) -> tuple[str, list[dict[str, Any]]]:
        argv = [*flag, *args] if where == "before" else [*args, *flag]
        done = command(*argv, cwd=tmp_path)
        assert done.returncode == code, done.stderr
        return done.stdout, json_lines(done.stderr)

    out, events = run("validate", job, code=0)
    assert "valid — 2 items" in out  # stdout as it was
    assert said(events, "concurrency 16 is more than the backends allow", "warning")
    assert said(events, "backend absent (anthropic) ignores seed", "warning")
    assert said(events, "skipped backend absent (optional): EVALPIPE_TEST_JSON_ABSENT is not set", "warning")

    out, events = run("run", job, "--out", tmp_path / "results", code=0)
    assert "run " in out and "completed" in out
    progress = said(events, "progress")
    assert progress and progress[-1]["done"] == progress[-1]["total"] == 4 and progress[-1]["errors"] == 0
    assert said(events, "skipped backend absent (optional)", "warning")

    over = write_job(tmp_path, server, OVER_BUDGET_JOB, name="over.yaml")
    out, events = run("plan", over, code=4)
    assert "total" in out
    assert said(events, "over budget: ", "warning")
    out, events = run("run", over, "--out", tmp_path / "results", code=4)
    assert said(events, "stopped at the budget (max_tokens 12)", "warning")

    _, events = run("validate", tmp_path / "missing.yaml", code=2)
    assert said(events, "missing.yaml", "error")
    _, events = run("run", job, "--no-such-option", code=2)
    assert said(events, "unrecognized arguments: --no-such-option", "error")


def test_without_json_the_lines_stay_for_people(server: FakeServer, tmp_path: Path) -> None:  # noqa: F811
    done = command("validate", write_job(tmp_path, server, NOISY_JOB.replace("URL", server.url_for("openai"))),
                   "-v", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "warning: concurrency 16 is more than" in done.stderr and "{" not in done.stderr


def test_ctrl_c_lines_are_json_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALPIPE_TEST_CLI_KEY", "sk-json-lines")
    with FakeServer(latency_s=60) as slow:  # every call in flight until cancelled
        job = write_job(tmp_path, slow)
        process = subprocess.Popen(
            [sys.executable, "-m", "evalpipe.cli", "run", str(job), "--out", str(tmp_path / "r"), "--log-format",
             "json"], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60
            while slow.stats().requests < 4 and time.monotonic() < deadline:
                time.sleep(0.1)
            process.send_signal(signal.SIGINT)  # stop starting tasks, wait for the calls in flight
            assert process.stderr is not None
            lines = []
            for line in process.stderr:
                lines.append(line)
                if "waiting for" in line:
                    break
            process.send_signal(signal.SIGINT)  # cancel them
            _, rest = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 130
    events = json_lines("".join(lines) + rest)
    assert said(events, "waiting for 4 calls in flight", "warning")
    assert said(events, "interrupted: resume with  evalpipe run")
