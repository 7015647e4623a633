"""Expansion: counts, order, laziness, stable task ids, grid naming, rendering and the cost plan."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from evalpipe.pipeline.job.dataset import Dataset
from evalpipe.pipeline.job.expand import DEFAULT_OUTPUT_TOKENS, count_tasks, expand_job, param_sets, plan_job
from evalpipe.pipeline.job.load import LoadedJob, load_job, model_for
from evalpipe.pipeline.job.spec import JobSpec
from evalpipe.pipeline.job.task import task_id
from evalpipe.pipeline.job.templates import PromptTemplates, TemplateRenderError
from evalpipe.types import ChatMessage, GenerationParams

ITEMS = [{"id": f"q{n}", "question": f"What is {n} + 1?", "expected": str(n + 1)} for n in range(4)]


def job(tmp_path: Path, changes: dict[str, Any] | None = None, items: list[dict[str, Any]] | None = None) -> LoadedJob:
    """A job on `items` (a JSONL file) with two backends, two sets and two repeats, plus `changes`."""
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in (items or ITEMS)), encoding="utf-8")
    document: dict[str, Any] = {
        "name": "demo",
        "dataset": {"path": "q.jsonl"},
        "prompt": {"system": "Be brief.", "user": "Q: {{ question }}"},
        "backends": [
            {"id": "cloud", "backend": "openai", "model": "gpt-4o-mini",
             "price_input_per_1m": 1.0, "price_output_per_1m": 4.0},
            {"id": "local", "backend": "local"},
        ],
        "parameters": {"sets": [{"name": "calm", "temperature": 0.0, "max_tokens": 10, "stop": ["\n"]},
                                {"name": "creative", "temperature": 0.9}]},
        "repeats": 2,
    }
    for key, value in (changes or {}).items():
        document[key] = value
    path = tmp_path / "job.yaml"
    path.write_text(json.dumps(document), encoding="utf-8")  # JSON is YAML
    return load_job(path, environ={"OPENAI_API_KEY": "sk-expand-test"})


def ids(loaded: LoadedJob) -> list[str]:
    return [task.task_id for task in expand_job(loaded)]


def test_counts_match_the_expansion(tmp_path: Path) -> None:
    loaded = job(tmp_path)
    tasks = list(expand_job(loaded))
    assert count_tasks(loaded) == len(tasks) == 4 * 2 * 2 * 2
    assert [t.index for t in tasks] == list(range(len(tasks)))
    assert len({t.task_id for t in tasks}) == len(tasks)


def test_the_order_is_item_major(tmp_path: Path) -> None:
    tasks = list(expand_job(job(tmp_path)))
    first_item = tasks[:8]
    assert {t.item_id for t in first_item} == {"q0"}
    # The first rows already cover every backend and parameter set.
    assert [(t.backend_id, t.param_set.name, t.repeat) for t in first_item] == [
        (b, s, r) for b in ("cloud", "local") for s in ("calm", "creative") for r in (0, 1)
    ]


def test_leaving_out_a_backend_keeps_the_full_expansions_indexes(tmp_path: Path) -> None:
    loaded = job(tmp_path)
    everything = {t.task_id: t.index for t in expand_job(loaded)}
    local = list(expand_job(loaded, backend_ids={"local"}))
    assert len(local) == count_tasks(loaded, backend_ids={"local"}) == 16
    assert all(t.backend_id == "local" and everything[t.task_id] == t.index for t in local)


def test_tasks_carry_rendered_messages_params_and_item(tmp_path: Path) -> None:
    task = next(expand_job(job(tmp_path)))
    assert task.messages == (ChatMessage.system("Be brief."), ChatMessage.user("Q: What is 0 + 1?"))
    assert task.param_set.params == GenerationParams(temperature=0.0, max_tokens=10, stop=("\n",))
    assert task.item == ITEMS[0] and task.mode == "chat" and task.prompt_text == "Q: What is 0 + 1?"


def test_message_lists_and_completion_mode_render(tmp_path: Path) -> None:
    conversation = {"messages": [{"role": "user", "content": "Hi {{ id }}"},
                                 {"role": "assistant", "content": "Hello."},
                                 {"role": "user", "content": "{{ question }}"}]}
    task = next(expand_job(job(tmp_path, {"prompt": conversation})))
    assert [m.role for m in task.messages] == ["user", "assistant", "user"]
    assert task.messages[0].content == "Hi q0" and task.prompt_text == "What is 0 + 1?"
    completion = next(expand_job(job(tmp_path, {"prompt": {"mode": "completion", "user": "Q: {{ question }}\nA:\n"}})))
    # Jinja drops the one trailing newline that a YAML `|` block always adds.
    assert completion.mode == "completion" and completion.messages == (ChatMessage.user("Q: What is 0 + 1?\nA:"),)


def test_ids_are_stable_across_loads(tmp_path: Path) -> None:
    assert ids(job(tmp_path)) == ids(job(tmp_path))


@pytest.mark.parametrize(
    "change",
    [
        "item text", "model", "default model", "param", "template", "system template", "id field value",
    ],
)
def test_ids_change_when_an_input_of_the_call_changes(tmp_path: Path, change: str) -> None:
    before = ids(job(tmp_path))
    backends = [{"id": "cloud", "backend": "openai", "model": "gpt-4o-mini"}, {"id": "local", "backend": "local"}]
    sets = [{"name": "calm", "temperature": 0.0, "max_tokens": 10, "stop": ["\n"]},
            {"name": "creative", "temperature": 0.9}]
    items = [dict(item) for item in ITEMS]
    changes: dict[str, Any] = {}
    if change == "item text":
        items[0]["question"] = "What is 0 + 2?"
    elif change == "id field value":
        items[0]["id"] = "renamed"
    elif change == "model":
        backends[0]["model"] = "gpt-4.1-mini"
        changes["backends"] = backends
    elif change == "default model":
        model_file = tmp_path / "another.gguf"  # a model file must exist to be named
        model_file.touch()
        backends[1]["model"] = str(model_file)
        changes["backends"] = backends
    elif change == "param":
        sets[1]["temperature"] = 1.0
        changes["parameters"] = {"sets": sets}
    elif change == "template":
        changes["prompt"] = {"system": "Be brief.", "user": "Question: {{ question }}"}
    elif change == "system template":
        changes["prompt"] = {"system": "Be very brief.", "user": "Q: {{ question }}"}
    after = ids(job(tmp_path, changes, items))
    changed = {position for position, (a, b) in enumerate(zip(before, after, strict=True)) if a != b}
    expected = {
        "item text": set(range(8)), "id field value": set(range(8)),
        "model": {p for p in range(32) if p % 8 < 4}, "default model": {p for p in range(32) if p % 8 >= 4},
        "param": {p for p in range(32) if p % 4 >= 2},
    }.get(change, set(range(32)))
    assert changed == expected


def test_repeats_get_distinct_ids_and_adding_repeats_keeps_the_old_ones(tmp_path: Path) -> None:
    two = ids(job(tmp_path))
    three = ids(job(tmp_path, {"repeats": 3}))
    assert len(set(three)) == len(three) and set(two) < set(three)


def test_ids_ignore_what_does_not_change_the_call(tmp_path: Path) -> None:
    before = ids(job(tmp_path))
    unchanged = {
        "description": "a new description", "concurrency": 3, "output": {"dir": "elsewhere"},
        "scorers": [{"type": "json_valid"}], "budget": {"max_cost_usd": 1},
        "backends": [{"id": "cloud", "backend": "openai", "model": "gpt-4o-mini", "rpm": 5, "price_input_per_1m": 9},
                     {"id": "local", "backend": "local", "max_concurrency": 1}],
        "parameters": {"sets": [{"name": "steady", "temperature": 0.0, "max_tokens": 10, "stop": ["\n"]},
                                {"name": "wild", "temperature": 0.9}]},
    }
    assert ids(job(tmp_path, unchanged)) == before
    # Items in another order: the same set of calls.
    assert set(ids(job(tmp_path, items=ITEMS[::-1]))) == set(before)


def test_grid_sets_are_named_after_their_values(tmp_path: Path) -> None:
    loaded = job(tmp_path, {"parameters": {"sets": [{"name": "calm", "temperature": 0}],
                                           "grid": {"temperature": [0.0, 0.7, 1.2], "top_p": [0.8, 0.95]}},
                            "repeats": 1})
    first_item = [t for t in expand_job(loaded, backend_ids={"local"}) if t.item_id == "q0"]
    assert [t.param_set.name for t in first_item] == [
        "calm", "temperature=0.0,top_p=0.8", "temperature=0.0,top_p=0.95", "temperature=0.7,top_p=0.8",
        "temperature=0.7,top_p=0.95", "temperature=1.2,top_p=0.8", "temperature=1.2,top_p=0.95",
    ]
    assert first_item[-1].param_set.params == GenerationParams(temperature=1.2, top_p=0.95)
    assert count_tasks(loaded) == 4 * 2 * 7


def test_a_template_failing_on_a_late_item_raises_while_expanding(tmp_path: Path) -> None:
    # Values are only rendered for a sample at load time; the failure surfaces as a ConfigError, not a crash.
    items = [{"id": f"i{n}", "n": n} for n in range(150)] + [{"id": "text", "n": "x"}]
    loaded = job(tmp_path, {"prompt": {"user": "{{ n + 1 }}"}}, items)
    with pytest.raises(TemplateRenderError, match=r"prompt\.user: TypeError"):
        list(expand_job(loaded))


def test_a_million_items_expand_lazily(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        handle.writelines(f'{{"id": "q{n}", "question": "What is {n} + 1?"}}\n' for n in range(1_000_000))
    spec = JobSpec.model_validate({"name": "big", "dataset": {"path": path.name}, "prompt": {"user": "{{ question }}"},
                                   "backends": [{"id": "a", "backend": "local"}], "repeats": 2})
    # Built directly: `load_job` would first check all million items, which is not what this test measures.
    loaded = LoadedJob(spec, None, "", tmp_path, Dataset(spec.dataset, tmp_path), PromptTemplates(spec.prompt))
    next(expand_job(loaded))  # imports the backend's module once, so that only the expansion is measured
    tracemalloc.start()
    try:
        started = time.perf_counter()
        tasks = expand_job(loaded)
        first = next(tasks)
        first_after = time.perf_counter() - started
        for _ in range(5_000):
            next(tasks)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert first.item_id == "q0" and first_after < 0.5
    # The million items as dicts would take hundreds of MB; the expansion holds one item at a time.
    assert peak < 1_000_000, peak
    assert count_tasks(loaded) == 2_000_000


def test_the_plan_counts_calls_tokens_and_cost(tmp_path: Path) -> None:
    loaded = job(tmp_path)
    plan = plan_job(loaded)
    assert plan.tasks == count_tasks(loaded) == 32 and plan.items == 4 and plan.sampled_items == 4
    cloud, local = plan.backends
    assert (cloud.backend_id, cloud.model, cloud.calls) == ("cloud", "gpt-4o-mini", 16)
    assert local.model == "gemma-3-270m"
    # "Be brief." is 3 tokens (2 words, "."); "Q: What is n + 1?" 11 ("Q", ":", 2 words, 2 digits, "+",
    # "?" and the 3 spaces before a digit or a symbol). Framed as two chat messages (3 tokens each) and a
    # request (3 more): 23 tokens per call.
    assert cloud.input_tokens == 23 * 16
    # Per item and repeat: 10 tokens (calm) + the default (creative, no max_tokens).
    assert cloud.output_tokens == 4 * 2 * (10 + DEFAULT_OUTPUT_TOKENS)
    assert cloud.cost_usd == pytest.approx((23 * 16 * 1.0 + 4 * 2 * (10 + DEFAULT_OUTPUT_TOKENS) * 4.0) / 1e6)
    assert local.cost_usd == 0 and plan.cost_usd == cloud.cost_usd
    # The local backend frames by Gemma's turn format: <bos> and the answer's turn (4), the user turn
    # (5), and the system prompt joined to it (1): 24 tokens per call.
    assert local.input_tokens == 24 * 16


def test_parameter_defaults_fill_what_sets_and_grid_points_leave_unset() -> None:
    from evalpipe.pipeline.job.spec import ParametersSpec

    spec = ParametersSpec.model_validate({
        "sets": [{"name": "calm", "temperature": 0.1, "max_tokens": 99}],
        "grid": {"temperature": [0.5, 1.0]},
        "defaults": {"max_tokens": 8, "stop": ["\n"], "temperature": 0.3},
    })
    assert [(p.name, p.temperature, p.max_tokens, p.stop) for p in spec.expanded()] == [
        ("calm", 0.1, 99, ["\n"]), ("temperature=0.5", 0.5, 8, ["\n"]), ("temperature=1.0", 1.0, 8, ["\n"])]


def test_expanded_ids_equal_the_task_id_definition(tmp_path: Path) -> None:
    """The expansion builds ids from cached JSON parts; they must be the ids `task_id` defines, or a
    resume would run every task again and miss every cached answer."""
    items = [{"id": "u", "question": "Ünïcode ☃ \"quoted\"", "z": {"b": [1, 2.5, None], "a": True}},
             {"question": "no id", "nested": {"y": {"x": "deep"}}}]
    loaded = job(tmp_path, {"parameters": {"sets": [
        {"name": "calm", "temperature": 0.0, "max_tokens": 10, "stop": ["\n"], "extra_body": {"k": {"b": 1, "a": 2}}},
        {"name": "plain"}]}}, items=items)
    template = loaded.spec.prompt.model_dump(mode="json")
    sets = {s.name: s for s in param_sets(loaded)}
    tasks = list(expand_job(loaded))
    assert len(tasks) == 2 * 2 * 2 * 2
    for task in tasks:
        model = "gpt-4o-mini" if task.backend_id == "cloud" else model_for(loaded.spec.backends[1])
        assert task.task_id == task_id(item=task.item, backend_id=task.backend_id, model=model,
                                       param_set=sets[task.param_set.name], repeat=task.repeat, template=template)
