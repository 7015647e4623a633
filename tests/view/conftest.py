"""A results directory for the viewer tests (real runs of a small job against the fake provider server),
the viewer serving it on a free loopback port, and a headless Chromium that logs the console."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import uvicorn
from selenium.webdriver.remote.webdriver import WebDriver

from evalpipe.pipeline.job.load import prepare_job
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.testing import FakeServer
from evalpipe.view.app import create_app
from tests.browser import headless_chromium

# Markup in an answer must show as text, never run: a console error would fail the browser tests.
HOSTILE_ANSWER = "<b>bold</b> answer</td></tr><script>console.error('injected')</script><img src=x onerror=alert(1)>"
KEY_ENV = "EVALPIPE_TEST_VIEW_KEY"


def job_spec(fake_server: FakeServer, name: str, wrong: int = 0) -> JobSpec:
    """2 backends × 2 temperatures × 7 items; the first `wrong` plain items answer without "answer"."""
    items = [{"id": f"q{i}", "q": "[[reply:no idea]]" if i < wrong else f"say the answer {i}"} for i in range(4)]
    items += [{"id": "hostile", "q": f"[[reply:{HOSTILE_ANSWER}]]"},
              {"id": "broken", "q": "too long [[fault:context_length]]"},
              {"id": "refused", "q": "[[shape:refusal]] say the answer"}]
    return JobSpec.model_validate({
        "name": name,
        "dataset": {"items": items},
        "prompt": {"system": "You answer briefly.", "user": "{{ q }}"},
        "backends": [
            {"id": "oa", "backend": "openai", "model": "gpt-test", "base_url": fake_server.url_for("openai"),
             "api_key_env": KEY_ENV, "price_input_per_1m": 1.0, "price_output_per_1m": 2.0},
            {"id": "an", "backend": "anthropic", "model": "claude-test",
             "base_url": fake_server.url_for("anthropic"), "api_key_env": KEY_ENV},
        ],
        "parameters": {"grid": {"temperature": [0.2, 1.0]}},
        "scorers": [{"type": "contains", "name": "says_answer", "values": ["answer"], "threshold": 1},
                    {"type": "contains", "name": "echoes", "values": ["Echo"], "threshold": 1}],
    })


def run_once(root: Path, fake_server: FakeServer, name: str = "viewer-test", wrong: int = 0) -> Path:
    """Run the job once under `root`/`name`/; returns the run directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_ENV, "sk-view-tests")
        outcome = anyio.run(run_job, prepare_job(job_spec(fake_server, name, wrong)),
                            RunOptions(out_root=root, handle_signals=False, quiet=True))
    assert outcome.state == "completed"
    return outcome.run_dir


@dataclass(frozen=True)
class Results:
    """The results directory and its two runs of `viewer-test` (the second with two items gone wrong)."""

    root: Path
    first: Path
    second: Path


@pytest.fixture(scope="session")
def results(tmp_path_factory: pytest.TempPathFactory, fake_server: FakeServer) -> Results:
    """Tests must not modify these runs; a test may add runs of other jobs."""
    root = tmp_path_factory.mktemp("results")
    first = run_once(root, fake_server)
    time.sleep(1.1)  # run ids and start times are to the second
    return Results(root, first, run_once(root, fake_server, wrong=2))


@pytest.fixture(scope="session")
def viewer(results: Results) -> Iterator[str]:
    """The viewer over `results`, in a background thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(results.root), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the viewer did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium logging the console and the network."""
    with headless_chromium(network_log=True) as driver:
        yield driver
