"""Job files: every kind of mistake gives one clear line with the file, the line and the field."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest

from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.expand import count_tasks
from evalpipe.pipeline.job.load import JobFileError, LoadedJob, load_job, prepare_job
from evalpipe.pipeline.job.spec import JobSpec

SHIPPED_JOBS = sorted((Path(__file__).resolve().parents[2] / "jobs").glob("*.yaml"))
# Every cloud vendor's key, as a machine that runs the shipped jobs has them (the fake server's for tools.yaml).
VENDOR_KEYS = {variable: "sk-load-test" for variable in (
    "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "MISTRAL_API_KEY", "GROQ_API_KEY",
    "EVALPIPE_FAKE_KEY")}

GOOD_JOB = """\
name: demo
dataset:
  path: ../data/q.jsonl
prompt:
  system: Answer briefly.
  user: "Q: {{ question }}"
backends:
  - id: a
    backend: local
  - id: b
    backend: openai
    rpm: 60
scorers:
  - type: contains
    values: ["{{ expected }}"]
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with `jobs/` and `data/q.jsonl`, as the working directory."""
    (tmp_path / "jobs").mkdir()
    (tmp_path / "data").mkdir()
    rows = [{"id": f"q{n}", "question": f"What is {n} + 1?", "expected": str(n + 1)} for n in range(3)]
    (tmp_path / "data" / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-load-test")  # the key check has tests of its own
    return tmp_path


def write_job(text: str, name: str = "job.yaml") -> Path:
    path = Path("jobs") / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(text: str) -> list[str]:
    """The lines of the JobFileError that loading `text` raises."""
    with pytest.raises(JobFileError) as caught:
        load_job(write_job(text))
    assert str(caught.value) == "\n".join(str(p) for p in caught.value.problems)
    return str(caught.value).splitlines()


@pytest.mark.parametrize("path", SHIPPED_JOBS, ids=[p.name for p in SHIPPED_JOBS])
def test_every_shipped_job_validates(path: Path) -> None:
    loaded = load_job(path, environ=VENDOR_KEYS)
    assert loaded.spec.name == path.stem
    assert count_tasks(loaded) > 0


def test_the_shipped_jobs_are_all_there() -> None:
    assert {p.stem for p in SHIPPED_JOBS} >= {"quickstart", "sweep", "nightly", "compare-releases"}


def test_a_good_job_loads_with_its_hash_and_base_dir(project: Path) -> None:
    path = write_job(GOOD_JOB)
    loaded = load_job(path)
    assert isinstance(loaded, LoadedJob)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.base_dir == (project / "jobs").resolve()
    assert loaded.templates.fields == {"question"}
    assert len(loaded.dataset) == 3


def test_the_dataset_is_found_from_the_job_file_not_the_working_directory(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_job(GOOD_JOB).resolve()
    monkeypatch.chdir(project / "data")
    assert len(load_job(path).dataset) == 3


def test_a_value_out_of_range_names_file_line_field_and_value(project: Path) -> None:
    assert problems(GOOD_JOB.replace("rpm: 60", "rpm: -5")) == [
        "jobs/job.yaml:12: backends[1].rpm: Input should be greater than or equal to 0.1 (got -5)"
    ]


def test_an_unknown_key_lists_the_allowed_ones(project: Path) -> None:
    (line,) = problems(GOOD_JOB.replace("rpm: 60", "rmp: 60"))
    assert line.startswith("jobs/job.yaml:12: backends[1].rmp: unknown key; allowed here: api_key_env, backend,")
    assert line.endswith("(did you mean 'rpm'?)")


def test_an_unknown_top_level_key(project: Path) -> None:
    (line,) = problems(GOOD_JOB + "concurency: 4\n")
    assert line.startswith("jobs/job.yaml:16: concurency: unknown key; allowed here: backends, best_of, budget, "
                           "concurrency")
    assert "did you mean 'concurrency'" in line


def test_an_unknown_backend_lists_the_known_ones(project: Path) -> None:
    (line,) = problems(GOOD_JOB.replace("backend: openai", "backend: opena"))
    assert line == (
        "jobs/job.yaml:11: backends[1].backend: unknown backend 'opena'; expected one of: openai, anthropic, "
        "ollama, deepseek, phind, google, xai, groq, mistral, openrouter, azure_openai, local "
        "(did you mean 'openai'?)"
    )


def test_a_missing_required_key(project: Path) -> None:
    text = GOOD_JOB.replace("    backend: local\n", "")
    assert problems(text) == ["jobs/job.yaml:8: backends[0].backend: required key is missing"]


def test_a_bad_grid_value_points_at_the_grid(project: Path) -> None:
    text = GOOD_JOB + "parameters:\n  grid:\n    temperature: [0.2, 3]\n"
    assert problems(text) == [
        "jobs/job.yaml:18: parameters.grid.temperature: Input should be less than or equal to 2 (got 3)"
    ]


def test_every_problem_is_reported_at_once_in_line_order(project: Path) -> None:
    text = GOOD_JOB.replace("name: demo", "name: my demo").replace("rpm: 60", "rpm: 0") + "repeats: zero\n"
    lines = problems(text)
    assert [line.split(": ")[1] for line in lines] == ["name", "backends[1].rpm", "repeats"]
    assert lines[0].startswith("jobs/job.yaml:1: name: use only letters, digits")


def test_yaml_syntax_errors_give_the_line(project: Path) -> None:
    assert problems("name: x\nprompt: {user: [a\nbackends: []\n") == [
        "jobs/job.yaml:3: YAML syntax error: expected ',' or ']', but got ':' (column 9)"
    ]


def test_a_repeated_yaml_key_is_an_error(project: Path) -> None:
    assert problems(GOOD_JOB + "repeats: 2\nrepeats: 3\n") == [
        "jobs/job.yaml:17: repeats: duplicate key (first at line 16); give each key once"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", "got nothing (the file is empty)"), ("- a\n- b\n", "got a list")],
)
def test_a_job_file_must_be_a_mapping(project: Path, text: str, expected: str) -> None:
    (line,) = problems(text)
    assert line.startswith("jobs/job.yaml") and line.endswith(expected)


def test_a_missing_job_file(project: Path) -> None:
    with pytest.raises(JobFileError, match=r"^jobs/absent\.yaml: cannot read the job file: No such file"):
        load_job("jobs/absent.yaml")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "jobs/job.yaml:3: dataset.path: dataset file not found (data/q.jsonl)"),
        ("", "jobs/job.yaml:3: dataset.path: the dataset has no items (data/q.jsonl)"),
        ('{"id": "a", "question": "x", "expected": "y"}\n{"id": "b",\n',
         "data/q.jsonl:2: not valid JSON: Expecting property name enclosed in double quotes (column 12)"),
    ],
)
def test_dataset_file_problems(project: Path, content: str | None, expected: str) -> None:
    data = project / "data" / "q.jsonl"
    if content is None:
        data.unlink()
    else:
        data.write_text(content, encoding="utf-8")
    assert problems(GOOD_JOB) == [expected]


def test_duplicate_item_ids_are_named_with_both_places(project: Path) -> None:
    rows = [{"id": "a", "question": "1", "expected": "1"}, {"id": "b", "question": "2", "expected": "2"},
            {"id": "a", "question": "3", "expected": "3"}, {"question": "4", "expected": "4"},
            {"question": "4", "expected": "4"}]
    (project / "data" / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert problems(GOOD_JOB) == [
        "data/q.jsonl:3: duplicate item id 'a' (first at data/q.jsonl:1); ids must be unique",
        "data/q.jsonl:5: same content as data/q.jsonl:4, so the same id: items without `id` get an id from "
        "their content",
    ]


def test_duplicate_inline_ids_point_into_the_job_file(project: Path) -> None:
    text = GOOD_JOB.replace("  path: ../data/q.jsonl\n", "  items:\n    - {id: a, question: x, expected: y}\n"
                            "    - {id: a, question: z, expected: y}\n")
    assert problems(text) == ["jobs/job.yaml:5: dataset.items[1]: duplicate item id 'a' (first at item 1); "
                              "ids must be unique"]


def test_a_template_syntax_error_gives_the_line_inside_a_block(project: Path) -> None:
    text = GOOD_JOB.replace('  user: "Q: {{ question }}"\n', "  user: |\n    Q: {{ question }}\n    A: {% if %}\n")
    assert problems(text) == [
        "jobs/job.yaml:8: prompt.user: template syntax error: Expected an expression, got 'end of statement block' "
        "(template line 2)"
    ]


def test_a_template_field_missing_from_the_dataset(project: Path) -> None:
    (line,) = problems(GOOD_JOB.replace("{{ question }}", "{{ questio }}"))
    assert line == (
        "jobs/job.yaml:6: prompt.user: uses field 'questio', missing from item 'q0' (data/q.jsonl:1) and 2 more "
        "item(s); that item has: expected, id, question (did you mean 'question'?)"
    )


def test_a_field_missing_from_some_items_only(project: Path) -> None:
    with (project / "data" / "q.jsonl").open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"id": "late", "expected": "1"}) + "\n")
    (line,) = problems(GOOD_JOB)
    assert line.startswith("jobs/job.yaml:6: prompt.user: uses field 'question', missing from item 'late' "
                           "(data/q.jsonl:4); that item has: expected, id")


def test_a_guarded_field_may_be_absent(project: Path) -> None:
    text = GOOD_JOB.replace('"Q: {{ question }}"', '"Q: {{ question }}{% if hint is defined %} {{ hint }}{% endif %}'
                            '{{ note | default(\'\') }}"')
    assert load_job(write_job(text)).templates.fields == {"question"}


def test_a_template_that_fails_on_an_items_value(project: Path) -> None:
    text = GOOD_JOB.replace("{{ question }}", "{{ question + 1 }}")
    (line,) = problems(text)
    assert line.startswith("jobs/job.yaml:6: prompt.user: fails for item 'q0' (data/q.jsonl:1): TypeError:")


def test_scorer_problems(project: Path) -> None:
    text = GOOD_JOB + (
        "  - type: containz\n"
        "  - type: contains\n    name: c2\n    valuez: [x]\n"
        "  - type: regex\n    pattern: '('\n"
        "  - type: exact_match\n    expected: '{{ expectd }}'\n"
    )
    assert problems(text) == [
        "jobs/job.yaml:16: scorers[1]: unknown scorer 'containz'; expected one of: bleu, choice, contains, "
        "edit_similarity, exact_match, field, is_refusal, json_schema, json_valid, length, llm_judge, "
        "normalized_match, numeric, regex, rouge_l, self_explain, semantic_relevance, token_f1, tone, tool_call, "
        "tool_call_valid, toxicity, toxicity_judge, trajectory, or module:function (did you mean 'contains'?)",
        "jobs/job.yaml:17: scorers[2]: scorer 'contains': Contains.__init__() got an unexpected keyword argument "
        "'valuez'; its options are: values, mode, case_sensitive, word",
        "jobs/job.yaml:20: scorers[3]: scorer 'regex': missing ), unterminated subpattern at position 0",
        "jobs/job.yaml:23: scorers[4].expected: uses field 'expectd', missing from item 'q0' (data/q.jsonl:1) "
        "and 2 more item(s); that item has: expected, id, question (did you mean 'expected'?)",
    ]


def test_load_errors_are_config_errors(project: Path) -> None:
    with pytest.raises(ConfigError):
        load_job(write_job(GOOD_JOB.replace("rpm: 60", "rpm: -1")))


def test_a_job_built_in_code_gets_the_same_checks(project: Path) -> None:
    spec = JobSpec.model_validate({
        "name": "coded", "dataset": {"items": [{"q": "x"}]}, "prompt": {"user": "{{ q }} {{ r }}"},
        "backends": [{"id": "a", "backend": "local"}],
    })
    with pytest.raises(JobFileError, match=r"^job coded: prompt\.user: uses field 'r', missing from item"):
        prepare_job(spec)
    good = spec.model_copy(update={"prompt": spec.prompt.model_copy(update={"user": "{{ q }}"})})
    assert prepare_job(good).path is None
