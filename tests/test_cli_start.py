"""The command for a newcomer: `--version`, `init`, `run --limit`, `runs` and `latest`, a warning when the
concurrency asked for cannot be reached, keys from `.env`, the progress line, plurals and table widths."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from evalpipe import __version__
from evalpipe.pipeline.running.outcome import RunProgress
from evalpipe.progress import progress_text
from evalpipe.testing import FakeServer
from tests.test_cli import (
    GOOD_JOB,
    KEY_VARIABLE,
    cli,
    no_calls,
    restore_logging,  # noqa: F401  (an autouse fixture)
    words,
    write_job,
)
from tests.test_cli import server as server  # noqa: F401  (a fixture)

REPO = Path(__file__).resolve().parents[1]


def command(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed command in a fresh process (for what a process keeps: its environment)."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "evalpipe.cli", *map(str, args)], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=120)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli(capsys, "--version")
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"evalpipe {__version__}"


def test_init_writes_a_job_that_validates_and_never_overwrites(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "init", tmp_path / "start")
    assert code == 0 and "wrote" in out
    job = tmp_path / "start" / "job.yaml"
    assert job.is_file() and (tmp_path / "start" / "items.jsonl").is_file()
    code, out, err = cli(capsys, "validate", job)
    assert code == 0, err
    assert "valid — 3 items, 1 of 1 backend can run here, 1 parameter set, 1 repeat" in out
    before = job.read_text()
    code, _, err = cli(capsys, "init", tmp_path / "start")
    assert code == 2 and "already exists" in err
    assert job.read_text() == before


def test_run_limit_runs_the_first_items_only(server: FakeServer, tmp_path: Path,  # noqa: F811
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "run", write_job(tmp_path, server), "--out", tmp_path / "r", "--limit", "1")
    assert code == 0, err
    assert server.stats().requests == 2  # one item × two parameter sets, of two items
    code, out, _ = cli(capsys, "run", write_job(tmp_path, server), "--dry-run", "--limit", "1")
    assert "2 tasks (1 item × 2 parameter sets × 1 repeat per backend)" in words(out)


def test_runs_lists_runs_and_latest_stands_for_the_newest(server: FakeServer, tmp_path: Path,  # noqa: F811
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(tmp_path, server)
    results = tmp_path / "results"
    assert cli(capsys, "run", job, "--out", results, "--limit", "1")[0] == 0
    assert cli(capsys, "run", job, "--out", results)[0] == 0
    # In start order, to the microsecond: both may start within the same second.
    first, second = sorted((p.name for p in (results / "cli-test").iterdir()),
                           key=lambda name: json.loads((results / "cli-test" / name / "manifest.json").read_text())
                           ["created_at"])
    code, out, _ = cli(capsys, "runs", results)
    assert code == 0 and first in out and second in out
    assert f"{second}  (latest)" in out and f"{first}  (latest)" not in out
    latest = results / "cli-test" / "latest"
    code, out, err = cli(capsys, "summary", latest, "--format", "csv")
    assert code == 0, err
    assert "calm" in out and ",2," in out  # the second run's two items, not the first run's one
    code, out, err = cli(capsys, "compare", results / "cli-test" / first, latest, "--format", "csv")
    assert code == 0, err
    code, out, err = cli(capsys, "history", latest, "--format", "csv")
    assert code == 0 and first in out and second in out, err
    code, out, err = cli(capsys, "report", latest, "-o", tmp_path / "r.html")
    assert code == 0 and (tmp_path / "r.html").is_file(), err
    calls = server.stats().requests
    code, out, err = cli(capsys, "run", job, "--resume", latest)
    assert code == 0 and second in out, err
    assert server.stats().requests == calls  # every task of the latest run had finished
    code, _, err = cli(capsys, "summary", tmp_path / "nowhere" / "latest")
    assert code == 2 and "no latest run" in err


def test_concurrency_above_the_backends_limits_is_said(server: FakeServer, tmp_path: Path,  # noqa: F811
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    job = write_job(tmp_path, server, GOOD_JOB.replace("name: cli-test\n", "name: cli-test\nconcurrency: 16\n"))
    code, _, err = cli(capsys, "validate", job)
    assert code == 0
    assert "warning: concurrency 16 is more than the backends allow in flight together (8; " \
           "max_concurrency fake: 8 (the default))" in words(err)
    code, _, err = cli(capsys, "run", write_job(tmp_path, server), "--dry-run", "--concurrency", "12")
    assert "warning: --concurrency 12 is more than" in err
    code, _, err = cli(capsys, "validate", write_job(tmp_path, server))
    assert "warning" not in err  # the default job-wide cap is not a request
    assert no_calls(server)


def test_keys_come_from_dotenv_without_overriding_the_environment(server: FakeServer,  # noqa: F811
                                                                  tmp_path: Path) -> None:
    job = write_job(tmp_path, server)
    (tmp_path / ".env").write_text(f'# keys\nexport {KEY_VARIABLE}="from-dotenv"\n', encoding="utf-8")
    environment = {k: v for k, v in os.environ.items() if k != KEY_VARIABLE}
    done = subprocess.run([sys.executable, "-m", "evalpipe.cli", "run", str(job), "--out", "a"], cwd=tmp_path,
                          env={**environment, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert server.stats(api_key="from-dotenv").requests == 4
    assert "from-dotenv" not in done.stdout + done.stderr
    done = command("run", job, "--out", "b", cwd=tmp_path, env={KEY_VARIABLE: "from-environment"})
    assert done.returncode == 0, done.stderr
    assert server.stats(api_key="from-environment").requests == 4  # the variable already set wins
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-dotenv-canary-123456\n", encoding="utf-8")
    without = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    done = subprocess.run([sys.executable, "-m", "evalpipe.cli", "backends"], cwd=tmp_path,
                          env={**without, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert "set (OPENAI_API_KEY)" in done.stdout and "sk-dotenv-canary" not in done.stdout + done.stderr


def test_the_progress_line_shows_eta_pass_rate_and_the_last_error(server: FakeServer, tmp_path: Path,  # noqa: F811
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    server.set_fault("not_found", times=1)  # the first call fails for good, the others answer
    graded = GOOD_JOB.replace('values: ["{{ expected }}"]', 'values: ["{{ expected }}"]\n    threshold: 1')
    code, _, err = cli(capsys, "run", write_job(tmp_path, server, graded), "--out", tmp_path / "r")
    assert code == 0, err
    final = [line for line in err.splitlines() if line.startswith("4/4 done")]
    assert final, err
    assert "/3 passed (" in final[0] and "1 error (last: NotFoundError)" in final[0], final


def test_the_progress_line_labels_its_estimate() -> None:
    progress = RunProgress(total=40, done=10, errors=0, started=100.0, scored=10, passed=7)
    assert progress_text(progress, now=110.0).startswith("10/40 done · ETA 0:00:30 · 7/10 passed (70%) · 0 errors")
    resumed = RunProgress(total=40, done=30, already_done=20, started=100.0)  # 10 in this session's 10 s
    assert "ETA 0:00:10" in progress_text(resumed, now=110.0)


def test_plan_keeps_long_model_names_whole(server: FakeServer, tmp_path: Path,  # noqa: F811
                                           capsys: pytest.CaptureFixture[str]) -> None:
    model = "a-provider/some-very-long-model-name-with-a-date-2025-06-01-preview"
    code, out, _ = cli(capsys, "plan", write_job(tmp_path, server, GOOD_JOB.replace("gpt-4o-mini", model)))
    assert code == 0 and model in out


def test_fake_server_takes_its_options_after_the_subcommand(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "evalpipe.cli", "fake-server", "--port", str(port)],
                               cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == f"http://127.0.0.1:{port}"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=20)
