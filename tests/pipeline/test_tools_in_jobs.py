"""Tools and images in jobs: the job's tools reach every chat call, the calls reach the row and survive
the response cache, items carry images, and bad tools or images are validate-time errors."""

from __future__ import annotations

import json
import sqlite3
import textwrap
from pathlib import Path
from typing import Any, Literal

import pytest

from evalpipe.pipeline.job.load import JobFileError, load_job
from evalpipe.pipeline.job.tools import tool_from_function
from evalpipe.pipeline.output.rows import row_schema
from evalpipe.pipeline.output.store import STORE_FILENAME, RunStore
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.testing import FakeServer, tiny_png

pytestmark = pytest.mark.anyio
KEY_VARIABLE = "EVALPIPE_TEST_TOOLS_KEY"
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> str:
    key = f"sk-tools-{request.node.name}"
    monkeypatch.setenv(KEY_VARIABLE, key)
    return key


def write_job(folder: Path, srv: FakeServer | None, items: list[dict[str, Any]], **fields: Any) -> Path:
    """A job file in `folder` (its dataset beside it) and its path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    job = {"name": "tools", "dataset": {"path": "items.jsonl"}, "prompt": {"user": "{{ q }}"},
           "backends": [{"id": "gpt", "backend": "openai", "model": "gpt-test", "stream": False,
                         "base_url": srv.url_for("openai") if srv else "http://127.0.0.1:9/v1",
                         "api_key_env": KEY_VARIABLE}],
           "tools": [WEATHER], **fields}
    path = folder / "job.yaml"
    path.write_text(json.dumps(job), encoding="utf-8")
    return path


def store_rows(run_dir: Path, criteria: list[str] | None = None) -> list[dict[str, Any]]:
    with RunStore.open(run_dir, RunStore.read_meta(run_dir)["run_id"], row_schema(criteria or [])) as store:
        return sorted(store.iter_rows(), key=lambda row: row["task_index"])


async def test_tool_calls_reach_the_row_and_survive_a_resume_from_the_cache(fake_server: FakeServer,
                                                                           tmp_path: Path) -> None:
    items = [{"id": "oslo", "q": 'Weather? [[tool:get_weather:{"city": "Oslo"}]]'}]
    job = load_job(write_job(tmp_path, fake_server, items))
    first = await run_job(job, RunOptions(out_root=tmp_path / "out", handle_signals=False))
    (fresh,) = store_rows(first.run_dir)
    # The answer is paid and cached; its row is lost (as after a crash between the two), so a resume
    # must take the answer from the cache.
    with sqlite3.connect(first.run_dir / STORE_FILENAME) as connection:
        connection.execute("DELETE FROM rows")
    again = await run_job(job, RunOptions(run_dir=first.run_dir, handle_signals=False))
    (resumed,) = store_rows(again.run_dir)

    expected = [{"id": json.loads(fresh["tool_calls"])[0]["id"], "name": "get_weather",
                 "arguments": {"city": "Oslo"}, "raw_arguments": None}]
    assert json.loads(fresh["tool_calls"]) == expected and fresh["finish_reason"] == "tool_calls"
    assert resumed["cached"] is True
    assert json.loads(resumed["tool_calls"]) == expected


async def test_a_malformed_call_keeps_its_raw_arguments_and_text_answers_have_no_calls(
    fake_server: FakeServer, tmp_path: Path,
) -> None:
    items = [{"id": "bad", "q": "Weather? [[tool:get_weather:malformed]]"}, {"id": "none", "q": "Just talk"}]
    job = load_job(write_job(tmp_path, fake_server, items, tool_choice="none"))
    outcome = await run_job(job, RunOptions(out_root=tmp_path / "out", handle_signals=False))
    bad, plain = store_rows(outcome.run_dir)

    (call,) = json.loads(bad["tool_calls"])
    assert call["name"] == "get_weather" and call["arguments"] is None and call["raw_arguments"]
    assert plain["tool_calls"] is None and plain["response"] == "Echo: Just talk"  # tool_choice none: no call


async def test_items_carry_images_relative_to_the_dataset(fake_server: FakeServer, tmp_path: Path) -> None:
    (tmp_path / "pictures").mkdir()
    (tmp_path / "pictures" / "dot.png").write_bytes(tiny_png())
    items = [{"id": "dot", "q": "What is this?", "picture": "pictures/dot.png"}]
    job = load_job(write_job(tmp_path, fake_server, items, tools=[],
                             prompt={"user": "{{ q }}", "images": ["{{ picture }}"]}))
    outcome = await run_job(job, RunOptions(out_root=tmp_path / "out", handle_signals=False))
    (row,) = store_rows(outcome.run_dir)

    assert row["status"] == "ok", row["error_message"]
    assert row["response"] == "Echo: What is this? [image: image/png]"
    (message,) = json.loads(row["messages"])
    assert message["images"] == [str(tmp_path / "pictures" / "dot.png")]


def problems(path: Path) -> str:
    with pytest.raises(JobFileError) as caught:
        load_job(path)
    return str(caught.value)


def test_bad_tools_and_missing_images_are_errors_naming_the_field_and_item(tmp_path: Path) -> None:
    items = [{"id": "ok", "q": "x", "picture": "here.png"}, {"id": "lost", "q": "y", "picture": "gone.png"}]
    (tmp_path / "here.png").write_bytes(tiny_png())
    (tmp_path / "tools.json").write_text(json.dumps([{"name": "has space", "parameters": {"type": "object"}}]))
    tools = [WEATHER, {"name": "bad_schema", "parameters": {"type": "object", "properties": {"n": {"type": "nope"}}}},
             {"file": "tools.json"}, {"file": "absent.json"}, "no_such_module_here:tool", WEATHER]
    message = problems(write_job(tmp_path, None, items, tools=tools, tool_choice="get_wether",
                                 prompt={"user": "{{ q }}", "images": ["{{ picture }}"]}))

    assert "tools[1]: tool 'bad_schema': parameters are not a valid JSON Schema" in message
    assert "tools[2]: tool name 'has space' must be 1-64 letters" in message
    assert "tools[3]: cannot read the tool file 'absent.json'" in message
    assert "tools[4]: tool 'no_such_module_here:tool' cannot be imported" in message
    assert "tools[5]: tool name 'get_weather' is given twice" in message
    assert "tool_choice: 'get_wether' is not one of auto, none, required or a tool's name" in message
    assert "prompt.images[0]: item 'lost': (" in message and "items.jsonl:2) image file" in message
    assert "gone.png' does not exist" in message
    assert "'ok'" not in message


def test_a_tool_schema_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    tools = [{"name": "listy", "parameters": {"type": "array"}}]
    message = problems(write_job(tmp_path, None, [{"id": "a", "q": "x"}], tools=tools))
    assert "tools[0]: tool 'listy': parameters are not a valid JSON Schema: the arguments must be an object" in message


def lookup(term: str, limit: int = 3, kind: Literal["word", "place"] = "word", tags: list[str] | None = None) -> str:
    """Look a term up in the glossary.

    Args:
        term: what to look up
        limit (int): how many entries at most
    """
    return term


def test_a_function_tool_takes_its_schema_from_signature_and_docstring(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    tool = tool_from_function(lookup)

    assert tool.name == "lookup" and tool.description == "Look a term up in the glossary."
    assert tool.parameters == {"type": "object", "required": ["term"], "properties": {
        "term": {"type": "string", "description": "what to look up"},
        "limit": {"type": "integer", "description": "how many entries at most"},
        "kind": {"enum": ["word", "place"]},
        "tags": {"type": "array", "items": {"type": "string"}}}}
    module = tmp_path / "glossary_tools.py"
    module.write_text(textwrap.dedent('''
        def define(word: str) -> str:
            """Define a word."""
            return word
    '''), encoding="utf-8")
    job = write_job(tmp_path, None, [{"id": "a", "q": "x"}], tools=["glossary_tools:define"])
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = load_job(job)
    assert [t.name for t in loaded.tools] == ["define"]


async def test_a_parameter_sets_tool_choice_overrides_the_jobs(fake_server: FakeServer, tmp_path: Path) -> None:
    # The fake calls the first tool unless tool_choice names another.
    others = [{"name": name, "parameters": {"type": "object"}} for name in ("lookup", "calculate")]
    parameters = {"sets": [{"name": "job_choice"}, {"name": "off", "tool_choice": "none"},
                           {"name": "forced", "tool_choice": "calculate"}]}
    job = load_job(write_job(tmp_path, fake_server, [{"id": "a", "q": "Anything"}], tools=[WEATHER, *others],
                             tool_choice="lookup", parameters=parameters))
    outcome = await run_job(job, RunOptions(out_root=tmp_path / "out", handle_signals=False))
    rows = {row["param_set"]: row for row in store_rows(outcome.run_dir)}

    assert [c["name"] for c in json.loads(rows["job_choice"]["tool_calls"])] == ["lookup"]
    assert rows["off"]["tool_calls"] is None and rows["off"]["response"] == "Echo: Anything"
    assert [c["name"] for c in json.loads(rows["forced"]["tool_calls"])] == ["calculate"]


ARITHMETIC = '''
calls = []


def add(a: int, b: int) -> int:
    """Add two numbers."""
    calls.append((a, b))
    return a + b


def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b
'''


async def test_max_steps_runs_the_jobs_python_tools_and_asks_again(
    fake_server: FakeServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_key: str,
) -> None:
    (tmp_path / "arithmetic_tools.py").write_text(ARITHMETIC, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    items = [{"id": "sum", "q": 'Add them [[tool:add:{"a": 2, "b": 3}]]'},
             {"id": "zero", "q": 'Divide [[tool:divide:{"a": 1, "b": 0}]]'},
             {"id": "foreign", "q": 'Weather [[tool:get_weather:{"city": "Oslo"}]]'}]
    tools = ["arithmetic_tools:add", "arithmetic_tools:divide", WEATHER]
    scorers = [{"type": "trajectory", "expected": ["add"]}]
    job = load_job(write_job(tmp_path, fake_server, items, tools=tools, max_steps=4, scorers=scorers))
    outcome = await run_job(job, RunOptions(out_root=tmp_path / "out", handle_signals=False))
    rows = {row["item_id"]: row for row in store_rows(outcome.run_dir, ["trajectory"])}

    import arithmetic_tools  # type: ignore[import-not-found]
    assert arithmetic_tools.calls == [(2, 3)]  # run once, by the runner
    total = rows["sum"]
    assert total["response"] == "Result: 5" and total["finish_reason"] == "stop"
    steps = json.loads(total["trajectory"])
    assert [s["tool_calls"][0]["name"] if s["tool_calls"] else None for s in steps] == ["add", None]
    assert steps[0]["tool_results"] == [{"id": steps[0]["tool_calls"][0]["id"], "name": "add", "content": "5"}]
    assert total["input_tokens"] == sum(s["input_tokens"] for s in steps) > steps[0]["input_tokens"]
    assert [c["name"] for c in json.loads(total["tool_calls"])] == ["add"]  # every call of the loop, for scorers
    assert [rows[item]["score_trajectory"] for item in ("sum", "zero", "foreign")] == [1.0, 0.0, 0.0]
    assert rows["zero"]["response"] == "Result: error: ZeroDivisionError: division by zero"
    # A tool the job has no function for ends the loop: its call is the answer.
    assert len(json.loads(rows["foreign"]["trajectory"])) == 1 and rows["foreign"]["finish_reason"] == "tool_calls"
    assert fake_server.stats(api_key).succeeded == 5


def test_more_than_one_step_needs_a_python_tool(tmp_path: Path) -> None:
    message = problems(write_job(tmp_path, None, [{"id": "a", "q": "x"}], max_steps=3))
    assert "max_steps: more than one step needs a tool the runner can call" in message
