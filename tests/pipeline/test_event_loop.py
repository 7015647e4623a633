"""`evalpipe run` runs on uvloop's event loop when it is installed (the `fast` extra), unless
EVALPIPE_UVLOOP=0 asks for asyncio's; the run's log says which one ran it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from evalpipe.pipeline.output.store import STORE_FILENAME
from evalpipe.pipeline.running.event_loop import UVLOOP_VARIABLE, loop_options, uvloop_available
from evalpipe.testing import FakeServer
from tests.pipeline.killing import child_env, child_job, rows_in_store, run_command, write_items

TASKS = 12


def test_uvloop_is_asked_for_when_installed_and_not_turned_off() -> None:
    assert loop_options({}) == ({"use_uvloop": True} if uvloop_available() else {})
    for off in ("0", "false", "OFF", " no "):
        assert loop_options({UVLOOP_VARIABLE: off}) == {}


@pytest.mark.parametrize("setting", ["", "0"])
def test_a_run_says_its_loop_and_completes_on_it(setting: str, tmp_path: Path) -> None:
    expected = "uvloop" if setting == "" and uvloop_available() else "asyncio"
    write_items(tmp_path, TASKS)
    job = tmp_path / "job.yaml"
    run_dir = tmp_path / "run"
    with FakeServer() as server:
        job.write_text(child_job("loop-test", 4).replace("URL", server.url_for("openai")), encoding="utf-8")
        done = subprocess.run(run_command(job, run_dir), capture_output=True, text=True, timeout=120,
                              env={**child_env("sk-loop-test"), UVLOOP_VARIABLE: setting})
    assert done.returncode == 0, done.stderr
    assert (run_dir / STORE_FILENAME).exists() and rows_in_store(run_dir) == TASKS
    events = [json.loads(line) for line in (run_dir / "run.log.jsonl").read_text(encoding="utf-8").splitlines()]
    started = [event for event in events if event.get("event") == "run started"]
    assert [event["event_loop"] for event in started] == [expected]
