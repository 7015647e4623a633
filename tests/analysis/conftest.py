"""Run directories for the analysis tests: a real run of a small sweep against the fake provider
server (the runner's own output, errors included), and synthetic runs with planted truths."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from evalpipe.analysis.synthetic import SyntheticRun, write_synthetic_run
from evalpipe.pipeline.job.load import prepare_job
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.testing import FakeServer

# Markup in an answer must show as text in the report, never run: a console error would fail the test.
HOSTILE_ANSWER = "<b>bold</b> answer</td></tr><script>console.error('injected')</script><img src=x onerror=alert(1)>"


@pytest.fixture(scope="session")
def hostile_answer() -> str:
    """The answer one item of `real_run` gets."""
    return HOSTILE_ANSWER


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory, fake_server: FakeServer) -> Iterator[Path]:
    """A finished sweep: 2 backends × 4 grid points × 6 items, one item failing with a non-retried error."""
    key_env = "EVALPIPE_TEST_ANALYSIS_KEY"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(key_env, "sk-analysis-tests")
        items = [{"id": f"q{i}", "q": f"say the answer {i}"} for i in range(4)]
        items.append({"id": "hostile", "q": f"[[reply:{HOSTILE_ANSWER}]]"})
        items.append({"id": "broken", "q": "too long [[fault:context_length]]"})
        spec = JobSpec.model_validate({
            "name": "analysis-test",
            "dataset": {"items": items},
            "prompt": {"user": "{{ q }}"},
            "backends": [
                {"id": "oa", "backend": "openai", "model": "gpt-test", "base_url": fake_server.url_for("openai"),
                 "api_key_env": key_env, "price_input_per_1m": 1.0, "price_output_per_1m": 2.0},
                {"id": "an", "backend": "anthropic", "model": "claude-test",
                 "base_url": fake_server.url_for("anthropic"), "api_key_env": key_env},
            ],
            "parameters": {"grid": {"temperature": [0.2, 1.0], "top_p": [0.9, 1.0]}},
            "scorers": [{"type": "contains", "name": "says_answer", "values": ["answer"], "threshold": 1}],
        })
        root = tmp_path_factory.mktemp("real-run")
        outcome = anyio.run(run_job, prepare_job(spec), RunOptions(out_root=root, handle_signals=False))
        assert outcome.state == "completed"
        yield outcome.run_dir


@pytest.fixture(scope="session")
def baseline_spec() -> SyntheticRun:
    """Two backends, three parameter sets, 80 items × 2 repeats: 960 rows."""
    return SyntheticRun(items=80, repeats=2, param_sets={"cold": (0.2, 0.9), "warm": (0.7, 0.9), "hot": (1.2, 1.0)},
                        run_id="baseline")


@pytest.fixture(scope="session")
def baseline_run(tmp_path_factory: pytest.TempPathFactory, baseline_spec: SyntheticRun) -> Path:
    """The synthetic baseline, written once per session; tests must not modify it."""
    return write_synthetic_run(tmp_path_factory.mktemp("baseline"), baseline_spec)


NIGHTLY_ITEMS = 10
NIGHTLY_REPEATS = 5


def nightly_items(regressed: int, extra: int = 0) -> list[dict[str, str]]:
    """The nightly dataset: the first `regressed` items get an answer without the expected word."""
    return [{"id": f"q{i}", "q": "[[reply:no idea]]" if i < regressed else f"say the answer {i}"}
            for i in range(NIGHTLY_ITEMS + extra)]


def run_nightly(root: Path, fake_server: FakeServer, items: list[dict[str, str]]) -> Path:
    """One run of the `nightly` job (2 backends × items × 5 repeats) under `root`/nightly/."""
    key_env = "EVALPIPE_TEST_NIGHTLY_KEY"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(key_env, "sk-nightly-tests")
        spec = JobSpec.model_validate({
            "name": "nightly",
            "dataset": {"items": items},
            "prompt": {"user": "{{ q }}"},
            "repeats": NIGHTLY_REPEATS,
            "backends": [
                {"id": "oa", "backend": "openai", "model": "gpt-test", "base_url": fake_server.url_for("openai"),
                 "api_key_env": key_env, "price_input_per_1m": 1.0, "price_output_per_1m": 2.0},
                {"id": "an", "backend": "anthropic", "model": "claude-test",
                 "base_url": fake_server.url_for("anthropic"), "api_key_env": key_env},
            ],
            "scorers": [{"type": "contains", "name": "says_answer", "values": ["answer"], "threshold": 1}],
        })
        outcome = anyio.run(run_job, prepare_job(spec), RunOptions(out_root=root, handle_signals=False, quiet=True))
    assert outcome.state == "completed"
    return outcome.run_dir


NightlyRunner = Callable[[Path, int, int], Path]


@pytest.fixture(scope="session")
def nightly_runner(fake_server: FakeServer) -> NightlyRunner:
    """Runs the nightly job under a results root: (root, regressed items, extra items) -> run directory."""
    def run(root: Path, regressed: int, extra: int = 0) -> Path:
        return run_nightly(root, fake_server, nightly_items(regressed, extra))
    return run


@pytest.fixture(scope="session")
def nightly(tmp_path_factory: pytest.TempPathFactory, fake_server: FakeServer) -> list[Path]:
    """Three runs of one job: all items right; then 2 of 10 items wrong (too few items to tell from noise,
    though 10 of 50 rows); then 8 of 10 wrong (a regression). Tests must not modify them."""
    root = tmp_path_factory.mktemp("nightly")
    return [run_nightly(root, fake_server, nightly_items(regressed)) for regressed in (0, 2, 8)]
