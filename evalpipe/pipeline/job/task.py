"""A task: one call to make (an item × a backend × a parameter set × a repeat), and its stable id."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Literal

from evalpipe.types import ChatMessage, GenerationParams

if TYPE_CHECKING:
    from evalpipe.chain import MultiPromptChain


@dataclass(frozen=True, slots=True)
class ToolLoop:
    """The job's Python tools by name, and how many model calls a task may take (`tool_loop` runs it)."""

    functions: Mapping[str, Callable[..., Any]]
    max_steps: int


@dataclass(frozen=True, slots=True)
class ParamSet:
    """Named sampling parameters."""

    name: str
    params: GenerationParams


@dataclass(frozen=True, slots=True)
class Task:
    """Everything needed to make one call and write its row; self-contained, addressed by `task_id`."""

    task_id: str
    index: int  # position in the expansion order: rows can be sorted back into it
    item_id: str
    item: Mapping[str, Any]  # the dataset item, for scorers (references, expected answers)
    backend_id: str
    param_set: ParamSet
    repeat: int
    messages: tuple[ChatMessage, ...]
    mode: Literal["chat", "completion"] = "chat"
    turn: int = 0
    # A dialogue task holds a whole transcript in `messages` and makes one call and row per user turn.
    dialogue: Literal["fixed", "rollout"] | None = None
    chain: MultiPromptChain | None = None  # the job's prompt chain, when a chain is what is evaluated
    tool_loop: ToolLoop | None = None  # the job's Python tools, when the runner runs the calls and asks again
    # `item` as canonical JSON (sorted keys), when the expansion made it already for the id: the row's
    # `item` column is the same text. None: made from `item` when needed (a task whose item was changed).
    item_json: str | None = None

    @property
    def prompt_text(self) -> str:
        """The prompt as one text, for the row: the completion prompt, or the last user message."""
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users else ""

    @property
    def row_ids(self) -> tuple[str, ...]:
        """The ids of the task's rows: its own id, or one per turn of a dialogue (they sort in turn order)."""
        if self.dialogue is None:
            return (self.task_id,)
        turns = sum(m.role == "user" for m in self.messages)
        return tuple(f"{self.task_id}-{turn:03d}" for turn in range(turns))


def stable_hash(value: Any, length: int = 24) -> str:
    """A hex digest of `value`'s canonical JSON: equal inputs give equal ids across runs and machines."""
    canonical = canonical_json(value)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def task_id(
    *,
    item: Mapping[str, Any],
    backend_id: str,
    model: str,
    param_set: ParamSet,
    repeat: int,
    template: Any,
    turn: int = 0,
) -> str:
    """The id keying resume and the response cache: it changes whenever an input of the call changes."""
    # fields() + getattr, not asdict(): asdict deep-copies and was a large share of expansion time.
    values = ((f.name, getattr(param_set.params, f.name)) for f in fields(param_set.params))
    params = {name: value for name, value in values if value is not None}
    return stable_hash({
        "item": item, "backend": backend_id, "model": model, "params": params,
        "repeat": repeat, "template": template, "turn": turn,
    })


class TaskIds:
    """`task_id` for many tasks of one job, equal to it, at a fraction of the cost: the canonical JSON of
    the parts shared by many tasks (template, backend, model, parameter set) is built once, and an
    item's once for all its tasks. Keys are laid out in `json.dumps(sort_keys=True)`'s order."""

    def __init__(self, template: Any) -> None:
        self._template = _canonical(template)
        self._shared: dict[tuple[str, str, int], tuple[ParamSet, str, str]] = {}

    def item_json(self, item: Mapping[str, Any]) -> str:
        """The item's part of the ids of its tasks: compute once per item, pass to `task_id`."""
        return _canonical(item)

    def task_id(self, item_json: str, *, backend_id: str, model: str, param_set: ParamSet, repeat: int,
                turn: int = 0) -> str:
        """The same id as `task_id(item=..., ...)` for the item whose `item_json` this is."""
        # Keyed by identity (a ParamSet's dicts make it unhashable); the ParamSet is kept with its part
        # so that its id cannot be reused by another while cached.
        key = (backend_id, model, id(param_set))
        cached = self._shared.get(key)
        if cached is None or cached[0] is not param_set:
            values = ((f.name, getattr(param_set.params, f.name)) for f in fields(param_set.params))
            params = {name: value for name, value in values if value is not None}
            cached = self._shared[key] = (
                param_set, f'{{"backend":{_canonical(backend_id)},"item":',
                f',"model":{_canonical(model)},"params":{_canonical(params)},"repeat":')
        _, head, middle = cached
        canonical = f'{head}{item_json}{middle}{repeat},"template":{self._template},"turn":{turn}}}'
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]


# One encoder for every canonical text (what `json.dumps(sort_keys=True, ...)` gives): `json.dumps` with
# options builds a new encoder per call, which costs more than encoding a small value.
canonical_json = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode
_canonical = canonical_json
