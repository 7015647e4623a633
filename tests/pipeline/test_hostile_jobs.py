"""Hostile job files end as bad job files: exit 2, a located message, no traceback, no call paid, in
bounded time. Named cases for each kind the audit found, then a fuzz over the shipped jobs.

`scripts/fuzz_jobs.py` runs the same fuzz for longer."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hostile_jobs import (
    KEY,
    KEY_VARIABLE,
    SHIPPED_JOBS,
    Case,
    cases,
    problems,
    run_case,
    shipped_job,
    with_number,
    with_template,
    with_yaml,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evalpipe.cli import main
from evalpipe.testing import FakeServer


@pytest.fixture(scope="module", autouse=True)
def hostile_key() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(KEY_VARIABLE, KEY)
        yield


def hostile(text: str, mutation: str, tmp_path: Path, server: FakeServer) -> list[str]:
    return problems(run_case(Case("job", mutation, text), tmp_path, server))


@pytest.mark.parametrize("job", SHIPPED_JOBS, ids=lambda path: path.stem)
def test_the_shipped_jobs_on_the_fake_server_are_valid(job: Path, tmp_path: Path, fake_server: FakeServer) -> None:
    # The fuzz's starting points are good jobs: each case fails for its mutation, not for the setup.
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(shipped_job(job, fake_server)), encoding="utf-8")
    assert main(["validate", str(path)]) == 0


@pytest.mark.parametrize(("field", "value"), [
    (("parameters", "defaults", "seed"), 99999999999999999999999),
    (("parameters", "defaults", "max_tokens"), 99999999999999999999999),
    (("parameters", "grid", "seed"), 99999999999999999999999),
    (("backends", 0, "rpm"), 1e-9),
    (("backends", 0, "price_input_per_1m"), float("nan")),
    (("repeats",), 1000000000000),
    (("budget", "max_tokens"), 10**30),
])
def test_a_number_nothing_can_store_or_send_is_refused_at_validate(
        field: tuple[str | int, ...], value: object, tmp_path: Path, fake_server: FakeServer) -> None:
    text, what = with_number(shipped_job(SHIPPED_JOBS[0], fake_server), field, value)
    assert hostile(text, what, tmp_path, fake_server) == []


def test_a_grid_of_a_million_parameter_sets_is_refused(tmp_path: Path, fake_server: FakeServer) -> None:
    data = shipped_job(SHIPPED_JOBS[0], fake_server)
    data["parameters"] = {"grid": {"seed": list(range(1000)), "top_k": list(range(1, 1001))}}
    outcome = run_case(Case("job", "grid", yaml.safe_dump(data)), tmp_path, fake_server)
    assert problems(outcome) == []
    assert "1,000,000 parameter sets; at most 10,000" in outcome.stderr


@pytest.mark.parametrize("where", ["options", "items"])
@pytest.mark.parametrize("kind", ["bomb", "recursive", "deep"])
def test_yaml_alias_bombs_and_recursive_aliases_are_refused(
        kind: str, where: str, tmp_path: Path, fake_server: FakeServer) -> None:
    text, what = with_yaml(shipped_job(SHIPPED_JOBS[0], fake_server), kind, where, 10, 7)
    assert hostile(text, what, tmp_path, fake_server) == []


def test_a_few_aliases_still_work(tmp_path: Path, fake_server: FakeServer) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(f"""\
name: anchors
dataset: {{items: [{{q: "1"}}, {{q: "2"}}]}}
prompt: {{user: "{{{{ q }}}}"}}
parameters:
  defaults: &short {{max_tokens: 16, temperature: 0}}
  sets:
    - {{<<: *short, name: a}}
    - {{<<: *short, name: b, temperature: 1}}
backends:
  - {{id: a, backend: openai, base_url: "{fake_server.url_for('openai')}", api_key_env: {KEY_VARIABLE}}}
""", encoding="utf-8")
    assert main(["validate", str(path)]) == 0


@pytest.mark.parametrize("slot", ["prompt.user", "contains.values", "exact_match.expected", "llm_judge.rubric"])
@pytest.mark.parametrize("template", [
    "{{ 9**(9**9) }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{{ 'a'*10**11 }}",
    "{{ (text ~ ' ')*10**8 }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
], ids=["power", "nested-ranges", "recursive-macro", "repeat", "concat-repeat", "escape"])
def test_template_bombs_and_escapes_are_refused_at_validate_with_their_line(
        slot: str, template: str, tmp_path: Path, fake_server: FakeServer) -> None:
    # compare-releases: its items have `text`, and its prompt has a `user` template.
    job = next(path for path in SHIPPED_JOBS if path.stem == "compare-releases")
    text, what = with_template(shipped_job(job, fake_server), slot, template, "")
    outcome = run_case(Case(job.name, what, text), tmp_path, fake_server)
    assert problems(outcome) == []
    located = text.splitlines()[int(outcome.stderr.split(":")[2]) - 1]
    assert "{{" in located or "{%" in located  # the line of the template itself


def test_a_scorer_template_escape_is_found_by_validate_before_any_call(tmp_path: Path, fake_server: FakeServer) -> None:
    text, _ = with_template(shipped_job(SHIPPED_JOBS[0], fake_server), "contains.values",
                            "{{ text.__class__ }}", "")
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["validate", str(path)]) == 2


def test_a_50_mb_item_is_refused_with_its_line(tmp_path: Path, fake_server: FakeServer) -> None:
    data = shipped_job(SHIPPED_JOBS[0], fake_server)
    rows = [{"id": "a", "text": "short"}, {"id": "b", "text": "x" * 11_000_000}]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    data["dataset"] = {"path": str(tmp_path / "items.jsonl")}
    outcome = run_case(Case("job", "big item", yaml.safe_dump(data)), tmp_path, fake_server)
    assert problems(outcome) == []
    assert "items.jsonl:2: the item is 11,000,0" in outcome.stderr


def confirm_job(tmp_path: Path, server: FakeServer, confirm: dict[str, float] | None = None) -> Path:
    data = shipped_job(SHIPPED_JOBS[0], server)
    data["repeats"] = 3
    if confirm is not None:
        data["confirm_above"] = confirm
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("command", ["plan", "run"])
def test_past_confirm_above_plan_and_run_stop_unless_told_yes(
        command: str, tmp_path: Path, fake_server: FakeServer, capsys: pytest.CaptureFixture[str]) -> None:
    path = confirm_job(tmp_path, fake_server, {"tasks": 10})
    before = fake_server.stats(KEY).requests
    assert main([command, str(path), *(["--out", str(tmp_path / "out")] if command == "run" else [])]) == 2
    message = capsys.readouterr().err
    assert "this job is large" in message and "confirm_above.tasks is 10" in message and "--yes" in message
    assert fake_server.stats(KEY).requests == before
    code = main([command, str(path), "--yes", *(["--out", str(tmp_path / "out")] if command == "run" else [])])
    assert code == 0
    assert (fake_server.stats(KEY).requests > before) == (command == "run")


def test_the_projected_cost_also_asks_for_yes(tmp_path: Path, fake_server: FakeServer,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = confirm_job(tmp_path, fake_server, {"cost_usd": 0.000001})
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["backends"][0]["price_input_per_1m"] = 5.0
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    assert main(["plan", str(path)]) == 2
    assert "a projected cost of $" in capsys.readouterr().err


def test_below_the_default_confirm_above_nothing_is_asked(tmp_path: Path, fake_server: FakeServer) -> None:
    assert main(["plan", str(confirm_job(tmp_path, fake_server))]) == 0


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_hostile_jobs_end_as_located_exit_2_errors_without_calls(
        data: st.DataObject, tmp_path: Path, fake_server: FakeServer) -> None:
    case = data.draw(cases(fake_server), label="case")
    found = problems(run_case(case, tmp_path, fake_server))
    assert found == [], f"{case.job}: {case.mutation}: {found}"


def test_a_problem_on_line_100_prints_its_line_number(tmp_path: Path, fake_server: FakeServer,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    # Rich read `:100:` in `job.yaml:100:` as an emoji code and printed 💯 instead of the line.
    data = {"repeats": 0, **shipped_job(SHIPPED_JOBS[0], fake_server)}
    text = "# a comment\n" * 99 + yaml.safe_dump(data, sort_keys=False)  # `repeats: 0` on line 100
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    assert main(["validate", str(path)]) == 2
    assert "job.yaml:100: repeats: " in capsys.readouterr().err
