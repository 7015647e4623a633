"""The shipped tool-use job: it validates, runs against the fake server, and scores each item as its
scripted calls deserve; and the fake server starts as the job's comment says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evalpipe.analysis.runs import open_run
from evalpipe.pipeline.job.load import load_job
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.testing import FakeServer

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
SHIPPED_URL = "http://127.0.0.1:8000/openai/v1"


@pytest.fixture
def tools_job(tmp_path: Path, fake_server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """jobs/tools.yaml and its data in a copy of the project layout, pointed at the test's fake server."""
    monkeypatch.setenv("EVALPIPE_FAKE_KEY", "sk-tools-job")
    (tmp_path / "jobs").mkdir()
    shutil.copytree(ROOT / "data" / "images", tmp_path / "data" / "images")
    shutil.copy(ROOT / "data" / "tools.jsonl", tmp_path / "data" / "tools.jsonl")
    text = (ROOT / "jobs" / "tools.yaml").read_text(encoding="utf-8")
    assert SHIPPED_URL in text
    job = tmp_path / "jobs" / "tools.yaml"
    job.write_text(text.replace(SHIPPED_URL, fake_server.url_for("openai")), encoding="utf-8")
    return job


async def test_the_shipped_tools_job_runs_against_the_fake_server_and_scores_each_call(
    tools_job: Path, tmp_path: Path, fake_server: FakeServer,
) -> None:
    loaded = load_job(tools_job)
    assert [tool.name for tool in loaded.tools] == ["get_weather", "calculate", "lookup"]
    outcome = await run_job(loaded, RunOptions(out_root=tmp_path / "results", handle_signals=False))
    rows = {row["item_id"]: row for row in open_run(outcome.run_dir).scan().collect().to_dicts()}

    assert outcome.counts["ok"] == 8 == len(rows)
    scores = {item: (row["score_right_calls"], row["score_valid_arguments"], row["passed"])
              for item, row in rows.items()}
    assert scores == {
        "weather-oslo": (1.0, 1.0, True),
        "weather-two-cities": (1.0, 1.0, True),  # two parallel calls, in the other order than expected
        "weather-wrong-city": (0.0, 1.0, False),  # a valid call, of the wrong city
        "weather-long-forecast": (1.0, 0.0, False),  # the right city, but days over the schema's maximum
        "weather-malformed": (0.0, 0.0, False),  # arguments that are not JSON
        "calculator-tip": (1.0, 1.0, True),
        "lookup-book": (1.0, 1.0, True),
        "lookup-pixel-colour": (1.0, 1.0, True),
    }
    two = json.loads(rows["weather-two-cities"]["tool_calls"])
    assert [(c["name"], c["arguments"]) for c in two] == [("get_weather", {"city": "Lima"}),
                                                           ("get_weather", {"city": "Quito"})]
    assert "30 is greater than the maximum of 14" in rows["weather-long-forecast"]["explanation_valid_arguments"]
    assert fake_server.stats("sk-tools-job").succeeded == 8


def test_the_fake_server_command_takes_the_port_option_the_job_documents() -> None:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "evalpipe.cli", "fake-server", "--port", "0"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment)
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
    finally:
        process.terminate()
        _, errors = process.communicate(timeout=10)
    assert first.startswith("http://127.0.0.1:"), errors
