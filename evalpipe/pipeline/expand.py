"""Expansion: a job's items × backends × parameter sets × repeats, as tasks made one at a time.

The order is item-major: every task of the first item (each backend, then each parameter set, then
each repeat), then the second item, and so on. So the first rows of a run already cover every backend
and parameter set, and a run stopped early (budget, Ctrl-C) still compares them on the same items.
Nothing is materialised: the dataset streams, and each item's prompt is rendered once for all its tasks.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass

from evalpipe.pipeline.limits import prompt_tokens
from evalpipe.pipeline.load import LoadedJob, model_for
from evalpipe.pipeline.spec import BackendSpec, ParamSetSpec
from evalpipe.pipeline.task import ParamSet, Task, task_id
from evalpipe.scoring.calls import ANSWERING
from evalpipe.scoring.registry import model_backend
from evalpipe.types import GenerationParams

# The plan assumes this many output tokens per call when a parameter set has no `max_tokens`.
DEFAULT_OUTPUT_TOKENS = 256
# The plan renders the prompts of the first items only and scales their average to the whole dataset.
PLAN_SAMPLE_ITEMS = 1000
# What the plan assumes for a scorer's model call: its own instructions on top of the question and
# answer, and its reply when the scorer sets no `max_tokens`.
SCORER_PROMPT_TOKENS = 100
SCORER_OUTPUT_TOKENS = 512


def param_set_from_spec(spec: ParamSetSpec) -> ParamSet:
    """The runtime `ParamSet` for one parameter set of a job file."""
    params = GenerationParams(
        temperature=spec.temperature,
        top_p=spec.top_p,
        top_k=spec.top_k,
        max_tokens=spec.max_tokens,
        seed=spec.seed,
        stop=tuple(spec.stop) if spec.stop is not None else None,
        reasoning_effort=spec.reasoning_effort,
        reasoning_budget_tokens=spec.reasoning_budget_tokens,
        extra_body=spec.extra_body,
        headers=spec.headers,
    )
    return ParamSet(spec.name, params)


def param_sets(loaded: LoadedJob) -> list[ParamSet]:
    """Every parameter set of the job in expansion order: the explicit `sets`, then the `grid`'s."""
    return [param_set_from_spec(spec) for spec in loaded.spec.parameters.expanded()]


def _selected(loaded: LoadedJob, backend_ids: Collection[str] | None) -> list[tuple[int, BackendSpec]]:
    return [(i, b) for i, b in enumerate(loaded.spec.backends) if backend_ids is None or b.id in backend_ids]


def expand_job(loaded: LoadedJob, *, backend_ids: Collection[str] | None = None) -> Iterator[Task]:
    """The job's tasks, lazily, item-major; `backend_ids` keeps only those backends.

    A task's `index` is its position in the full expansion, even when backends are left out, so rows
    of runs with different backend selections sort into the same order. A template that fails on an
    item's values (checked at load time on a sample only) raises `TemplateRenderError`.
    """
    sets = param_sets(loaded)
    repeats = loaded.spec.repeats
    backends = [(i, b, model_for(b)) for i, b in _selected(loaded, backend_ids)]
    per_backend = len(sets) * repeats
    per_item = len(loaded.spec.backends) * per_backend
    template = loaded.spec.prompt.model_dump(mode="json")
    mode = loaded.spec.prompt.mode
    dialogue = loaded.spec.prompt.dialogue_mode if loaded.spec.prompt.dialogue is not None else None
    for item in loaded.dataset:
        messages = loaded.templates.render(item.data)
        for backend_index, backend, model in backends:
            for set_index, param_set in enumerate(sets):
                for repeat in range(repeats):
                    identity = task_id(item=item.data, backend_id=backend.id, model=model,
                                       param_set=param_set, repeat=repeat, template=template)
                    index = item.position * per_item + backend_index * per_backend + set_index * repeats + repeat
                    yield Task(identity, index, item.id, item.data, backend.id, param_set, repeat, messages, mode,
                               dialogue=dialogue, chain=loaded.chain)


def count_tasks(loaded: LoadedJob, *, backend_ids: Collection[str] | None = None) -> int:
    """How many rows the tasks `expand_job` yields will write (one per task, one per turn of a dialogue)."""
    per_item = len(_selected(loaded, backend_ids)) * len(loaded.spec.parameters.expanded()) * loaded.spec.repeats
    field = loaded.spec.prompt.dialogue
    if field is None:
        return len(loaded.dataset) * per_item
    # A dialogue that cannot be read still ends as one (error) row.
    turns = (item.data.get(field) for item in loaded.dataset)
    return per_item * sum(max(1, sum(isinstance(t, dict) and t.get("role") == "user" for t in turn_list))
                          if isinstance(turn_list, list) else 1 for turn_list in turns)


@dataclass(frozen=True, slots=True)
class BackendPlan:
    """What one backend will be asked: calls, estimated tokens and their cost."""

    backend_id: str
    backend: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


@dataclass(frozen=True, slots=True)
class Plan:
    """A job's size and estimated spend, before any call.

    Input tokens are estimated from the rendered prompts of the first `sampled_items` items; output
    tokens assume every call uses its `max_tokens` (or `DEFAULT_OUTPUT_TOKENS`), so they are an upper
    bound when `max_tokens` is set. `tasks` counts rows; `calls` also counts chain steps and the calls
    of model-backed scorers, each on the backend or judge that answers it.
    """

    tasks: int
    items: int
    param_sets: int
    repeats: int
    sampled_items: int
    backends: tuple[BackendPlan, ...]

    @property
    def calls(self) -> int:
        """Calls over all backends and judges."""
        return sum(b.calls for b in self.backends)

    @property
    def input_tokens(self) -> int:
        """Estimated input tokens over all backends."""
        return sum(b.input_tokens for b in self.backends)

    @property
    def output_tokens(self) -> int:
        """Estimated output tokens over all backends."""
        return sum(b.output_tokens for b in self.backends)

    @property
    def cost_usd(self) -> float:
        """Estimated cost over all backends, from their prices per million tokens."""
        return sum(b.cost_usd for b in self.backends)


def plan_job(loaded: LoadedJob) -> Plan:
    """Count the job's calls per backend and judge and estimate their tokens and cost.

    Besides the answers: a chain's steps (on the evaluated backend or the one they name), and the
    calls of model-backed scorers (judges, embeddings, self-explanations), one per row each. A
    scorer's input is estimated as the prompt plus the answer plus `SCORER_PROMPT_TOKENS`, its output
    as its `max_tokens` (none for embeddings)."""
    spec = loaded.spec
    sets = spec.parameters.expanded()
    items, repeats = len(loaded.dataset), spec.repeats
    sampled = 0
    sample_tokens = 0
    for item in loaded.dataset:
        if sampled >= PLAN_SAMPLE_ITEMS:
            break
        sample_tokens += prompt_tokens(loaded.templates.render(item.data))
        sampled += 1
    # Rows per evaluated backend: a dialogue item has a row per user turn, any other item one.
    prompts = count_tasks(loaded, backend_ids={spec.backends[0].id}) // (len(sets) * repeats)
    rows = prompts * len(sets) * repeats
    prompt_in = sample_tokens / sampled if sampled else 0.0  # per call
    answer_out = prompts * repeats * sum(s.max_tokens or DEFAULT_OUTPUT_TOKENS for s in sets) / max(rows, 1)
    usage: dict[str, list[float]] = {b.id: [0, 0.0, 0.0] for b in (*spec.backends, *spec.judges)}  # calls, in, out

    def add(backend_id: str, calls: int, input_each: float, output_each: float) -> None:
        entry = usage[backend_id]
        entry[0] += calls
        entry[1] += calls * input_each
        entry[2] += calls * output_each

    chain = spec.prompt.chain
    for evaluated in spec.backends:
        if chain is None:
            add(evaluated.id, rows, prompt_in, answer_out)
        for step in chain or ():
            output = step.max_tokens or DEFAULT_OUTPUT_TOKENS
            add(step.backend or evaluated.id, rows, prompt_in + answer_out, output)
        for scorer in spec.scorers:
            options = dict(scorer.model_extra or {})
            target = model_backend(scorer.type, options)
            if isinstance(target, str):
                output = 0 if scorer.type == "semantic_relevance" else options.get("max_tokens", SCORER_OUTPUT_TOKENS)
                add(evaluated.id if target == ANSWERING else target, rows,
                    prompt_in + answer_out + SCORER_PROMPT_TOKENS, output)
    by_id = {b.id: b for b in (*spec.backends, *spec.judges)}
    backends = tuple(
        BackendPlan(
            backend_id=backend_id,
            backend=by_id[backend_id].backend.value,
            model=model_for(by_id[backend_id]),
            calls=int(calls),
            input_tokens=round(input_tokens),
            output_tokens=round(output_tokens),
            cost_usd=(input_tokens * by_id[backend_id].price_input_per_1m
                      + output_tokens * by_id[backend_id].price_output_per_1m) / 1_000_000,
        )
        for backend_id, (calls, input_tokens, output_tokens) in usage.items()
        if calls or backend_id in {b.id for b in spec.backends}
    )
    return Plan(rows * len(spec.backends), items, len(sets), repeats, sampled, backends)
