"""The `evalpipe` command: each kind of job-file mistake stops with a clear message and exit code 2
before any call; validate, plan, backends, schema and `run --dry-run` call nothing; `run` writes its
outputs and says where; no key is ever printed."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import yaml

from evalpipe.cli import main
from evalpipe.logs import RUN_LOG_FILENAME
from evalpipe.testing import FakeServer

KEY_VARIABLE = "EVALPIPE_TEST_CLI_KEY"
CANARY = "sk-cli-canary-SECRET-0123456789abcdef"

GOOD_JOB = """\
name: cli-test
dataset:
  items:
    - {id: a, question: "What is 2 + 2?", expected: "4"}
    - {id: b, question: "What is 3 + 3?", expected: "6"}
prompt:
  user: "{{ question }}"
backends:
  - id: fake
    backend: openai
    model: gpt-4o-mini
    base_url: URL
    api_key_env: EVALPIPE_TEST_CLI_KEY
    price_input_per_1m: 1.0
parameters:
  sets:
    - {name: calm, temperature: 0.1, max_tokens: 8}
    - {name: warm, temperature: 0.9, max_tokens: 8}
scorers:
  - type: contains
    values: ["{{ expected }}"]
"""

# Each kind of mistake: (what to change in GOOD_JOB, the line it is on, what the message must say).
MISTAKES = {
    "unknown key": ("    api_key_env: EVALPIPE_TEST_CLI_KEY\n",
                    "    api_key_env: EVALPIPE_TEST_CLI_KEY\n    max_concurency: 4\n",
                    "job.yaml:14: backends[0].max_concurency: unknown key", "did you mean 'max_concurrency'?"),
    "wrong type": ("name: cli-test\n", "name: cli-test\nconcurrency: lots\n",
                   "job.yaml:2: concurrency:", "valid integer, unable to parse string as an integer (got 'lots')"),
    "missing dataset file": ("  items:\n    - {id: a, question: \"What is 2 + 2?\", expected: \"4\"}\n"
                             "    - {id: b, question: \"What is 3 + 3?\", expected: \"6\"}\n",
                             "  path: nowhere.jsonl\n", "job.yaml:3: dataset.path: dataset file not found",
                             "nowhere.jsonl)"),
    "template field missing from the dataset": ('user: "{{ question }}"', 'user: "{{ questoin }}"',
                                                "job.yaml:7: prompt.user: uses field 'questoin', missing from item 'a'",
                                                "did you mean 'question'?"),
    "unknown backend": ("backend: openai", "backend: openia", "job.yaml:10: backends[0].backend: unknown backend "
                        "'openia'", "did you mean 'openai'?"),
    "unknown scorer": ("type: contains", "type: contians", "job.yaml:20: scorers[0]: unknown scorer 'contians'",
                       "did you mean 'contains'?"),
    "bad scorer option": ("type: contains\n    values:", "type: regex\n    pattern: '('\n    values:",
                          "job.yaml:20: scorers[0]: scorer 'regex':",
                          "its options are: pattern, fullmatch, ignore_case"),
    "text that looks like markup": ("type: contains", "type: '[/x]'", "job.yaml:20: scorers[0]: unknown scorer '[/x]'",
                                    "module:function"),
}


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """The command configures structlog for the process; give the next test the defaults back."""
    yield
    structlog.reset_defaults()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    monkeypatch.setenv(KEY_VARIABLE, CANARY)
    with FakeServer() as srv:
        yield srv


def write_job(tmp_path: Path, server: FakeServer, text: str = GOOD_JOB, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text.replace("URL", server.url_for("openai")), encoding="utf-8")
    return path


def cli(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    """Run the command in this process: (exit code, stdout, stderr)."""
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def words(text: str) -> str:
    """`text` with every run of whitespace as one space: tables wrap their titles to the console's width."""
    return " ".join(text.split())


def no_calls(server: FakeServer) -> bool:
    return server.stats().requests == 0


@pytest.mark.parametrize("command", ["validate", "plan", "run"])
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_each_kind_of_mistake_names_file_line_and_field_exits_2_and_calls_nothing(
    mistake: str, command: str, server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new, where, what = MISTAKES[mistake]
    assert old in GOOD_JOB
    job = write_job(tmp_path, server, GOOD_JOB.replace(old, new, 1))
    code, out, err = cli(capsys, command, job, *(["--out", tmp_path / "results"] if command == "run" else []))
    assert code == 2
    assert err.startswith("error: ") and where in err and what in err, err
    assert "Traceback" not in err and out == ""
    assert no_calls(server)
    assert not (tmp_path / "results").exists()


def test_a_bad_job_exits_2_from_the_installed_command_too(server: FakeServer, tmp_path: Path) -> None:
    job = write_job(tmp_path, server, GOOD_JOB.replace("backend: openai", "backend: openia"))
    done = subprocess.run([sys.executable, "-m", "evalpipe.cli", "run", str(job), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "backends[0].backend: unknown backend 'openia'" in done.stderr
    assert no_calls(server)


def test_validate_says_what_the_job_holds(server: FakeServer, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "validate", write_job(tmp_path, server))
    assert code == 0
    assert "valid — 2 items, 1 of 1 backend can run here, 2 parameter sets, 1 repeat" in out
    assert no_calls(server)


@pytest.mark.parametrize("command", [["plan"], ["run", "--dry-run"]])
def test_plan_and_dry_run_count_calls_and_cost_without_calling(
    command: list[str], server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "results"
    code, out, _ = cli(capsys, *command, write_job(tmp_path, server), "--out", out_dir) if "run" in command \
        else cli(capsys, *command, write_job(tmp_path, server))
    assert code == 0
    assert "4 tasks (2 items × 2 parameter sets × 1 repeat per backend)" in words(out)
    fake_row = next(line for line in out.splitlines() if "fake" in line)
    assert "gpt-4o-mini" in fake_row and " 4 " in fake_row
    assert no_calls(server)
    assert not out_dir.exists()


def test_backends_shows_which_keys_are_set_and_never_a_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY + "-anthropic")
    monkeypatch.delenv("GROQ_API_KEY", raising=False)
    code, out, err = cli(capsys, "backends")
    assert code == 0
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    assert "OPENAI_API_KEY" in rows["openai"] and "set" in rows["openai"]
    assert "missing" in rows["groq"]
    assert "not needed" in rows["local"]
    assert CANARY[:12] not in out + err  # not even a prefix


def test_schema_is_a_json_schema_of_job_files(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert {"name", "dataset", "prompt", "backends"} <= set(schema["required"])
    backend = schema["$defs"]["BackendSpec"]
    assert backend["additionalProperties"] is False and "max_concurrency" in backend["properties"]


def test_the_schema_accepts_the_shipped_jobs_and_refuses_a_mistake(capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    code, out, _ = cli(capsys, "schema")
    assert code == 0
    schema = json.loads(out)
    validator = jsonschema.Draft202012Validator(schema)
    validator.check_schema(schema)
    jobs = sorted((Path(__file__).parents[1] / "jobs").glob("*.yaml"))
    assert jobs
    for job in jobs:
        assert not list(validator.iter_errors(yaml.safe_load(job.read_text(encoding="utf-8")))), job
    bad = yaml.safe_load(GOOD_JOB.replace("    api_key_env:", "    max_concurency: 4\n    api_key_env:"))
    assert [e.message for e in validator.iter_errors(bad)] == [
        "Additional properties are not allowed ('max_concurency' was unexpected)"]


def test_run_writes_the_outputs_says_where_and_prints_no_key(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "run", write_job(tmp_path, server), "--out", tmp_path / "results")
    assert code == 0
    assert server.stats(CANARY).succeeded == 4
    where = dict(line.split(": ", 1) for line in out.splitlines() if line.startswith(("parquet: ", "csv: ")))
    assert Path(where["csv"]).is_file() and list(Path(where["parquet"]).glob("part-*.parquet"))
    assert len(Path(where["csv"]).read_text(encoding="utf-8").splitlines()) == 5
    assert ": completed" in words(out)
    run_dir = Path(where["csv"]).parent
    assert f"next: evalpipe summary {run_dir}" in out
    written = "".join(p.read_text(encoding="utf-8", errors="replace") for p in run_dir.rglob("*") if p.is_file())
    assert CANARY not in out + err + written
    # The run's own log: JSON lines of info and up, though stderr showed warnings only.
    events = [json.loads(line) for line in (run_dir / RUN_LOG_FILENAME).read_text(encoding="utf-8").splitlines()]
    assert [e["event"] for e in events if e["event"].startswith("run ")] == ["run started", "run finished"]
    assert all(e["level"] in ("info", "warning", "error") and e["timestamp"] for e in events)
    assert "run started" not in err


def test_an_optional_backend_without_its_key_gets_one_line_and_the_others_run(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVALPIPE_TEST_CLI_ABSENT", raising=False)
    second = ("  - id: absent\n    backend: anthropic\n    model: claude-test\n"
              f"    base_url: {server.url_for('anthropic')}\n    api_key_env: EVALPIPE_TEST_CLI_ABSENT\n"
              "    optional: true\nparameters:")
    job = write_job(tmp_path, server, GOOD_JOB.replace("parameters:", second, 1))
    code, out, err = cli(capsys, "run", job, "--out", tmp_path / "results")
    assert code == 0
    assert "skipped backend absent (optional): EVALPIPE_TEST_CLI_ABSENT is not set" in err.splitlines()
    assert "backend skipped" in err and "EVALPIPE_TEST_CLI_ABSENT is not set" in err
    assert server.stats(CANARY).succeeded == 4 and server.stats().requests == 4


def test_resuming_with_a_changed_job_is_refused_with_the_change_and_exit_2(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, server)
    code, out, _ = cli(capsys, "run", job, "--out", tmp_path / "results")
    assert code == 0
    run_dir = Path(next(line for line in out.splitlines() if line.startswith("csv: "))[5:]).parent
    calls = server.stats().requests
    job.write_text(job.read_text(encoding="utf-8").replace("{{ question }}", "Q: {{ question }}"), encoding="utf-8")
    code, _, err = cli(capsys, "run", job, "--resume", run_dir)
    assert code == 2
    assert "was run with a different job; changed: prompt.user" in err
    assert server.stats().requests == calls


def test_a_bigger_budget_or_concurrency_in_the_job_file_may_resume(
    server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, server, GOOD_JOB + "budget:\n  max_tokens: 12\n")
    code, out, err = cli(capsys, "run", job, "--out", tmp_path / "results")
    assert code == 4 and "stopped at the budget" in err and "raise it and resume with  evalpipe run" in err
    resume = err.split("resume with  ", 1)[1].splitlines()[0]
    job.write_text(GOOD_JOB.replace("URL", server.url_for("openai")) + "concurrency: 4\nbudget:\n  max_tokens: 1000\n",
                   encoding="utf-8")
    code, out, _ = cli(capsys, *resume.split()[1:])
    assert code == 0 and ": completed" in words(out)
    assert server.stats().succeeded == 4


def test_concurrency_must_be_at_least_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "job.yaml"), "--concurrency", "0"])
    assert exit_info.value.code == 2
    assert "--concurrency: expected a whole number of at least 1, got '0'" in capsys.readouterr().err
