"""The job file's schema: what a job may say, validated with pydantic before any call is made.

A job is: a dataset × backends × parameter sets × repeats, with prompt templates, scorers, limits,
outputs and a budget. `evalpipe schema` prints the JSON Schema of `JobSpec` for editors.
"""

from __future__ import annotations

import itertools
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from evalpipe.backends.registry import LLMBackend
from evalpipe.redaction import header_value_problem, register_secret
from evalpipe.types import deep_merge


def _sendable_header(value: str) -> str:
    # Header values may carry credentials: secrets from the moment the job is read, never quoted.
    register_secret(value)
    if (problem := header_value_problem(value)) is not None:
        raise ValueError(f"this header value {problem}")
    return value


HeaderValue = Annotated[str, AfterValidator(_sendable_header)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$", max_length=64)]

# Every number a job gives has a range the vendors accept and a Parquet int64 / float64 column can
# store: a value past it would validate, be paid for, and then fail the row writer on every resume.
INT64_MAX = 2**63 - 1
MAX_OUTPUT_TOKENS = 10_000_000  # past every vendor's largest output limit
MAX_REPEATS = 100_000
MAX_CONCURRENCY = 10_000
MAX_PARAMETER_SETS = 10_000
MAX_PRICE_PER_1M = 1e9  # USD: finite, past any price (tests price a token at $1)
MIN_RPM = 0.1  # one request per ten minutes: slower is a typo that would wait for ever in silence
MIN_TPM = 100.0
MAX_RATE = 1e9
MAX_TIMEOUT_S = 86_400.0  # a day
Seed = Annotated[int, Field(ge=-(2**63), le=INT64_MAX)]


class Strict(BaseModel):
    """Unknown keys are errors: a typo must not silently become a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(Strict):
    """Where the items come from: inline, or a JSONL / CSV / Parquet file (relative to the job file)."""

    items: list[dict[str, Any]] | None = None
    path: str | None = None
    id_field: str = "id"  # items without it get a stable id from a hash of their content
    limit: int | None = Field(default=None, ge=1, le=INT64_MAX)

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.items is None) == (self.path is None):
            raise ValueError("give exactly one of `items` or `path`")
        return self


class MessageSpec(Strict):
    role: Literal["system", "user", "assistant"]
    content: str


class ChainStepSpec(Strict):
    """One step of a prompt chain: its template reads the item's fields and earlier steps' outputs."""

    name: Identifier
    user: str
    system: str | None = None
    mode: Literal["chat", "completion"] = "chat"
    backend: str | None = None  # a backend or judge id of the job; default: the backend being evaluated
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    stop: list[str] | None = None
    transform: list[Literal["trim", "strip_think", "extract_json"]] = Field(default_factory=list)


class PromptSpec(Strict):
    """Jinja2 templates over an item's fields: `system` + `user`, or a list of `messages`; or a dialogue.

    `mode: completion` sends the rendered `user` text as a plain completion prompt. `dialogue` names
    the item field holding a transcript (a list of `{role, content}`): every user message in it is a
    turn with a row of its own. `dialogue_mode: fixed` answers each turn after the transcript's own
    earlier turns; `rollout` after the model's own earlier answers, turn by turn. `chain` is a prompt
    chain: its steps run in order, each reading the outputs of those before it, and the last step's
    output is the answer that is scored."""

    system: str | None = None
    user: str | None = None
    messages: list[MessageSpec] | None = None
    dialogue: str | None = None
    dialogue_mode: Literal["fixed", "rollout"] = "fixed"
    chain: list[ChainStepSpec] | None = Field(default=None, min_length=1)
    mode: Literal["chat", "completion"] = "chat"
    # Item templates of image paths (relative to the dataset file) or URLs, attached to the last user message.
    images: list[str] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> PromptSpec:
        if [self.user, self.messages, self.dialogue, self.chain].count(None) != 3:
            raise ValueError("give one of `user` (with an optional `system`), `messages`, `dialogue` or `chain`")
        if self.chain is not None and self.system is not None:
            raise ValueError("a chain's steps have their own `system`")
        if self.mode == "completion" and self.user is None:
            raise ValueError("`mode: completion` needs `user`")
        return self


class BatchSpec(Strict):
    """How a backend in `mode: batch` uses its vendor's batch API; unset fields take the vendor's defaults."""

    max_requests: int | None = Field(default=None, ge=1, le=10_000_000)  # per batch (the vendor's cap is lower)
    max_bytes: int | None = Field(default=None, ge=1024, le=INT64_MAX)  # per batch input
    poll_interval_s: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_S)
    max_wait_h: float | None = Field(default=None, gt=0, le=24 * 30)  # then the batch is cancelled
    price_factor: float | None = Field(default=None, ge=0, le=1)  # batch price / live price (vendor: 0.5)


class BackendSpec(Strict):
    """One backend to evaluate, with its own limits and prices."""

    id: Identifier
    backend: LLMBackend
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None  # another variable than the backend's conventional one
    options: dict[str, Any] = Field(default_factory=dict)
    max_concurrency: int = Field(default=8, ge=1, le=MAX_CONCURRENCY)
    rpm: float | None = Field(default=None, ge=MIN_RPM, le=MAX_RATE)
    tpm: float | None = Field(default=None, ge=MIN_TPM, le=MAX_RATE)
    price_input_per_1m: float = Field(default=0.0, ge=0, le=MAX_PRICE_PER_1M)
    price_output_per_1m: float = Field(default=0.0, ge=0, le=MAX_PRICE_PER_1M)  # all output, reasoning included
    # Input read from / written to the vendor's prompt cache; unset means the plain input price.
    price_cached_input_per_1m: float | None = Field(default=None, ge=0, le=MAX_PRICE_PER_1M)
    price_cache_write_input_per_1m: float | None = Field(default=None, ge=0, le=MAX_PRICE_PER_1M)
    timeout_s: float = Field(default=60.0, gt=0, le=MAX_TIMEOUT_S)
    max_retries: int = Field(default=4, ge=0, le=100)
    # A backend that cannot run here (its key unset, its model file absent) is an error, unless it is
    # optional: then it is skipped, and its tasks are counted as skipped.
    optional: bool = False
    # Stream answers to measure time to first token (same price); false saves client CPU on fast servers.
    stream: bool = True
    # Passed to the vendor as they are, under every parameter set's own (which win where both set a key).
    extra_body: dict[str, Any] = Field(default_factory=dict)
    headers: dict[str, HeaderValue] = Field(default_factory=dict)
    # `batch`: tasks go through the vendor's batch API (submitted, polled, collected; cheaper, slower).
    mode: Literal["live", "batch"] = "live"
    batch: BatchSpec = Field(default_factory=BatchSpec)


class SamplingSpec(Strict):
    """Sampling parameters; unset ones are left to the backend."""

    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1, le=1_000_000)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    seed: Seed | None = None
    stop: list[str] | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    reasoning_budget_tokens: int | None = Field(default=None, ge=1, le=MAX_OUTPUT_TOKENS)
    extra_body: dict[str, Any] | None = None  # deep-merged into the request body
    headers: dict[str, HeaderValue] | None = None
    tool_choice: str | None = Field(default=None, min_length=1)  # auto, none, required, or a tool's name


class ParamSetSpec(SamplingSpec):
    """A named set of sampling parameters ("calm", "creative")."""

    name: str = Field(min_length=1, max_length=128)


GRID_KEYS = ("temperature", "top_p", "top_k", "max_tokens", "seed", "reasoning_effort", "reasoning_budget_tokens")
EXTRA_BODY_PREFIX = "extra_body."  # a grid key `extra_body.a.b` sweeps the request body's field a.b


def _nested(path: str, value: Any) -> dict[str, Any]:
    """`{"a": {"b": value}}` for the dotted path "a.b"."""
    head, _, rest = path.partition(".")
    return {head: _nested(rest, value) if rest else value}


def grid_point(values: dict[str, Any]) -> dict[str, Any]:
    """A grid combination as parameter-set fields: `extra_body.<path>` keys nest into one `extra_body`."""
    fields: dict[str, Any] = {}
    for key, value in values.items():
        if key.startswith(EXTRA_BODY_PREFIX):
            fields["extra_body"] = deep_merge(fields.get("extra_body") or {}, _nested(key[len(EXTRA_BODY_PREFIX):],
                                                                                      value))
        else:
            fields[key] = value
    return fields


class ParametersSpec(Strict):
    """Explicit `sets` and/or a `grid` whose cartesian product adds one set per combination; `defaults`
    fill in what a set or grid point leaves unset (a sweep's `max_tokens` and `stop`, say)."""

    sets: list[ParamSetSpec] = Field(default_factory=list)
    # Keys: GRID_KEYS, or `extra_body.<path>` to sweep a vendor setting evalpipe has no name for.
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    defaults: SamplingSpec = Field(default_factory=SamplingSpec)

    @model_validator(mode="after")
    def _grid_keys(self) -> ParametersSpec:
        for key, values in self.grid.items():
            dotted = key.startswith(EXTRA_BODY_PREFIX) and all(key[len(EXTRA_BODY_PREFIX):].split("."))
            if key not in GRID_KEYS and not dotted:
                raise ValueError(f"grid key {key!r}: expected one of {', '.join(GRID_KEYS)}, or extra_body.<path>")
            if not values:
                raise ValueError(f"grid key {key!r} has no values")
        combinations = 1
        for values in self.grid.values():
            combinations *= len(values)
        if combinations + len(self.sets) > MAX_PARAMETER_SETS:
            raise ValueError(f"the grid makes {combinations:,} parameter sets; at most {MAX_PARAMETER_SETS:,} "
                             "are allowed (sweep fewer values per key)")
        return self

    def expanded(self) -> list[ParamSetSpec]:
        """Every parameter set: the explicit ones, then the grid's (named like `temperature=0.2,top_p=0.9`)."""
        combos: list[ParamSetSpec] = list(self.sets)
        if self.grid:
            keys = list(self.grid)
            for values in itertools.product(*(self.grid[k] for k in keys)):
                name = ",".join(f"{k}={v}" for k, v in zip(keys, values, strict=True))
                point = grid_point(dict(zip(keys, values, strict=True)))
                combos.append(ParamSetSpec.model_validate({"name": name, **point}))
        combos = combos or [ParamSetSpec(name="default")]
        defaults = self.defaults.model_dump(exclude_none=True)
        if not defaults:
            return combos
        return [combo.model_copy(update=_with_defaults(defaults, combo.model_dump(exclude_none=True)))
                for combo in combos]

    @model_validator(mode="after")
    def _unique_names(self) -> ParametersSpec:
        names = [p.name for p in self.expanded()]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"parameter set names must be unique; repeated: {', '.join(duplicates)}")
        return self


def _with_defaults(defaults: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """A set's own fields over the defaults; `extra_body` and `headers` merge key by key."""
    merged = {**defaults, **own}
    for key in ("extra_body", "headers"):
        if key in defaults and key in own:
            merged[key] = deep_merge(defaults[key], own[key])
    return merged


class ToolSpec(Strict):
    """A tool the model may call: `{name, description, parameters}` (a JSON Schema) or `{file: path}`
    (a .json/.yaml file holding one such tool or a list of them, relative to the job file)."""

    name: str | None = None
    description: str = ""
    parameters: dict[str, Any] | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ToolSpec:
        if (self.name is None) == (self.file is None):
            raise ValueError("give a tool's `name` (with `description` and `parameters`), or a `file`")
        if self.file is not None and (self.description or self.parameters is not None):
            raise ValueError("a tool `file` holds the whole definition; give no other keys beside it")
        return self


class ScorerSpec(Strict):
    """A criterion: a built-in (`numeric`, `choice`, `contains`, `field`, ...) or `module:function`.

    `threshold` makes it decide the row's `passed`: a row passes when every criterion with a threshold
    scored at least that; with no threshold anywhere, `passed` is empty (no verdict). Options of every
    scorer, applied by the registry: `negate: true` scores 1 − the score; `when: "{{ ... }}"` (an item
    template) limits the criterion to the items for which it renders true."""

    model_config = ConfigDict(extra="allow", frozen=True)  # the scorer's own options, checked by its factory

    type: str
    name: Identifier | None = None
    weight: float = Field(default=1.0, ge=0, le=1e6)
    threshold: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _negate_is_a_flag(self) -> ScorerSpec:
        # An option like the scorer's own (so it reaches the registry with them), but of every scorer.
        negate = (self.model_extra or {}).get("negate", False)
        if not isinstance(negate, bool):
            raise ValueError(f"negate must be true or false, got {negate!r}")
        return self


OutputFormat = Literal["parquet", "csv", "jsonl"]


class OutputSpec(Strict):
    dir: str = "results"
    formats: list[OutputFormat] = Field(default_factory=lambda: list[OutputFormat](["parquet", "csv"]))


class BudgetSpec(Strict):
    max_cost_usd: float | None = Field(default=None, gt=0, le=1e9)
    max_tokens: int | None = Field(default=None, gt=0, le=INT64_MAX)


ExecutorKind = Literal["local", "ray"]


class ExecutorSpec(Strict):
    """Where a job's tasks run: in this process (`local`) or sharded over a Ray cluster (`ray`)."""

    kind: ExecutorKind = "local"
    address: str | None = Field(default=None, min_length=1)  # Ray's: "auto", "ray://host:10001"; None starts one
    shards: int | None = Field(default=None, ge=1, le=4096)  # default: the cluster's CPUs
    # For a run at a URI (s3://...): how often each shard copies its store and parts there. A shard whose
    # worker dies resumes from its last copy, so this bounds the answers a dead worker's shard pays again.
    sync_s: float = Field(default=5.0, gt=0, le=3600)


class ConfirmSpec(Strict):
    """Past these, `plan` and `run` ask for `--yes` before going on: a typo in `repeats` or a grid
    must not start millions of paid calls unnoticed."""

    tasks: int = Field(default=100_000, ge=1, le=INT64_MAX)
    cost_usd: float = Field(default=10.0, gt=0, le=1e9)  # the plan's projected cost


class JobSpec(Strict):
    """A whole job file.

    `task_timeout_s` bounds a whole task, not each call: its retries, a chain's steps and a tool loop's
    steps and tool runs share it (see the field's comment)."""

    name: Identifier
    description: str = ""
    dataset: DatasetSpec
    prompt: PromptSpec
    backends: list[BackendSpec] = Field(min_length=1)
    parameters: ParametersSpec = Field(default_factory=ParametersSpec)
    repeats: int = Field(default=1, ge=1, le=MAX_REPEATS)
    judges: list[BackendSpec] = Field(default_factory=list)  # called by scorers only, never evaluated
    scorers: list[ScorerSpec] = Field(default_factory=list)
    # Tools offered to the model in every chat call: definitions, files, or `module:function` names.
    tools: list[ToolSpec | str] = Field(default_factory=list)
    tool_choice: str | None = Field(default=None, min_length=1)  # a parameter set's own takes precedence
    # Above 1: the runner runs the `module:function` tools the model calls and asks again, up to this many calls.
    max_steps: int = Field(default=1, ge=1, le=50)
    best_of: bool = True  # write best_of.parquet: each item's best answer across backends and parameter sets
    concurrency: int = Field(default=32, ge=1, le=MAX_CONCURRENCY)
    # Bounds the whole of a task, from its first attempt (waiting for the backend's limits before it does
    # not count) to its answer: its retries, a chain's steps, and a tool loop's steps and tool runs all
    # share it. A task that runs out is an error row (TimeoutError) that keeps the steps it finished.
    # Each turn of a dialogue is a row of its own, with its own bound.
    task_timeout_s: float = Field(default=300.0, gt=0, le=MAX_TIMEOUT_S)
    output: OutputSpec = Field(default_factory=OutputSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    confirm_above: ConfirmSpec = Field(default_factory=ConfirmSpec)
    executor: ExecutorSpec = Field(default_factory=ExecutorSpec)

    @model_validator(mode="after")
    def _unique_ids(self) -> JobSpec:
        for what, names in (("backend and judge ids", [b.id for b in (*self.backends, *self.judges)]),
                            ("scorer names", [s.name or s.type for s in self.scorers])):
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise ValueError(f"{what} must be unique; repeated: {', '.join(repeated)}")
        return self
