"""A child Python process killed with SIGKILL at a moment its own output chooses (crash-safety tests)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from evalpipe.pipeline.output.store import STORE_FILENAME


def run_until_killed(script: str, *args: str, stop: Callable[[str], bool]) -> list[str]:
    """Run `script` with `args`, read its output lines until `stop(line)` says so, SIGKILL it; the lines read."""
    process = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    lines: list[str] = []
    try:
        for line in process.stdout:
            lines.append(line.strip())
            if stop(lines[-1]):
                break
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=10)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    return lines


# -- `evalpipe run` in a child process, against a fake server (crash, signal, lock and disk-full tests) --

KEY_VARIABLE = "EVALPIPE_TEST_CHILD_KEY"


def child_job(name: str, concurrency: int, extra: str = "") -> str:
    """A job file's text for `evalpipe run` in a child process: one OpenAI backend at the base URL `URL`
    (replace it), keyed by `KEY_VARIABLE`, over `items.jsonl` beside it; `extra` is more YAML at the end."""
    return f"""\
name: {name}
dataset:
  path: items.jsonl
prompt:
  user: "{{{{ question }}}}"
backends:
  - id: fake
    backend: openai
    model: gpt-4o-mini
    base_url: URL
    api_key_env: {KEY_VARIABLE}
    max_concurrency: {concurrency}
concurrency: {concurrency}
{extra}"""


def write_items(directory: Path, tasks: int, question: str = "question number {i}") -> None:
    """`items.jsonl` in `directory`: `tasks` items with ids q0000... and `question` formatted with `i`."""
    with (directory / "items.jsonl").open("w", encoding="utf-8") as file:
        for i in range(tasks):
            file.write(json.dumps({"id": f"q{i:04d}", "question": question.format(i=i)}) + "\n")


def run_command(job: Path, run_dir: Path) -> list[str]:
    """`evalpipe run JOB --resume RUN_DIR` as a child's command line."""
    return [sys.executable, "-m", "evalpipe.cli", "run", str(job), "--resume", str(run_dir)]


def child_env(key: str) -> dict[str, str]:
    """This process's environment with the child job's key set."""
    return {**os.environ, KEY_VARIABLE: key}


def start_run(job: Path, run_dir: Path, key: str) -> subprocess.Popen[str]:
    """`evalpipe run JOB --resume RUN_DIR` started in a child process, its output piped."""
    return subprocess.Popen(run_command(job, run_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=child_env(key))


def rows_in_store(run_dir: Path) -> int:
    """Rows a child's run has committed to its run store so far (0 before the store exists)."""
    path = run_dir / STORE_FILENAME
    if not path.exists():
        return 0
    connection = sqlite3.connect(path, timeout=10)
    try:
        return int(connection.execute("SELECT COUNT(*) FROM rows").fetchone()[0])
    except sqlite3.OperationalError:  # the tables are being created
        return 0
    finally:
        connection.close()
