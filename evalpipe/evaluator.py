"""The seed's evaluator: score chats, dialogues and parameter sweeps across providers, in a few lines.

    ev = (LLMEvaluator([openai_llm, anthropic_llm])
          .scoring(lambda text: 2.0 if is_json(text) else 0.0, scale=(0, 2))
          .add_criterion(lambda text: 1.0 if "yes" in text else 0.0)   # named criterion_1
          .self_explain(True))
    results = ev.evaluate_chat(messages)       # one EvalResult per provider
    best = ev.best_of(messages)                # the best scored answer; an error never wins

A facade, not a second engine: every call builds a job in code (one item, the providers as its
backends) and runs it on the job runner, with its limits, store, scorers and best-of. Runs go to a
temporary directory removed afterwards, or are kept under `out_dir` (one run directory per call,
readable by `evalpipe summary` / `report`).

A criterion without a name is named after its function, or `criterion_1`, `criterion_2`, ... for a
lambda. Scores are in [0, 1]. A function scoring on another range says so with `scale=(low, high)`
and is mapped linearly onto [0, 1]. A number outside its scale (without one: outside [0, 1]) is never
clamped silently: the score holds the clamped value, `explanations[name]` says "clamped to 1 from 2",
`raw_scores[name]` keeps the 2, and a `ScoreRangeWarning` (Python `warnings`) names the criterion the
first time. Clamping rather than dropping such a score keeps the seed's own example ranking right:
its JSON answer (2.0) still beats the others (0.0).

The total is the weighted mean of the criteria that scored, each on [0, 1] from its declared scale. A
criterion that could not score (a judge's unreadable verdict, a function that raised) is None in
`scores` with the reason in `explanations` and `missing`, fails `passed`, and leaves the total to the
others; when it is one that explains (a judge, the self-explanation), `explanation` carries the reason
("judged: judge verdict unreadable: ..."). A function taking
`(item, response)` gets the item the job was made of: `{"id", "messages"}` for a chat, and for a
dialogue turn `{"id", "dialogue", "turn", "reference_answer"}` (the transcript's answer to that turn).

Retries are each provider's own (`LLMBuilder().max_retries(n)`), done once: the runner adds none on
top, since a built provider already retries inside every call the runner makes.
"""

from __future__ import annotations

import csv
import math
import os
import re
import tempfile
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn, Self

import anyio.to_thread
import structlog
from pydantic import TypeAdapter, ValidationError

from evalpipe.backends.base import Provider
from evalpipe.backends.registry import parse_backend
from evalpipe.blocking import blocking
from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.load import prepare_job
from evalpipe.pipeline.job.spec import Identifier, JobSpec, ScorerSpec
from evalpipe.pipeline.output.best_of import best_of as pick_best
from evalpipe.pipeline.output.rows import Row, row_schema
from evalpipe.pipeline.output.sinks import escape_csv_cell
from evalpipe.pipeline.output.store import RunStore
from evalpipe.pipeline.running.execute import Criterion
from evalpipe.pipeline.running.model_calls import scored_task_id
from evalpipe.pipeline.running.runner import RunOptions, run_job
from evalpipe.scoring.base import FunctionScorer, Score, Scorer
from evalpipe.scoring.judge import LLMJudge
from evalpipe.scoring.self_explain import SelfExplain
from evalpipe.types import ChatMessage, ChatResponse, Usage

log = structlog.get_logger("evalpipe.evaluator")

Messages = str | Sequence[ChatMessage]  # a text is one user message
CriterionLike = Scorer | Callable[..., Any] | str

# Built-in scorers whose explanation is a model's reasoning (the one `EvalResult.explanation` shows).
_EXPLAINING_KINDS = frozenset({"self_explain", "llm_judge", "tone", "toxicity_judge"})
_identifier = TypeAdapter(Identifier)


@dataclass(frozen=True, slots=True)
class ParamSet:
    """Sampling parameters to try, named by `description` ("calm", "creative"); None keeps the provider's own."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] | None = None
    description: str | None = None

    @property
    def name(self) -> str:
        """The description, else the parameters that are set (`temperature=0.2,top_p=0.9`)."""
        if self.description:
            return self.description
        given = {name: value for name, value in _values(self).items() if value is not None}
        return ",".join(f"{name}={value}" for name, value in given.items()) or "default"


def _values(param_set: ParamSet) -> dict[str, Any]:
    """The parameters of a set, as a job file's parameter set holds them."""
    stop = list(param_set.stop) if param_set.stop is not None else None
    return {"temperature": param_set.temperature, "top_p": param_set.top_p, "top_k": param_set.top_k,
            "max_tokens": param_set.max_tokens, "seed": param_set.seed, "stop": stop}


@dataclass(frozen=True, slots=True)
class EvalResult:
    """One provider's answer with its scores, or the error it ended with (then `score` is None)."""

    provider: str  # the provider's id in this evaluator
    model: str
    text: str  # "" when the call failed
    score: float | None  # the weighted total in [0, 1]; None for an error or when no criterion scored
    scores: Mapping[str, float | None]  # by criterion; None is a missing score (see `explanations`)
    explanation: str | None  # the self-explanation, else a judge's, when one was given
    latency_s: float | None
    usage: Usage
    error: str | None  # "ServerError: ..." when the call failed
    passed: bool | None = None  # each thresholded criterion met its threshold; None without thresholds or on error
    param_set: ParamSet | None = None  # in a parameter exploration
    turn: int | None = None  # in a dialogue: 0 for the answer to the first user message
    explanations: Mapping[str, str | None] = field(default_factory=dict)  # by criterion, or why it is missing
    # By criterion given in code: the number its scorer gave before it was mapped onto [0, 1] (a function's
    # own number, a judge's verdict on its scale); None when it gave none.
    raw_scores: Mapping[str, float | None] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the provider answered."""
        return self.error is None

    @property
    def missing(self) -> dict[str, str]:
        """The criteria that could not score this answer, with why; empty for an error (nothing was scored)."""
        if not self.ok:
            return {}
        return {name: self.explanations.get(name) or "no score" for name, value in self.scores.items() if value is None}


@dataclass(frozen=True, slots=True)
class _Entry:
    """A criterion as the evaluator keeps it: scored in code, or a built-in the runner builds with its calls."""

    name: str
    weight: float
    criterion: Criterion | None = None
    spec: ScorerSpec | None = None
    explains: bool = False


class LLMEvaluator:
    """Evaluates providers on the same prompts; configure with the chained methods, then call `evaluate_*`."""

    def __init__(self, providers: Sequence[Provider] | Mapping[str, Provider], *,
                 out_dir: str | os.PathLike[str] | None = None) -> None:
        """`providers` in a list get ids from their backend and model (`openai-gpt-4o-mini`); a mapping names them.

        With `out_dir`, each call's run directory is kept under it; otherwise runs are temporary."""
        self._providers = _with_ids(providers)
        self._judges: dict[str, Provider] = {}
        self._out_dir = Path(out_dir) if out_dir is not None else None
        self._main: _Entry | None = None
        self._extra: list[_Entry] = []
        self._self_explain: _Entry | None = None

    def __repr__(self) -> str:
        return f"LLMEvaluator(providers={list(self._providers)}, criteria={[e.name for e in self._entries()]})"

    @property
    def provider_ids(self) -> list[str]:
        """The ids results carry in `EvalResult.provider`, in evaluation order."""
        return list(self._providers)

    # ---- configuration ---------------------------------------------------------------------------

    def scoring(self, criterion: CriterionLike, *, name: str = "main", weight: float = 1.0,
                threshold: float | None = None, scale: tuple[float, float] | None = None, **options: Any) -> Self:
        """Set the main criterion (replacing an earlier one); the arguments are those of `add_criterion`."""
        previous, self._main = self._main, None
        try:
            self._main = self._entry(criterion, name, weight, threshold, scale, options)
        except BaseException:
            self._main = previous
            raise
        return self

    def add_criterion(self, criterion: CriterionLike, *, name: str | None = None, weight: float = 1.0,
                      threshold: float | None = None, scale: tuple[float, float] | None = None,
                      **options: Any) -> Self:
        """Add a criterion to the weighted total.

        `criterion` is a function `(text) -> float` or `(item, response) -> float` (sync or async; a bool
        counts as 0 or 1) scoring on `scale` (default [0, 1]); a `Scorer` object (from `evalpipe.scoring`);
        or the name of a built-in scorer (`"llm_judge"`, `"contains"`, ...) with its `options`, built by the
        runner so that its model calls (to a provider or a `judge` by id) go through the run's limits.
        Without `name`: the function's name, or `criterion_1`, `criterion_2`, ... for a lambda.
        """
        self._extra.append(self._entry(criterion, name, weight, threshold, scale, options))
        return self

    def self_explain(self, enabled: bool = True, *, weight: float = 0.0, **options: Any) -> Self:
        """Ask each answering model to explain and rate its own answer (options of the `self_explain` scorer).

        Its rating is kept in `scores["self_explain"]` with weight 0 by default: a model's opinion of itself
        should not decide which model wins."""
        self._self_explain = None
        if enabled:
            self._self_explain = self._entry("self_explain", "self_explain", weight, None, None, options)
        return self

    def judge(self, provider: Provider, *, name: str = "judge") -> Self:
        """Register a provider that built-in scorers may call by `name` (`backend=name`); it is not evaluated."""
        if not _is_identifier(name):
            _bad_id(name)
        if name in self._providers or name in self._judges:
            raise ConfigError(f"id {name!r} is already taken; known: {', '.join([*self._providers, *self._judges])}")
        if not isinstance(provider, Provider):
            raise ConfigError(f"judge {name!r}: expected a Provider, got {type(provider).__name__}")
        self._judges[name] = provider
        return self

    def _entries(self) -> list[_Entry]:
        """Every criterion, in the order results list them."""
        main = [self._main] if self._main is not None else []
        explain = [self._self_explain] if self._self_explain is not None else []
        return [*main, *self._extra, *explain]

    def _entry(self, criterion: CriterionLike, name: str | None, weight: float, threshold: float | None,
               scale: tuple[float, float] | None, options: Mapping[str, Any]) -> _Entry:
        if not (math.isfinite(weight) and weight >= 0):
            raise ConfigError(f"weight must be a finite number >= 0, got {weight!r}")
        if threshold is not None and not 0 <= threshold <= 1:
            raise ConfigError(f"threshold must be in [0, 1], got {threshold!r}")
        if scale is not None:
            scale = _checked_scale(scale)
        if isinstance(criterion, str):
            entry = _built_in(criterion, name, weight, threshold, scale, options)
        else:
            if options:
                raise ConfigError(f"options {sorted(options)} are for built-in scorers named by a string")
            entry = _in_code(criterion, name or self._default_name(criterion), weight, threshold, scale)
        row_schema([entry.name])  # a name that cannot be a column fails here, not at the first evaluation
        if entry.name in {e.name for e in self._entries()}:
            raise ConfigError(f"a criterion named {entry.name!r} exists already; give this one another name")
        return entry

    def _default_name(self, function: object) -> str | None:
        """A function's own name; for a lambda (or a callable without one) the first free `criterion_<n>`."""
        if isinstance(function, Scorer) and hasattr(function, "name"):
            return None  # a scorer object keeps its own name
        own = getattr(function, "__name__", None)
        if isinstance(own, str) and own.isidentifier():
            return own
        taken = {entry.name for entry in self._entries()}
        return next(f"criterion_{n}" for n in range(1, len(taken) + 2) if f"criterion_{n}" not in taken)

    # ---- evaluations -----------------------------------------------------------------------------

    async def aevaluate_chat(self, messages: Messages) -> list[EvalResult]:
        """Every provider's answer to `messages`, scored; one result per provider, in provider order."""
        rows, raw = await self._run("evaluate_chat", _chat_job(_as_messages(messages)))
        return [self._result(row, raw) for row in rows]

    async def abest_of(self, messages: Messages) -> EvalResult | None:
        """`evaluate_chat`, then the highest total: ties go to the earlier provider, an error never wins.

        None when no provider produced a scored answer."""
        if not any(entry.weight > 0 for entry in self._entries()):
            raise ConfigError("best_of needs a criterion with a weight: call .scoring(...) or .add_criterion(...)")
        rows, raw = await self._run("best_of", _chat_job(_as_messages(messages)))
        contest = next(pick_best(rows))
        # A tie lists its candidates in provider order: the earlier provider's answer is returned.
        winner = contest["winner_task_id"] or next(iter(contest["tied_task_ids"]), None)
        return next((self._result(row, raw) for row in rows if row["task_id"] == winner), None)

    async def aevaluate_dialogue(self, dialogue: Sequence[ChatMessage], *,
                                 regenerate: bool = False) -> dict[str, list[EvalResult]]:
        """Each provider's answer to every user turn of `dialogue`, scored: provider id -> results by turn.

        `regenerate=False` answers each user turn after the transcript's own earlier turns (scoring a fixed
        transcript turn by turn); `regenerate=True` after the provider's own earlier answers. The
        transcript's answer to a turn is given to scorers as the item's `reference_answer`."""
        turns = [{"role": m.role, "content": m.content} for m in dialogue]
        if not any(m["role"] == "user" for m in turns):
            raise ConfigError("a dialogue needs at least one user message to answer")
        job = ({"id": "dialogue", "dialogue": turns},
               {"dialogue": "dialogue", "dialogue_mode": "rollout" if regenerate else "fixed"})
        by_provider: dict[str, list[EvalResult]] = {provider: [] for provider in self._providers}
        rows, raw = await self._run("evaluate_dialogue", job)
        for row in rows:
            by_provider[row["backend_id"]].append(self._result(row, raw, turn=row["turn"]))
        return by_provider

    async def aevaluate_param_exploration(self, param_sets: Sequence[ParamSet],
                                          messages: Messages) -> list[EvalResult]:
        """Every provider's answer to `messages` under each parameter set: provider-major, then set order."""
        if not param_sets:
            raise ConfigError("give at least one ParamSet")
        by_name = {param_set.name: param_set for param_set in param_sets}
        if len(by_name) != len(param_sets):
            names = [param_set.name for param_set in param_sets]
            repeated = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"parameter sets need distinct descriptions; repeated: {', '.join(repeated)}")
        rows, raw = await self._run("evaluate_param_exploration", _chat_job(_as_messages(messages)), param_sets)
        return [self._result(row, raw, param_set=by_name[row["param_set"]]) for row in rows]

    evaluate_chat = blocking(aevaluate_chat)
    best_of = blocking(abest_of)
    evaluate_dialogue = blocking(aevaluate_dialogue)
    evaluate_param_exploration = blocking(aevaluate_param_exploration)

    # ---- reporting (local and quick: no async twins) ---------------------------------------------

    def export_csv(self, path: str | os.PathLike[str], results: Iterable[EvalResult]) -> Path:
        """Write `results` as a CSV file (UTF-8, a header, one line per result) and return its path.

        Each criterion has `score_<name>`, `raw_<name>` (for criteria given in code: the number before it
        was mapped onto [0, 1]) and `explanation_<name>` (a judge's reasoning, or why the score is missing
        or was clamped). Text cells that a spreadsheet would run as a formula get a leading `'`, as in a
        run's `rows.csv`."""
        results = list(results)
        criteria = list(dict.fromkeys(name for result in results for name in result.scores))
        with_raw = {name for result in results for name in result.raw_scores}
        per_criterion = [(name, kind) for name in criteria
                         for kind in ("score", "raw", "explanation") if kind != "raw" or name in with_raw]
        header = ["provider", "model", "param_set", "temperature", "top_p", "turn", "score", "passed",
                  *(f"{kind}_{name}" for name, kind in per_criterion), "explanation", "latency_s", "input_tokens",
                  "output_tokens", "error", "text"]
        target = Path(path)
        with target.open("w", encoding="utf-8", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(header)
            for r in results:
                param_set = r.param_set
                cells = [r.provider, r.model, param_set and param_set.name, param_set and param_set.temperature,
                         param_set and param_set.top_p, r.turn, r.score, r.passed,
                         *(_criterion_cell(r, name, kind) for name, kind in per_criterion), r.explanation, r.latency_s,
                         r.usage.input_tokens, r.usage.output_tokens, r.error, r.text]
                writer.writerow(escape_csv_cell(c) if isinstance(c, str) else c for c in cells)
        return target

    def log_results(self, label: str, results: Iterable[EvalResult]) -> None:
        """One structured log line (structlog, logger `evalpipe.evaluator`) per result, tagged with `label`."""
        for r in results:
            log.info("evaluation result", label=label, provider=r.provider, model=r.model,
                     param_set=r.param_set.name if r.param_set else None, turn=r.turn, score=r.score,
                     scores=dict(r.scores), latency_s=r.latency_s, input_tokens=r.usage.input_tokens,
                     output_tokens=r.usage.output_tokens, error=r.error, text=_clipped(r.text, 200))

    # ---- running a job ---------------------------------------------------------------------------

    async def _run(self, name: str, job: tuple[dict[str, Any], dict[str, Any]],
                   param_sets: Sequence[ParamSet] = ()) -> tuple[list[Row], _RawScores]:
        """Run a one-item job on every provider; its rows in expansion order (provider, set, turn), and the
        raw numbers of the criteria given in code by task id."""
        item, prompt = job
        entries = self._entries()
        keep = self._out_dir is not None
        spec = _job_spec({
            "name": name, "dataset": {"items": [item]}, "prompt": prompt,
            # max_retries 0: a built provider retries by its own policy already; the runner adds none on top.
            "backends": [_backend(i, p) for i, p in self._providers.items()],
            "judges": [_backend(i, p) for i, p in self._judges.items()],
            "parameters": {"sets": [{"name": s.name, **_values(s)} for s in param_sets]},
            "scorers": [entry.spec for entry in entries if entry.spec is not None],
            "best_of": keep, "output": {"formats": ["parquet", "csv"] if keep else []},
        })
        loaded = prepare_job(spec)
        raw: _RawScores = {}
        criteria = [replace(entry.criterion, scorer=_RawRecorded(entry.criterion.scorer, raw))
                    for entry in entries if entry.criterion is not None]
        columns = [*(s.name or s.type for s in spec.scorers), *(c.name for c in criteria)]  # the runner's order
        async with self._run_root() as root:
            options = RunOptions(out_root=root, handle_signals=False, quiet=True, criteria=criteria,
                                 providers={**self._providers, **self._judges})
            outcome = await run_job(loaded, options)
            rows = await anyio.to_thread.run_sync(_stored_rows, outcome.run_dir, outcome.run_id, columns)
        return rows, raw

    @asynccontextmanager
    async def _run_root(self) -> AsyncIterator[Path]:
        if self._out_dir is not None:
            yield self._out_dir
            return
        with tempfile.TemporaryDirectory(prefix="evalpipe-") as root:
            yield Path(root)

    def _result(self, row: Row, raw: _RawScores, *, param_set: ParamSet | None = None,
                turn: int | None = None) -> EvalResult:
        entries = self._entries()
        scores = {e.name: row.get(f"score_{e.name}") for e in entries}
        explanations = {e.name: row.get(f"explanation_{e.name}") for e in entries}
        failed = row["status"] != "ok"
        recorded = raw.get(row["task_id"], {})
        return EvalResult(
            provider=row["backend_id"], model=row["model"], text=row.get("response") or "",
            score=None if failed else row.get("score_total"), scores=scores,
            explanation=None if failed else self._explanation(scores, explanations),
            latency_s=row.get("latency_s"), usage=Usage(row.get("input_tokens") or 0, row.get("output_tokens") or 0),
            error=f"{row['error_type']}: {row['error_message']}" if failed else None, passed=row.get("passed"),
            param_set=param_set, turn=turn, explanations=explanations,
            raw_scores={e.name: recorded.get(e.name) for e in entries if e.criterion is not None and not failed})

    def _explanation(self, scores: Mapping[str, float | None], explanations: Mapping[str, str | None]) -> str | None:
        """The self-explanation, else the first judge's; a judge that could not score gives its reason instead.

        A missing score's explanation column holds why it is missing: shown with the criterion's name, so a
        reason is never mistaken for a verdict."""
        explaining = [e for e in (self._self_explain, self._main, *self._extra) if e is not None and e.explains]
        found = next((explanations[e.name] for e in explaining if scores[e.name] is not None and explanations[e.name]),
                     None)
        if found is not None:
            return found
        return next((f"{e.name}: {explanations[e.name] or 'no score'}" for e in explaining if scores[e.name] is None),
                    None)


def _criterion_cell(result: EvalResult, name: str, kind: str) -> float | str | None:
    """One criterion's `score`, `raw` or `explanation` cell of `result`."""
    if kind == "score":
        return result.scores.get(name)
    if kind == "raw":
        return result.raw_scores.get(name)
    return result.explanations.get(name)


_RawScores = dict[str, dict[str, float | None]]  # task id -> criterion -> the number its scorer gave


class _RawRecorded:
    """A criterion given in code, noting the number its scorer gave before it was mapped onto [0, 1]: rows
    keep only the mapped score (and, when it was clamped, the number in its explanation)."""

    def __init__(self, scorer: Scorer, found: _RawScores) -> None:
        self.scorer = scorer
        self.name = scorer.name
        self.found = found

    async def __call__(self, item: Mapping[str, Any], messages: Sequence[ChatMessage],
                       response: ChatResponse) -> Score:
        score = await self.scorer(item, messages, response)
        raw = score.metadata.get("raw_score", score.value)
        task = scored_task_id()
        if task is not None:
            number = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else None
            self.found.setdefault(task, {})[self.name] = number
        return score


# ---- helpers: providers, criteria, jobs ------------------------------------------------------------


def _with_ids(providers: Sequence[Provider] | Mapping[str, Provider]) -> dict[str, Provider]:
    """The providers by id: the mapping's names, or `<backend>-<model>` made unique with `-2`, `-3`."""
    named = list(providers.items()) if isinstance(providers, Mapping) else [(None, p) for p in providers]
    if not named:
        raise ConfigError("LLMEvaluator needs at least one provider")
    by_id: dict[str, Provider] = {}
    for name, provider in named:
        if not isinstance(provider, Provider):
            raise ConfigError(f"expected a Provider (from LLMBuilder().build()), got {type(provider).__name__}")
        if name is not None:
            if not _is_identifier(name):
                _bad_id(name)
            by_id[name] = provider
            continue
        base = re.sub(r"[^A-Za-z0-9_.]+", "-", f"{provider.config.backend}-{provider.model}").strip("-.")[:56]
        candidate, suffix = base, 2
        while candidate in by_id:
            candidate, suffix = f"{base}-{suffix}", suffix + 1
        by_id[candidate] = provider
    return by_id


def _is_identifier(name: str) -> bool:
    try:
        _identifier.validate_python(name)
    except ValidationError:
        return False
    return True


def _bad_id(name: object) -> NoReturn:
    raise ConfigError(f"id {name!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter, digit or '_'")


def _backend(backend_id: str, provider: Provider) -> dict[str, Any]:
    return {"id": backend_id, "backend": parse_backend(provider.config.backend), "model": provider.model,
            "max_retries": 0}


def _checked_scale(scale: tuple[float, float]) -> tuple[float, float]:
    try:
        low, high = (float(value) for value in scale)
    except (TypeError, ValueError):
        raise ConfigError(f"scale must be (low, high), got {scale!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ConfigError(f"scale must be (low, high) with finite low < high, got {scale!r}")
    return low, high


def _built_in(kind: str, name: str | None, weight: float, threshold: float | None,
              scale: tuple[float, float] | None, options: Mapping[str, Any]) -> _Entry:
    """A scorer the runner builds (its model calls then go through the run's backends and limits)."""
    values = {"type": kind, "name": name, "weight": weight, "threshold": threshold, **options}
    if scale is not None:
        values["scale"] = list(scale)  # a judge's own scale option
    try:
        spec = ScorerSpec.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"criterion {name or kind!r}: {_problems(exc)}") from None
    return _Entry(spec.name or kind, weight, spec=spec, explains=kind in _EXPLAINING_KINDS)


def _in_code(criterion: Scorer | Callable[..., Any], name: str | None, weight: float, threshold: float | None,
             scale: tuple[float, float] | None) -> _Entry:
    """A scorer object as it is, or a function (mapped from `scale`) as a FunctionScorer."""
    if isinstance(criterion, Scorer) and hasattr(criterion, "name"):
        if scale is not None:
            raise ConfigError(f"scorer {criterion.name!r} already scores in [0, 1]: scale is for functions")
        if name is not None and name != criterion.name:
            raise ConfigError(f"scorer {criterion.name!r} keeps the name it was built with; build it with name=...")
        explains = isinstance(criterion, LLMJudge | SelfExplain)
        return _Entry(criterion.name, weight, criterion=Criterion(criterion, weight, threshold), explains=explains)
    if not callable(criterion):
        raise ConfigError(f"a criterion is a function, a Scorer or a built-in's name, got {type(criterion).__name__}")
    if name is None:
        raise ConfigError("name this criterion: add_criterion(function, name=...)")
    return _Entry(name, weight, criterion=Criterion(FunctionScorer(criterion, name, scale=scale), weight, threshold))


def _as_messages(messages: Messages) -> list[ChatMessage]:
    found = [ChatMessage.user(messages)] if isinstance(messages, str) else list(messages)
    if not found:
        raise ConfigError("no messages to send")
    if not all(isinstance(m, ChatMessage) for m in found):
        raise ConfigError("messages must be ChatMessage values (ChatMessage.user(...), ...)")
    return found


def _chat_job(messages: Sequence[ChatMessage]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The item and prompt of a chat: the texts live in the item and the templates only point at them,
    so a message containing `{{` is sent as written, never rendered."""
    item = {"id": "chat", "messages": [{"role": m.role, "content": m.content} for m in messages]}
    prompt = {"messages": [{"role": m.role, "content": f"{{{{ messages[{i}].content }}}}"}
                           for i, m in enumerate(messages)]}
    return item, prompt


def _job_spec(values: Mapping[str, Any]) -> JobSpec:
    try:
        return JobSpec.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(f"cannot evaluate: {_problems(exc)}") from None


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors())


def _stored_rows(run_dir: Path, run_id: str, criteria: Sequence[str]) -> list[Row]:
    with RunStore.open(run_dir, run_id, row_schema(list(criteria))) as store:
        return list(store.iter_rows())


def _clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


__all__ = ["EvalResult", "LLMEvaluator", "ParamSet"]
