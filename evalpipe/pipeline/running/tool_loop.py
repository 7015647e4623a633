"""The multi-step tool loop: when the model calls tools the job implements in Python, run them and ask again.

    messages ─▶ call ─▶ answer with tool calls? ──no──▶ final answer (scored)
                  ▲              │ yes, and every called tool is the job's own
                  │              ▼
                  └── + assistant turn + one tool result per call (a raise becomes "error: ...")

Each step is a call like any other (the backend's limits, retries and the response cache, keyed by the
step's messages), up to the job's `max_steps`; the answer scored is the last step's, carrying every
call made on the way, and the tokens and cost of all steps. Only the functions the job names are ever
called: a call of any other tool ends the loop, as does a call whose arguments are not JSON.

The task's `task_timeout_s` bounds the whole loop, not each step: one `TaskClock` starts at the first
attempt of the first step, and every later step and tool run gets only what is left of it. A loop that
runs out raises TimeoutError; the steps it finished stay in the trajectory list it was given.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import anyio

from evalpipe.pipeline.job.task import Task, ToolLoop
from evalpipe.pipeline.running.model_calls import ScoringSpend
from evalpipe.types import ChatMessage, ChatResponse, ToolCall, Usage

MAX_RESULT_CHARS = 20_000  # a tool's result goes into every later prompt: a huge one would be paid each step


StepCall = Callable[[Task], Awaitable[tuple[ChatResponse, bool, float]]]


@dataclass(slots=True)
class TaskClock:
    """The time bound of one task: `timeout_s` from its first attempt (queueing for limits before it is
    not counted), shared by every call and tool run of the task."""

    timeout_s: float
    deadline: float | None = None  # set by the first `remaining()`

    def remaining(self) -> float:
        """Seconds left (the clock starts now if it has not yet)."""
        now = anyio.current_time()
        if self.deadline is None:
            self.deadline = now + self.timeout_s
        return max(self.deadline - now, 0.0)

    def expired(self) -> bool:
        """Whether the clock started and ran out."""
        return self.deadline is not None and self.remaining() <= 0.0


async def run_tool_loop(task: Task, loop: ToolLoop, call: StepCall, spend: ScoringSpend | None = None,
                        clock: TaskClock | None = None,
                        trajectory: list[dict[str, Any]] | None = None) -> tuple[ChatResponse, bool, float, list[Any]]:
    """(final answer, every step cached, total cost, trajectory) of `task` under `loop`; `call` makes one step
    (bounded by `clock`, the one it is given: the caller passes it to the step's call too).

    `spend` is charged and `trajectory` appended each step as it ends, so a later step's failure (a
    timeout of the whole loop included) still leaves what was paid and done."""
    spend = spend if spend is not None else ScoringSpend()
    clock = clock if clock is not None else TaskClock(math.inf)
    messages = task.messages
    steps: list[dict[str, Any]] = trajectory if trajectory is not None else []
    made: list[ToolCall] = []
    usage = Usage()
    cost, latency, attempts, all_cached = 0.0, 0.0, 0, True
    response: ChatResponse | None = None
    for _ in range(loop.max_steps):
        if clock.expired():  # the previous step or its tools used up the task's time
            raise TimeoutError
        response, cached, step_cost = await call(replace(task, messages=messages))
        usage = _added(usage, response.usage)
        cost, latency, attempts = cost + step_cost, latency + response.latency_s, attempts + response.attempts
        all_cached = all_cached and cached
        spend.input_tokens += response.usage.input_tokens
        spend.output_tokens += response.usage.output_tokens
        spend.cost_usd += step_cost
        made.extend(response.tool_calls)
        step: dict[str, Any] = {"text": response.text, "tool_calls": [_call_json(c) for c in response.tool_calls],
                                "input_tokens": response.usage.input_tokens,
                                "output_tokens": response.usage.output_tokens, "cost_usd": step_cost,
                                "cached": cached}
        steps.append(step)
        runnable = bool(response.tool_calls) and all(
            c.name in loop.functions and c.arguments is not None for c in response.tool_calls)
        if not runnable or len(steps) == loop.max_steps:
            break
        with anyio.fail_after(clock.remaining()):
            results = [await run_tool(loop.functions[c.name], c) for c in response.tool_calls]
        step["tool_results"] = [{"id": c.id, "name": c.name, "content": r}
                                for c, r in zip(response.tool_calls, results, strict=True)]
        messages = (*messages, ChatMessage.assistant(response.text, response.tool_calls),
                    *(ChatMessage.tool_result(c.id, r, c.name) for c, r in zip(response.tool_calls, results,
                                                                               strict=True)))
    assert response is not None  # max_steps >= 1
    final = replace(response, usage=usage, latency_s=latency, attempts=attempts, tool_calls=made)
    return final, all_cached, cost, steps


async def run_tool(function: Callable[..., Any], call: ToolCall) -> str:
    """The result of `call` as text for the model; an exception becomes `error: <type>: <message>`."""
    arguments = call.arguments if isinstance(call.arguments, dict) else {}
    try:
        if inspect.iscoroutinefunction(function):
            result = await function(**arguments)
        else:  # a blocking tool must not stall the other tasks; on timeout its thread is left to finish alone
            result = await anyio.to_thread.run_sync(functools.partial(function, **arguments), abandon_on_cancel=True)
    except Exception as error:  # the model sees the failure and may recover; the run goes on
        result = f"error: {type(error).__name__}: {error}"
    text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + "… (cut)"


def _added(total: Usage, more: Usage) -> Usage:
    return Usage(total.input_tokens + more.input_tokens, total.output_tokens + more.output_tokens,
                 total.reasoning_tokens + more.reasoning_tokens, total.cached_input_tokens + more.cached_input_tokens,
                 total.cache_write_input_tokens + more.cache_write_input_tokens)


def _call_json(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "name": call.name, "arguments": call.arguments, "raw_arguments": call.raw_arguments}
