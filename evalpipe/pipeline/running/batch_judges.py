"""Judges in batch mode: the second phase of a batch backend's rows.

    collected answer ─▶ score ─▶ a judge in batch mode not answered yet? ─no─▶ row
                                        │ yes (DeferredCall)
                                        ▼
                      the row waits; its judge request joins the judge's next batch
                                        │
              judge batch: submitted, polled, collected (as the answers' batches, exactly once)
                                        ▼
                              score again ─▶ row (or the next judge's batch)

A judge request is keyed as the scorers' live calls are (`JobCalls`), so a collected judge answer sits
in the run's response cache under the same key and a resumed run finds it there. The budget counted
the judge calls in each task's projection when the task's answer was submitted.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from evalpipe import errors
from evalpipe.backends.batch import batch_adapter
from evalpipe.pipeline.job.batch_mode import batch_settings
from evalpipe.pipeline.job.task import ParamSet, Task
from evalpipe.pipeline.output.store import RunStore
from evalpipe.pipeline.running.batch import BATCH_ERROR, BatchDispatcher, BatchHooks, error_of
from evalpipe.pipeline.running.model_calls import DeferredCall, JobCalls
from evalpipe.types import GenerationParams


class JudgeAnswers:
    """The judge answers collected in this session, for `JobCalls.batch_answers` (one per run's calls)."""

    def __init__(self) -> None:
        self.collected: dict[str, dict[str, Any]] = {}

    def lookup(self, key: str, cached: dict[str, Any] | None) -> dict[str, Any] | None:
        found = self.collected.get(key, cached)
        if found is not None and BATCH_ERROR in found:
            raise error_of(found[BATCH_ERROR], "")
        return found


_ANSWERS: weakref.WeakKeyDictionary[JobCalls, JudgeAnswers] = weakref.WeakKeyDictionary()


def judge_answers(calls: JobCalls) -> JudgeAnswers:
    """The collected judge answers of `calls`' run, installed as its `batch_answers` on first use."""
    if calls not in _ANSWERS:
        _ANSWERS[calls] = JudgeAnswers()
        calls.batch_answers = _ANSWERS[calls].lookup
    return _ANSWERS[calls]


class JudgePhase:
    """The rows of one batch backend that wait for judges in batch mode, and the judges' batches."""

    def __init__(self, evaluated_id: str, calls: JobCalls, store: RunStore, run_id: str, window: int,
                 answer: Callable[[Task, Mapping[str, Any]], Awaitable[None]], hooks: BatchHooks) -> None:
        self.evaluated_id = evaluated_id
        self.calls = calls
        self.answers = judge_answers(calls)
        self.store = store
        self.run_id = run_id
        self.window = window
        self.inner = answer
        self.hooks = hooks
        self.waiting: list[tuple[Task, Mapping[str, Any]]] = []
        self.requests: dict[str, dict[str, DeferredCall]] = {}  # judge id -> request key -> the call

    async def answer(self, task: Task, payload: Mapping[str, Any]) -> None:
        """Score and write `task`'s answer, or hold it until its judge's batch is collected."""
        try:
            await self.inner(task, payload)
        except DeferredCall as call:
            self.waiting.append((task, payload))
            self.requests.setdefault(call.backend_id, {})[call.key] = call

    async def finish(self) -> bool:
        """Send the waiting rows' judge requests as batches, collect them and write the rows; True when the
        batches were left at the vendor (`detach`)."""
        while self.requests:
            requests, self.requests = self.requests, {}
            for judge_id, deferred in requests.items():
                if await self._judge(judge_id, deferred):
                    return True
                if any(key not in self.answers.collected for key in deferred):
                    return False  # interrupted, or a step failed: the rows wait for a resume
            waiting, self.waiting = self.waiting, []
            for task, payload in waiting:  # scored again: each judge answer is there now (or the next judge's call)
                await self.answer(task, payload)
        return False

    async def _judge(self, judge_id: str, deferred: Mapping[str, DeferredCall]) -> bool:
        judge = self.calls.backends[judge_id]
        tasks = [Task(task_id=key, index=0, item_id=key, item={}, backend_id=judge_id,
                      param_set=ParamSet("judge", call.params or GenerationParams()), repeat=0,
                      messages=tuple(call.messages)) for key, call in deferred.items()]
        hooks = BatchHooks(stopping=self.hooks.interrupted, interrupted=self.hooks.interrupted,
                           projection=lambda task: (0.0, 0), reserve=lambda task_id, cost, tokens: True,
                           answer=self._judged, fail=self._failed, show=self.hooks.show, detach=self.hooks.detach)
        dispatcher = BatchDispatcher(judge, batch_adapter(judge.provider), batch_settings(judge.spec), self.store,
                                     self.run_id, hooks, self.window, label=f"{judge_id} judging {self.evaluated_id}",
                                     key_of=lambda task: task.task_id)
        return await dispatcher.run(tasks)

    async def _judged(self, request: Task, payload: Mapping[str, Any]) -> None:
        self.answers.collected[request.task_id] = dict(payload)

    async def _failed(self, request: Task, error: errors.ProviderError) -> None:
        self.answers.collected[request.task_id] = {BATCH_ERROR: {"type": error.kind, "message": error.message}}


__all__ = ["JudgeAnswers", "JudgePhase", "judge_answers"]
