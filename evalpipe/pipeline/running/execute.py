"""One task from call to row: generate (through the backend's limits and the response cache),
score every criterion, and flatten the result into a row. Every outcome is a row: an answer
with its scores, or a classified error."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog

from evalpipe import errors
from evalpipe.pipeline.job.spec import GRID_KEYS
from evalpipe.pipeline.job.task import Task, canonical_json
from evalpipe.pipeline.running.backend import Backend, ResponseCache
from evalpipe.pipeline.running.chains import run_chain
from evalpipe.pipeline.running.limits import call_with_limits, prompt_tokens
from evalpipe.pipeline.running.model_calls import (
    JobCalls,
    ScoringSpend,
    charging,
    message_key,
    tool_calls_from_payload,
    tool_calls_payload,
)
from evalpipe.pipeline.running.tool_loop import TaskClock, run_tool_loop
from evalpipe.scoring.base import Score, Scorer
from evalpipe.scoring.calls import answering
from evalpipe.scoring.fields import row_columns
from evalpipe.scoring.modifiers import applies
from evalpipe.scoring.tools import offering
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, Image, ToolCall, Usage, deep_merge

log = structlog.get_logger("evalpipe.run")


@dataclass(frozen=True, slots=True)
class Criterion:
    """A scorer with its weight and optional pass threshold."""

    scorer: Scorer
    weight: float = 1.0
    threshold: float | None = None

    @property
    def name(self) -> str:
        return self.scorer.name


def request_key(task: Task, backend: Backend) -> str:
    """The cache key: the task's identity plus everything the provider will send.

    The hash of the canonical JSON of {backend, base_url, messages, mode, model, params, task}. The
    parts that depend only on the backend and the parameter set are serialised once per pair and kept
    on the backend; the text is laid out in `json.dumps(sort_keys=True)`'s order, so keys are what they
    were when the whole value was serialised per task (existing caches stay valid)."""
    parts = backend.request_parts.get(id(task.param_set))
    if parts is None or parts[0] is not task.param_set:  # keyed by identity: the ParamSet is kept with it
        parts = backend.request_parts[id(task.param_set)] = (task.param_set, _shared_request_parts(task, backend))
    head, tail = parts[1]
    messages = [message_key(m) for m in task.messages]
    mode = _MODES.get(task.mode) or _canonical(task.mode)
    # An id of letters and digits (a hash) is its own JSON between quotes: one serialisation less per task.
    identity = f'"{task.task_id}"' if task.task_id.isalnum() else _canonical(task.task_id)
    canonical = f'{head}"messages":{_canonical(messages)},"mode":{mode}{tail}"task":{identity}}}'
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def _shared_request_parts(task: Task, backend: Backend) -> tuple[str, str]:
    """The canonical JSON around a request key's messages, mode and task id: what is the same for every task
    of this backend and parameter set."""
    config = backend.provider.config
    params = config.params.merged(call_params(task, backend))
    # fields() + getattr, not asdict(): asdict deep-copies. Options added after caches existed count only
    # when set, and message parts only when present, so that the keys of existing caches stay what they were.
    values = ((f.name, getattr(params, f.name)) for f in fields(params))
    kept = {k: v for k, v in values if v is not None or k not in _LATER_OPTIONS}
    head = f'{{"backend":{_canonical(config.backend)},"base_url":{_canonical(config.base_url)},'
    tail = f',"model":{_canonical(config.model)},"params":{_canonical(kept)},'
    return head, tail


_canonical = canonical_json
# `json.dumps(ensure_ascii=False, separators=(",", ":"))` with one encoder: `json.dumps` builds one per call.
_compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


_LATER_OPTIONS = frozenset({"tools", "tool_choice"})
_MODES = {"chat": '"chat"', "completion": '"completion"'}  # each mode's canonical JSON


def call_params(task: Task, backend: Backend) -> GenerationParams:
    """The task's parameters with the backend's own `extra_body` and `headers` beneath the set's."""
    params, spec = task.param_set.params, backend.spec
    if not spec.extra_body and not spec.headers:
        return params
    return replace(params, extra_body=deep_merge(spec.extra_body, params.extra_body or {}) or None,
                   headers={**spec.headers, **(params.headers or {})} or None)


def expected_output_tokens(task: Task, backend: Backend) -> int:
    """A pessimistic guess for the TPM limiter and the budget, corrected by the real usage later."""
    return task.param_set.params.max_tokens or backend.provider.config.params.max_tokens or 256


async def generate(
    task: Task, backend: Backend, cache: ResponseCache, timeout_s: float = math.inf, calls: JobCalls | None = None,
    chain_spend: ScoringSpend | None = None, clock: TaskClock | None = None,
) -> tuple[ChatResponse, bool, float]:
    """The answer to `task`, from the cache when it was already paid for; (response, cached, cost).

    A chain task runs its steps through `calls` (each step cached on its own); its answer is the last
    step's, its tokens and cost those of every step.

    `timeout_s` bounds the task from its first attempt on: time spent queueing for the backend's
    limits before that (a slow rate limit, a Retry-After pause) does not count, so a long queue
    never turns into timeouts of calls that were not even sent. Raises TimeoutError when it runs out.
    `clock` (a tool loop's) carries that bound over several calls; `timeout_s` is then its own."""
    if task.chain is not None:
        if calls is None:
            raise errors.ConfigError("a chain is run through the job's calls; none were given")
        with anyio.fail_after(timeout_s):
            response, cost = await run_chain(task.chain, task.task_id, task.backend_id, dict(task.item),
                                             task.param_set.params, calls, chain_spend or ScoringSpend())
        return response, False, cost
    key = request_key(task, backend)
    if (hit := await cache.get(key)) is not None:
        response = response_from_payload(hit)
        return response, True, backend.cost(response.usage)
    provider, params = backend.provider, call_params(task, backend)
    bound = clock if clock is not None else TaskClock(timeout_s)

    async def attempt() -> ChatResponse:
        bound.remaining()  # the task's clock starts at its first attempt
        # A bare cancel scope with the deadline, not `fail_after`: half its cost, and this runs per call.
        with anyio.CancelScope(deadline=bound.deadline if bound.deadline is not None else math.inf):
            if backend.spec.stream:  # the same answer and price, plus its time to first token
                if task.mode == "completion":
                    return await provider.astream_complete(task.prompt_text, params).collect()
                return await provider.astream(task.messages, params).collect()
            if task.mode == "completion":
                return await provider.acomplete(task.prompt_text, params)
            return await provider.achat(task.messages, params)
        raise TimeoutError  # reached only when the scope caught its own cancellation: the deadline passed

    estimate = prompt_tokens(task.messages, params.tools or (), type(provider), provider.model) \
        + expected_output_tokens(task, backend)
    response, attempts = await call_with_limits(
        backend.limiter, backend.policy, attempt, estimate, lambda r: r.usage.total_tokens
    )
    response.attempts = attempts
    await cache.put(key, payload_from_response(response))
    return response, False, backend.cost(response.usage)


_USAGE_KINDS = ("reasoning_tokens", "cached_input_tokens", "cache_write_input_tokens")


def payload_from_response(response: ChatResponse) -> dict[str, Any]:
    usage = response.usage
    return {"text": response.text, "finish_reason": response.finish_reason, "model": response.model,
            "input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens,
            **{kind: getattr(usage, kind) for kind in _USAGE_KINDS},
            "latency_s": response.latency_s, "ttft_s": response.ttft_s, "reasoning": response.reasoning,
            "refusal": response.refusal, "safety": response.safety, "attempts": response.attempts,
            "tool_calls": tool_calls_payload(response.tool_calls)}


def response_from_payload(payload: Mapping[str, Any]) -> ChatResponse:
    # Payloads cached before a field existed lack it: .get() keeps old run stores resumable.
    usage = Usage(payload["input_tokens"], payload["output_tokens"], **{kind: payload.get(kind) or 0
                                                                       for kind in _USAGE_KINDS})
    return ChatResponse(
        text=payload["text"], finish_reason=payload["finish_reason"], model=payload["model"], usage=usage,
        latency_s=payload["latency_s"], ttft_s=payload["ttft_s"], reasoning=payload["reasoning"],
        attempts=payload["attempts"], refusal=payload.get("refusal"), safety=payload.get("safety"),
        tool_calls=tool_calls_from_payload(payload.get("tool_calls")),
    )


async def score_answer(task: Task, response: ChatResponse, criteria: Sequence[Criterion],
                       cost_usd: float | None = None) -> dict[str, Any]:
    """Score columns for the row: each criterion's score and explanation, the weighted total, passed,
    and what the scorers' own model calls spent. `cost_usd` (the answer's) is there for field criteria."""
    with (charging(task.task_id) as spend, answering(task.backend_id), row_columns(cost_usd=cost_usd),
          offering(task.param_set.params.tools or ())):
        columns = await _scores(task, response, criteria)
    columns.update(scoring_input_tokens=spend.input_tokens, scoring_output_tokens=spend.output_tokens,
                   scoring_cost_usd=spend.cost_usd)
    return columns


async def _scores(task: Task, response: ChatResponse, criteria: Sequence[Criterion]) -> dict[str, Any]:
    """Each criterion's columns, the weighted total of the scores there are, and `passed`: None (no verdict)
    when no criterion with a threshold applies to the item, else whether each of those scored and met it."""
    columns: dict[str, Any] = {}
    total, weights, passed, judged = 0.0, 0.0, True, False
    for criterion in criteria:
        try:
            score = await criterion.scorer(task.item, task.messages, response)
        except Exception as error:  # a scorer must not raise, but if one does the row still gets written
            log.exception("scorer failed", scorer=criterion.name, task_id=task.task_id)
            score = Score.missing(f"scorer failed: {type(error).__name__}: {errors.redact(str(error))}")
        columns[f"score_{criterion.name}"] = score.value
        columns[f"explanation_{criterion.name}"] = score.explanation or score.error
        if not applies(score):
            continue  # a criterion for other items (`when`): no score, no verdict
        judged = judged or criterion.threshold is not None
        if score.value is None or not math.isfinite(score.value):
            if criterion.threshold is not None:
                passed = False  # a missing score cannot meet a threshold; the total uses what is there
            continue
        total += criterion.weight * score.value
        weights += criterion.weight
        if criterion.threshold is not None and score.value < criterion.threshold:
            passed = False
    columns["score_total"] = total / weights if weights else None
    # Without a threshold nothing was asked of the answer: "passed" would claim a verdict no one gave.
    columns["passed"] = passed if judged else None
    return columns


async def execute_task(
    task: Task, backend: Backend, criteria: Sequence[Criterion], *, run_id: str, cache: ResponseCache,
    timeout_s: float, calls: JobCalls | None = None,
) -> list[dict[str, Any]]:
    """The rows of `task`: one, or one per turn of a dialogue; never raises for a failure of a call."""
    if task.dialogue is None:
        return [await execute(task, backend, criteria, run_id=run_id, cache=cache, timeout_s=timeout_s, calls=calls)]
    rows: list[dict[str, Any]] = []
    for turn in dialogue_turns(task):
        if task.dialogue == "rollout" and rows:
            if rows[-1]["status"] != "ok":  # the model's own history is missing from here on
                rows.append(base_row(turn, backend, run_id) | {
                    "status": "error", "error_type": "PreviousTurnFailed",
                    "error_message": f"turn {turn.turn - 1} failed, so this turn has no history to answer",
                    "started_at": datetime.now(UTC), "finished_at": datetime.now(UTC)})
                continue
            turn = replace(turn, messages=rollout_history(turn, rows))
        rows.append(await execute(turn, backend, criteria, run_id=run_id, cache=cache, timeout_s=timeout_s))
    return rows


def dialogue_turns(task: Task) -> list[Task]:
    """A dialogue task as one task per user turn, each with the transcript up to its user message.

    The turn's item also carries `turn` and `reference_answer` (the transcript's own answer to that
    turn, or None) for scorers to compare with."""
    turns = []
    users = [i for i, message in enumerate(task.messages) if message.role == "user"]
    for turn, (position, row_id) in enumerate(zip(users, task.row_ids, strict=True)):
        following = task.messages[position + 1] if position + 1 < len(task.messages) else None
        reference = following.content if following is not None and following.role == "assistant" else None
        item = {**task.item, "turn": turn, "reference_answer": reference}
        turns.append(replace(task, task_id=row_id, item=item, messages=task.messages[:position + 1], turn=turn,
                             dialogue=None, item_json=None))
    return turns


def rollout_history(turn: Task, earlier: Sequence[Mapping[str, Any]]) -> tuple[ChatMessage, ...]:
    """`turn`'s messages with the transcript's answers replaced by the model's own (`earlier` rows' responses)."""
    answers = iter(row["response"] for row in earlier)
    kept = [message for message in turn.messages if message.role != "assistant"]
    history: list[ChatMessage] = []
    for message in kept[:-1]:
        history.append(message)
        if message.role == "user":
            history.append(ChatMessage("assistant", next(answers)))
    return (*history, kept[-1])


async def execute(
    task: Task, backend: Backend, criteria: Sequence[Criterion], *, run_id: str, cache: ResponseCache,
    timeout_s: float, calls: JobCalls | None = None,
) -> dict[str, Any]:
    """The row for `task`; never raises for a failure of the call (cancellation still propagates)."""
    started_at = datetime.now(UTC)
    row = base_row(task, backend, run_id)
    chain_spend = ScoringSpend()  # what a chain's (or tool loop's) steps paid, kept when a later step fails
    trajectory: list[Any] | None = None
    try:
        if task.tool_loop is not None and task.chain is None:
            clock, trajectory = TaskClock(timeout_s), []  # one bound for all the loop's steps; steps kept on failure
            response, cached, cost, trajectory = await run_tool_loop(
                task, task.tool_loop, lambda step: generate(step, backend, cache, timeout_s, clock=clock), chain_spend,
                clock, trajectory)
        else:
            response, cached, cost = await generate(task, backend, cache, timeout_s, calls, chain_spend)
    except errors.ProviderError as error:
        row.update(status="error", error_type=error.kind, error_message=error.message, attempts=error.attempts)
        if error.safety is not None:  # a request the vendor's content filter refused: keep its verdict
            row["safety"] = json.dumps(error.safety)
    except TimeoutError:
        row.update(status="error", error_type="TimeoutError", error_message=f"task took over {timeout_s}s")
        if trajectory is not None:
            row["error_message"] += f" (all its tool loop's steps together; {len(trajectory)} finished)"
    except errors.EvalpipeError as error:  # unsupported feature, bad configuration found late
        row.update(status="error", error_type=type(error).__name__, error_message=error.message)
    except Exception as error:
        # A bug in a provider's parsing must cost one row, not the run and every call in flight with it.
        log.exception("task failed unexpectedly", task_id=task.task_id, backend=task.backend_id)
        row.update(status="error", error_type=type(error).__name__,
                   error_message=f"unexpected error: {errors.redact(str(error))}")
    else:
        row.update(
            status="ok", response=response.text, reasoning=response.reasoning, finish_reason=response.finish_reason,
            refusal=response.refusal, safety=None if response.safety is None else json.dumps(response.safety),
            tool_calls=tool_calls_json(response.tool_calls),
            trajectory=None if trajectory is None else json.dumps(trajectory, ensure_ascii=False, default=str),
            model=response.model or row["model"], input_tokens=response.usage.input_tokens,
            output_tokens=response.usage.output_tokens,
            **{kind: getattr(response.usage, kind) for kind in _USAGE_KINDS}, cost_usd=cost,
            latency_s=response.latency_s, ttft_s=response.ttft_s, attempts=response.attempts, cached=cached,
        )
        row.update(await score_answer(task, response, criteria, cost))
    if row["status"] == "error" and (task.chain is not None or task.tool_loop is not None):
        row.update(input_tokens=chain_spend.input_tokens, output_tokens=chain_spend.output_tokens,
                   cost_usd=chain_spend.cost_usd)
        if trajectory:  # what the loop did before it failed
            row["trajectory"] = json.dumps(trajectory, ensure_ascii=False, default=str)
    row.update(started_at=started_at, finished_at=datetime.now(UTC))
    return row


def tool_calls_json(calls: Sequence[ToolCall]) -> str | None:
    """The row's `tool_calls` column: `[{id, name, arguments, raw_arguments}]` as JSON, None without calls."""
    if not calls:
        return None
    return json.dumps([{"id": c.id, "name": c.name, "arguments": c.arguments, "raw_arguments": c.raw_arguments}
                       for c in calls], ensure_ascii=False, separators=(",", ":"))


def base_row(task: Task, backend: Backend, run_id: str) -> dict[str, Any]:
    """The columns every row has, whatever happened: what was asked, of whom, about which item."""
    # The columns that depend only on the backend and the parameter set are built once per pair and kept
    # on the backend (keyed as `request_parts` is): they were a third of this function's time.
    parts = backend.row_parts.get(id(task.param_set))
    if parts is None or parts[0] is not task.param_set:
        parts = backend.row_parts[id(task.param_set)] = (task.param_set, {
            "provider": backend.spec.backend.value, "model": backend.provider.model,
            "param_set": task.param_set.name, **sent_options(task, backend)})
    row = {"run_id": run_id, "task_id": task.task_id, "task_index": task.index, "item_id": task.item_id,
           "backend_id": task.backend_id}
    row.update(parts[1])
    item = task.item_json if task.item_json is not None else item_json(task.item)
    row.update(repeat=task.repeat, turn=task.turn, item=item, prompt=task.prompt_text,
               messages=messages_json(task, backend), cached=False, attempts=0)
    return row


def item_json(item: Mapping[str, Any]) -> str:
    """The item's fields as canonical JSON: sorted keys, so equal items give equal text in every run."""
    return canonical_json(item)


def messages_json(task: Task, backend: Backend) -> str:
    """The prompt as sent, as JSON: a chat's messages `[{role, content}]` with the system prompt the provider
    adds (its own or the parameter set's, when the messages have none), or a completion's prompt text.

    A completion prompt is the rendered text: how a backend wraps it (a chat template, Ollama's `system`)
    is the backend's business and not known here."""
    if task.mode == "completion":
        return json.dumps(task.prompt_text, ensure_ascii=False)
    messages = [message_json(m) for m in task.messages]
    # As the provider does it (`Provider.achat`): its system prompt goes first when the messages have none.
    system = task.param_set.params.system or backend.provider.config.params.system
    if system and not any(m.role == "system" for m in task.messages):
        messages.insert(0, {"role": "system", "content": system})
    return _compact_json(messages)


def message_json(message: ChatMessage) -> dict[str, Any]:
    """A message for the row's `messages` column: role and content, plus where its images came from."""
    shown: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.images:
        shown["images"] = [image_source(image) for image in message.images]
    return shown


def image_source(image: Image) -> str:
    """An image as the row records it: its path or URL (a data URL by its type and size), or its size in bytes."""
    if image.path is not None:
        return image.path
    if image.url is not None:
        head, _, data = image.url.partition(",")
        return f"{head},<{len(data)} characters>" if image.url.startswith("data:") else image.url
    return f"<{len(image.data or b'')} bytes>"


def sent_options(task: Task, backend: Backend) -> dict[str, Any]:
    """The row's sampling columns: what the backend sends, so an option it ignores is recorded as None
    (a sweep over it must not look like a real sweep)."""
    params, ignored = task.param_set.params, backend.provider.ignored_options
    return {name: None if name in ignored else getattr(params, name) for name in GRID_KEYS}  # each has a column
