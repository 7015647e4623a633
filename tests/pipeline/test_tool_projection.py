"""What a job with tools and images will spend, told honestly: the plan, the budget guard and the token
limiter count the tools' definitions and each vendor's image tokens; a tool loop is projected at its
worst case (every step) beside one call; each backend's image limits are checked at validate time; and
a task's timeout bounds all the steps of its tool loop together."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from PIL import Image as Picture

from evalpipe.backends.anthropic import AnthropicProvider
from evalpipe.backends.openai import OpenAIProvider
from evalpipe.pipeline.job.expand import plan_job
from evalpipe.pipeline.job.load import JobFileError, load_job
from evalpipe.pipeline.job.projection import TOOL_RESULT_TOKENS, tool_tokens
from evalpipe.pipeline.running.limits import prompt_tokens
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.testing import FakeServer
from evalpipe.types import ChatMessage, Image, Tool
from tests.backends.test_image_rules import padded_png
from tests.pipeline.test_tools_in_jobs import store_rows

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]
KEY = "EVALPIPE_TEST_PROJECTION_KEY"
WEATHER = {"name": "get_weather", "description": "The weather forecast for a city, today or for the next days.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"},
                                                           "days": {"type": "integer", "minimum": 1}},
                          "required": ["city"]}}


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY, "sk-projection")
    return "sk-projection"


def backend(backend_id: str, vendor: str, srv: FakeServer | None = None, **fields: Any) -> dict[str, Any]:
    protocol = {"google": "gemini"}.get(vendor, vendor)
    return {"id": backend_id, "backend": vendor, "api_key_env": KEY, "stream": False,
            "base_url": srv.url_for(protocol) if srv is not None else "http://127.0.0.1:9/v1", **fields}


def write_job(folder: Path, items: list[dict[str, Any]], backends: list[dict[str, Any]], **fields: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "items.jsonl").write_text("".join(json.dumps(item) + "\n" for item in items), encoding="utf-8")
    job = {"name": "projection", "dataset": {"path": "items.jsonl"}, "prompt": {"user": "{{ q }}"},
           "backends": backends, **fields}
    path = folder / "job.yaml"
    path.write_text(json.dumps(job), encoding="utf-8")
    return path


def picture(path: Path, size: tuple[int, int]) -> Path:
    buffer = io.BytesIO()
    Picture.new("RGB", size, (200, 40, 40)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue())
    return path


def python_tools(folder: Path, monkeypatch: pytest.MonkeyPatch, module: str) -> str:
    """A module of Python tools importable by the job; returns its `module:add` reference."""
    (folder / f"{module}.py").write_text(textwrap.dedent('''
        calls = []

        def add(a: int, b: int) -> int:
            """Add two numbers."""
            calls.append((a, b))
            return a + b
    '''), encoding="utf-8")
    monkeypatch.syspath_prepend(str(folder))
    return f"{module}:add"


def test_the_plan_counts_the_tool_definitions_and_each_vendors_image_tokens(tmp_path: Path) -> None:
    picture(tmp_path / "square.png", (1024, 1024))
    items = [{"id": "a", "q": "What is in this picture?", "image": "square.png"}]
    backends = [backend("gpt", "openai", model="gpt-4o"), backend("claude", "anthropic")]
    plain = plan_job(load_job(write_job(tmp_path / "plain", items, backends)))
    rich = plan_job(load_job(write_job(tmp_path, items, backends, tools=[WEATHER],
                                       prompt={"user": "{{ q }}", "images": ["{{ image }}"]})))

    added = {after.backend_id: after.input_tokens - before.input_tokens
             for before, after in zip(plain.backends, rich.backends, strict=True)}
    offered = [Tool.from_dict(WEATHER)]
    assert added == {"gpt": 765 + tool_tokens(OpenAIProvider, offered),
                     "claude": 1399 + tool_tokens(AnthropicProvider, offered)}
    by_id = {b.backend_id: b for b in rich.backends}
    assert by_id["gpt"].image_tokens == 765  # OpenAI's guide: 1024x1024 at high detail
    assert by_id["claude"].image_tokens == 1399  # Anthropic's rule: 1024 * 1024 / 750, rounded up
    # Anthropic counts its tool-use system prompt on top of the same definitions.
    assert by_id["claude"].tool_tokens - by_id["gpt"].tool_tokens == 346
    assert by_id["gpt"].tool_tokens > len(json.dumps(WEATHER)) / 8
    for before, after in zip(plain.backends, rich.backends, strict=True):
        assert after.input_tokens - before.input_tokens == after.tool_tokens + after.image_tokens
    assert rich.images == 2  # one image, sent to two backends


def test_a_tool_loop_is_planned_at_every_step_beside_one_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tool = python_tools(tmp_path, monkeypatch, "plan_loop_tools")
    items = [{"id": f"i{n}", "q": f"add {n} and 2"} for n in range(3)]
    path = write_job(tmp_path, items, [backend("gpt", "openai")], tools=[tool], max_steps=4,
                     parameters={"sets": [{"name": "short", "max_tokens": 50}]})
    loaded = load_job(path)
    (plan,) = plan_job(loaded).backends

    assert (plan.calls, plan.one_step.calls) == (12, 3)
    assert plan.output_tokens == 12 * 50 and plan.one_step.output_tokens == 3 * 50
    # Step k's prompt is the first one grown by k earlier answers and tool results (0 + 1 + 2 + 3 = 6 of them).
    growth = 50 + TOOL_RESULT_TOKENS + 2 * OpenAIProvider.tokens_per_message
    assert plan.input_tokens == 4 * plan.one_step.input_tokens + 3 * 6 * growth
    assert plan.tool_tokens == 12 * tool_tokens(OpenAIProvider, loaded.tools) > 0  # offered in every call
    shown = subprocess.run([sys.executable, "-m", "evalpipe.cli", "plan", str(path)], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}, check=False)
    assert shown.returncode == 0, shown.stderr
    title = " ".join(shown.stdout.split())  # the table's title folds to the terminal's width
    assert "3 tasks (3 items × 1 parameter set × 1 repeat per backend) × up to 4 model calls (tool loop)" in title
    assert "worst case above: every task takes all 4 steps" in shown.stderr
    assert "the budget guard counts this worst case" in shown.stderr
    assert f"if every task answers in one call: 3 calls, ≈{plan.one_step.input_tokens:,} input" in shown.stderr


async def test_the_budget_guard_counts_a_tool_loops_every_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_key: str,
) -> None:
    tool = python_tools(tmp_path, monkeypatch, "budget_loop_tools")
    items = [{"id": "sum", "q": 'Add [[tool:add:{"a": 2, "b": 3}]]'}]
    fields: dict[str, Any] = {"tools": [tool], "max_steps": 3,
                              "parameters": {"sets": [{"name": "s", "max_tokens": 20}]}}
    with FakeServer() as srv:
        def projected(folder: str, **more: Any) -> int:
            (one_task,) = plan_job(load_job(write_job(tmp_path / folder, items, [backend("gpt", "openai", srv)],
                                                      **{**fields, **more}))).backends
            return one_task.input_tokens + one_task.output_tokens

        worst, one_call = projected("probe"), projected("one", max_steps=1)
        assert one_call < worst
        # Room for the task's first call, not for its every step: the guard must not start it.
        path = write_job(tmp_path, items, [backend("gpt", "openai", srv)], budget={"max_tokens": one_call + 1},
                         **fields)
        outcome = await run_job(load_job(path), RunOptions(out_root=tmp_path / "out", handle_signals=False))
        assert outcome.state == "budget_exhausted" and srv.stats(api_key).requests == 0
        # The guard projects what the plan does, tool definitions included: one token short is too little.
        short = write_job(tmp_path / "short", items, [backend("gpt", "openai", srv)], budget={"max_tokens": worst - 1},
                          **fields)
        stopped = await run_job(load_job(short), RunOptions(out_root=tmp_path / "out1", handle_signals=False))
        assert stopped.state == "budget_exhausted" and srv.stats(api_key).requests == 0
        enough = write_job(tmp_path / "enough", items, [backend("gpt", "openai", srv)], budget={"max_tokens": worst},
                           **fields)
        finished = await run_job(load_job(enough), RunOptions(out_root=tmp_path / "out2", handle_signals=False))
        assert finished.state == "completed" and finished.counts["ok"] == 1
        assert srv.stats(api_key).requests == 2  # the call, then the answer to the tool's result


def test_the_token_limiters_estimate_counts_tools_and_images(tmp_path: Path) -> None:
    square = picture(tmp_path / "square.png", (1024, 1024))
    text = [ChatMessage.user("What is in this picture?")]
    with_image = [ChatMessage.user("What is in this picture?", [Image.from_path(square)])]
    tools = [Tool.from_dict(WEATHER)]
    plain = prompt_tokens(text)

    assert prompt_tokens(with_image, (), OpenAIProvider, "gpt-4o") == plain + 765
    assert prompt_tokens(with_image, (), AnthropicProvider, "claude-sonnet-4-5") == plain + 1399
    assert prompt_tokens(text, tools, OpenAIProvider, "gpt-4o") == plain + tool_tokens(OpenAIProvider, tools) > plain
    assert prompt_tokens(text, tools, AnthropicProvider) == prompt_tokens(text, tools, OpenAIProvider) + 346


def test_image_limits_are_each_backends_and_named_per_item_and_backend(tmp_path: Path) -> None:
    (tmp_path / "big.png").write_bytes(padded_png(100, 100, 6 * 1024 * 1024))  # over Anthropic's 5 MB only
    (tmp_path / "wide.png").write_bytes(padded_png(9000, 20, 2000))  # over Anthropic's 8000 px only
    buffer = io.BytesIO()
    Picture.new("RGB", (8, 8)).save(buffer, "GIF")
    (tmp_path / "still.gif").write_bytes(buffer.getvalue())  # xAI takes PNG and JPEG only
    picture(tmp_path / "fine.png", (64, 64))
    items = [{"id": name, "q": "describe", "image": f"{name}.{ext}"}
             for name, ext in (("big", "png"), ("wide", "png"), ("still", "gif"), ("fine", "png"))]
    backends = [backend("gpt", "openai"), backend("claude", "anthropic"), backend("grok", "xai"),
                backend("gem", "google")]
    path = write_job(tmp_path, items, backends, prompt={"user": "{{ q }}", "images": ["{{ image }}"]})
    with pytest.raises(JobFileError) as caught:
        load_job(path)
    message = str(caught.value)

    assert "prompt.images[0]: item 'big': (" in message
    assert "big.png' is 6.0 MB, over the 5 MB Anthropic accepts per image (backend 'claude')" in message
    assert "wide.png' is 9000x20 px; Anthropic refuses a side over 8000 px (backend 'claude')" in message
    assert "still.gif' is GIF; xAI accepts JPEG, PNG only (backend 'grok')" in message
    assert "(backend 'gpt')" not in message and "(backend 'gem')" not in message and "'fine'" not in message
    checked = subprocess.run([sys.executable, "-m", "evalpipe.cli", "validate", str(path)], capture_output=True,
                             text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    assert checked.returncode == 2 and "(backend 'claude')" in checked.stderr


def test_gemini_refuses_what_its_inline_request_cannot_carry(tmp_path: Path) -> None:
    large = padded_png(100, 100, 16 * 1024 * 1024)  # 21 MB once base64-encoded
    for folder in ("openai", "gemini"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "large.png").write_bytes(large)
    items = [{"id": "large", "q": "describe", "image": "large.png"}]
    fields = {"prompt": {"user": "{{ q }}", "images": ["{{ image }}"]}}
    load_job(write_job(tmp_path / "openai", items, [backend("gpt", "openai")], **fields))  # 20 MB per image: fine
    with pytest.raises(JobFileError) as caught:
        load_job(write_job(tmp_path / "gemini", items, [backend("gem", "google")], **fields))
    assert "is 16.0 MB, over the 15 MB Gemini accepts per image (backend 'gem')" in str(caught.value)


async def test_a_loop_whose_steps_each_fit_but_not_together_times_out_and_keeps_its_trajectory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, api_key: str,
) -> None:
    tool = python_tools(tmp_path, monkeypatch, "slow_loop_tools")
    # Each call takes 0.6 s, under the task's 1 s; the loop's two calls take 1.2 s.
    items = [{"id": "slow", "q": 'Add [[tool:add:{"a": 2, "b": 3}]] [[latency:0.6]]'},
             {"id": "quick", "q": 'Add [[tool:add:{"a": 1, "b": 1}]]'}]
    with FakeServer() as srv:
        path = write_job(tmp_path, items, [backend("gpt", "openai", srv)], tools=[tool], max_steps=3,
                         task_timeout_s=1.0)
        outcome = await run_job(load_job(path), RunOptions(out_root=tmp_path / "out", handle_signals=False))
    rows = {row["item_id"]: row for row in store_rows(outcome.run_dir)}

    slow = rows["slow"]
    assert slow["status"] == "error" and slow["error_type"] == "TimeoutError"
    assert slow["error_message"] == "task took over 1.0s (all its tool loop's steps together; 1 finished)"
    steps = json.loads(slow["trajectory"])
    assert [call["name"] for call in steps[0]["tool_calls"]] == ["add"]
    assert steps[0]["tool_results"][0]["content"] == "5"
    assert slow["input_tokens"] == steps[0]["input_tokens"] > 0  # the finished step's spend stays on the row
    assert rows["quick"]["status"] == "ok" and rows["quick"]["response"] == "Result: 2"
