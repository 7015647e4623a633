"""Expansion: a job's items × backends × parameter sets × repeats, as tasks made one at a time.

The order is item-major: every task of the first item (each backend, then each parameter set, then
each repeat), then the second item, and so on. So the first rows of a run already cover every backend
and parameter set, and a run stopped early (budget, Ctrl-C) still compares them on the same items.
Nothing is materialised: the dataset streams, and each item's prompt is rendered once for all its tasks.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from evalpipe.pipeline.job.load import LoadedJob, model_for
from evalpipe.pipeline.job.projection import DEFAULT_OUTPUT_TOKENS, CallProjection, Projector, TokenCounter
from evalpipe.pipeline.job.spec import BackendSpec, ParamSetSpec
from evalpipe.pipeline.job.task import ParamSet, Task, TaskIds, ToolLoop
from evalpipe.pipeline.job.tools import image_templates, with_images
from evalpipe.types import GenerationParams, Tool

# The plan renders the prompts of the first items only and scales their projection to the whole dataset.
PLAN_SAMPLE_ITEMS = 1000


def param_set_from_spec(spec: ParamSetSpec, tools: Sequence[Tool] = (), tool_choice: str | None = None) -> ParamSet:
    """The runtime `ParamSet` for one parameter set of a job file, offering `tools`."""
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
        tools=tuple(tools) or None,
        tool_choice=(spec.tool_choice or tool_choice) if tools else None,
    )
    return ParamSet(spec.name, params)


def param_sets(loaded: LoadedJob) -> list[ParamSet]:
    """Every parameter set of the job in expansion order: the explicit `sets`, then the `grid`'s; each
    offers the job's tools, with its own `tool_choice` or the job's."""
    return [param_set_from_spec(spec, loaded.tools, loaded.spec.tool_choice)
            for spec in loaded.spec.parameters.expanded()]


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
    ids = TaskIds(loaded.spec.prompt.model_dump(mode="json"))
    mode = loaded.spec.prompt.mode
    dialogue = loaded.spec.prompt.dialogue_mode if loaded.spec.prompt.dialogue is not None else None
    images = image_templates(loaded.spec, loaded.dataset, loaded.base_dir)
    steps = loaded.spec.max_steps
    loop = ToolLoop(loaded.tool_functions, steps) if steps > 1 and loaded.tool_functions else None
    for item in loaded.dataset:
        messages = loaded.templates.render(item.data)
        if images is not None:
            messages = with_images(messages, images.render(item.data))
        item_json = ids.item_json(item.data)
        for backend_index, backend, model in backends:
            for set_index, param_set in enumerate(sets):
                for repeat in range(repeats):
                    identity = ids.task_id(item_json, backend_id=backend.id, model=model, param_set=param_set,
                                           repeat=repeat)
                    index = item.position * per_item + backend_index * per_backend + set_index * repeats + repeat
                    yield Task(identity, index, item.id, item.data, backend.id, param_set, repeat, messages, mode,
                               dialogue=dialogue, chain=loaded.chain, tool_loop=loop, item_json=item_json)


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
class Spend:
    """Calls, estimated tokens and their cost."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


@dataclass(frozen=True, slots=True)
class BackendPlan:
    """What one backend will be asked: calls, estimated tokens and their cost, at the worst case of a
    tool loop (every task takes `max_steps` calls); `one_step` is the same with one call per task."""

    backend_id: str
    backend: str
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    one_step: Spend = Spend()
    tool_tokens: int = 0  # of input_tokens: tool definitions
    image_tokens: int = 0  # of input_tokens: images
    live_cost_usd: float | None = None  # in batch mode: what the same calls would cost live

    @property
    def batch_saving_usd(self) -> float:
        """What batch mode saves against live (0 for a live backend)."""
        return 0.0 if self.live_cost_usd is None else self.live_cost_usd - self.cost_usd


@dataclass(frozen=True, slots=True)
class Plan:
    """A job's size and estimated spend, before any call.

    Input tokens are counted on the prompts as the backends receive them (rendered from the first
    `sampled_items` items, system prompt, each turn of a dialogue and the chat format's framing
    included); output tokens assume every call uses its `max_tokens` (or `DEFAULT_OUTPUT_TOKENS`), so
    they are an upper bound when `max_tokens` is set. Input includes the tools' definitions and the
    images by each vendor's rule. `tasks` counts the rows of the backends that can run; `calls` also
    counts chain steps and the calls of model-backed scorers, each on the backend or judge that answers
    it. With a tool loop (`max_steps` above 1) the figures are its worst case, every task taking all
    its steps, and `one_step` the case of one call per task; the runner's budget guard projects each
    task the same way, at the worst case.
    """

    tasks: int
    items: int
    param_sets: int
    repeats: int
    sampled_items: int
    backends: tuple[BackendPlan, ...]
    skipped: dict[str, str] = field(default_factory=dict)  # optional backends that cannot run here: why
    tasks_skipped: int = 0
    max_cost_usd: float | None = None
    max_tokens: int | None = None
    max_steps: int = 1
    images: int = 0  # images sent by the evaluated backends' answering calls (first call of each task)

    @property
    def one_step(self) -> Spend:
        """The whole job's spend when every task answers in one call (a tool loop's expected case)."""
        return Spend(sum(b.one_step.calls for b in self.backends), sum(b.one_step.input_tokens for b in self.backends),
                     sum(b.one_step.output_tokens for b in self.backends),
                     sum(b.one_step.cost_usd for b in self.backends))

    @property
    def tool_tokens(self) -> int:
        """Of the input tokens: the tool definitions, over all calls that offer them."""
        return sum(b.tool_tokens for b in self.backends)

    @property
    def image_tokens(self) -> int:
        """Of the input tokens: the images, over all calls that send them."""
        return sum(b.image_tokens for b in self.backends)

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

    @property
    def batch_saving_usd(self) -> float:
        """What the backends in batch mode save against the same calls live."""
        return sum(b.batch_saving_usd for b in self.backends)

    def over_budget(self) -> list[str]:
        """One line per budget limit the projection exceeds (none when it fits)."""
        lines = []
        if self.max_cost_usd is not None and self.cost_usd > self.max_cost_usd:
            lines.append(f"projected cost ${self.cost_usd:.4f} exceeds the budget max_cost_usd ${self.max_cost_usd:g} "
                         f"(about {self._fitting(self.max_cost_usd / self.cost_usd)} of {self.tasks:,} tasks fit)")
        tokens = self.input_tokens + self.output_tokens
        if self.max_tokens is not None and tokens > self.max_tokens:
            lines.append(f"projected {tokens:,} tokens exceed the budget max_tokens {self.max_tokens:,} "
                         f"(about {self._fitting(self.max_tokens / tokens)} of {self.tasks:,} tasks fit)")
        return lines

    def _fitting(self, share: float) -> str:
        return f"{int(self.tasks * share):,}"


def plan_job(loaded: LoadedJob, *, count: TokenCounter | None = None,
             skipped: Mapping[str, str] | None = None) -> Plan:
    """Count the job's calls per backend and judge and estimate their tokens and cost.

    Each sampled item is projected as the runner projects its tasks (`Projector`): the answer (or a
    chain's steps, on the evaluated backend or the one they name; a tool loop's steps, at the worst
    case and at one call) and the calls of model-backed scorers (judges, embeddings, self-explanations),
    for every parameter set and repeat, with the item's images and the job's tools. `count` counts a
    prompt's input tokens (default: the backend's own estimate); backends in `skipped` (default: the
    optional ones `load_job` found unable to run) are left out and their tasks counted as skipped."""
    spec = loaded.spec
    skipped = dict(loaded.skipped if skipped is None else skipped)
    sets = spec.parameters.expanded()
    evaluated = [b for b in spec.backends if b.id not in skipped]
    projector = Projector(spec, count, loaded.tools)
    # Per backend: calls, input, output, tool and image tokens at the worst case; calls, input, output at one step.
    usage: dict[str, list[int]] = {b.id: [0] * 8 for b in (*spec.backends, *spec.judges) if b.id not in skipped}
    images = image_templates(spec, loaded.dataset, loaded.base_dir)
    sampled = pictures = 0
    for item in loaded.dataset:
        if sampled >= PLAN_SAMPLE_ITEMS:
            break
        sampled += 1
        messages = loaded.templates.render(item.data)
        if images is not None:
            messages = with_images(messages, images.render(item.data))
            pictures += sum(len(m.images) for m in messages) * len(evaluated) * len(sets) * spec.repeats
        for backend in evaluated:
            for param_set in sets:
                answer = param_set.max_tokens or DEFAULT_OUTPUT_TOKENS
                for worst, expected in zip(projector.calls(backend.id, messages, answer),
                                           projector.calls(backend.id, messages, answer, steps=1), strict=True):
                    entry = usage.setdefault(worst.backend_id, [0] * 8)
                    for index, value in enumerate((worst.calls, worst.input_tokens, worst.output_tokens,
                                                   worst.tool_tokens, worst.image_tokens, expected.calls,
                                                   expected.input_tokens, expected.output_tokens)):
                        entry[index] += value * spec.repeats
    items = len(loaded.dataset)
    scale = items / sampled if sampled else 0.0  # the sample's projection, scaled to the whole dataset
    by_id = {b.id: b for b in (*spec.backends, *spec.judges)}
    backends = []
    for backend_id, totals in usage.items():
        if not totals[0] and backend_id not in {b.id for b in evaluated}:
            continue
        calls, input_tokens, output_tokens, tools, pixels, one_calls, one_input, one_output = (
            round(value * scale) for value in totals)
        projected = [CallProjection(backend_id, calls, input_tokens, output_tokens)]
        cost = projector.cost(projected)
        live = projector.cost(projected, live=True) if by_id[backend_id].mode == "batch" else None
        one = Spend(one_calls, one_input, one_output,
                    projector.cost([CallProjection(backend_id, one_calls, one_input, one_output)]))
        backends.append(BackendPlan(backend_id, by_id[backend_id].backend.value, model_for(by_id[backend_id]), calls,
                                    input_tokens, output_tokens, cost, one, tools, pixels, live))
    skipped_ids = {b.id for b in spec.backends if b.id in skipped}
    return Plan(
        tasks=count_tasks(loaded, backend_ids={b.id for b in evaluated}) if evaluated else 0,
        items=items, param_sets=len(sets), repeats=spec.repeats, sampled_items=sampled, backends=tuple(backends),
        skipped=skipped, tasks_skipped=count_tasks(loaded, backend_ids=skipped_ids) if skipped_ids else 0,
        max_cost_usd=spec.budget.max_cost_usd, max_tokens=spec.budget.max_tokens, max_steps=spec.max_steps,
        images=round(pictures * scale),
    )
