"""Prompt chains: named steps whose outputs fill the templates of the steps after them.

    chain = (PromptChain(llm)
             .step("summary", "Summarize: {{ text }}", max_tokens=200)
             .step("title", "A title for: {{ summary }}", transform="trim"))
    chain.run(text=article)            # {"summary": "...", "title": "..."}

Templates are Jinja in the project's sandbox with StrictUndefined, as job prompts are: a step sees the
caller's variables and the outputs of the steps before it. Every template is checked against those
names before the first call, so a typo costs no tokens. `MultiPromptChain` sends each step to a
backend chosen by name. A step's output is its answer's text after its transforms; reasoning a
provider returns apart (`ChatResponse.reasoning`) never reaches a later prompt. `arun_detailed` keeps
each step's `ChatResponse` for usage and latency, and `arun_item` is the form a job runner evaluates.
"""

from __future__ import annotations

import copy
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple, Protocol, Self

from jinja2 import Template, TemplateError, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError

from evalpipe.blocking import blocking
from evalpipe.errors import ConfigError, EvalpipeError
from evalpipe.pipeline.job.templates import referenced_fields, template_environment
from evalpipe.transforms import Transform, TransformSpec, apply_transforms, resolve_transforms
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, Usage

Mode = Literal["chat", "completion"]
DEFAULT_PROVIDER = "default"  # the registry name of a PromptChain's one provider


class ChainBackend(Protocol):
    """What a step needs from a backend: a `Provider`, or a job's way of calling one within its limits."""

    async def achat(
        self, messages: Sequence[ChatMessage], params: GenerationParams | None = None
    ) -> ChatResponse: ...

    async def acomplete(self, prompt: str, params: GenerationParams | None = None) -> ChatResponse: ...


class ChainTemplateError(ConfigError):
    """A step's template does not compile, uses a name nothing defines before it, or fails to render."""

    def __init__(self, step: str, message: str, *, missing: Collection[str] = ()) -> None:
        super().__init__(f"chain step {step!r}: {message}")
        self.step = step
        self.missing = frozenset(missing)


@dataclass(frozen=True, slots=True)
class ChainStep:
    """One step: its templates, the backend and parameters it is sent with, how its answer is cleaned."""

    name: str
    template: str
    system: str | None
    provider: str
    mode: Mode
    params: GenerationParams
    transforms: tuple[Transform, ...]
    fields: frozenset[str]  # the names its templates read
    compiled: tuple[Template, Template | None]  # (prompt, system)


@dataclass(frozen=True, slots=True)
class StepResult:
    """What one step sent and got back."""

    name: str
    provider: str  # the registry name of the backend that answered
    prompt: str  # the rendered prompt (the user message, or the completion prompt)
    output: str  # the answer's text after the step's transforms
    response: ChatResponse


class ChainOutcome(NamedTuple):
    """A chain run as a job evaluates it: the text to score, every step's response, the summed usage."""

    final_text: str
    responses: dict[str, ChatResponse]
    usage: Usage


@dataclass(frozen=True, slots=True)
class ChainResult:
    """Every step of one run, in order."""

    steps: tuple[StepResult, ...]

    @property
    def outputs(self) -> dict[str, str]:
        """Step name -> output."""
        return {step.name: step.output for step in self.steps}

    @property
    def final_text(self) -> str:
        """The last step's output."""
        return self.steps[-1].output

    @property
    def responses(self) -> dict[str, ChatResponse]:
        """Step name -> the provider's response (untransformed text, usage, latency, reasoning)."""
        return {step.name: step.response for step in self.steps}

    @property
    def usage(self) -> Usage:
        """Tokens of all steps together."""
        return _sum_usage(step.response.usage for step in self.steps)

    @property
    def usage_by_provider(self) -> dict[str, Usage]:
        """Tokens per registry name: steps on different backends have different prices."""
        names = dict.fromkeys(step.provider for step in self.steps)
        return {name: _sum_usage(s.response.usage for s in self.steps if s.provider == name) for name in names}

    @property
    def latency_s(self) -> float:
        """Time spent waiting for answers, all steps together."""
        return sum(step.response.latency_s for step in self.steps)

    def outcome(self) -> ChainOutcome:
        """This run as (final_text, responses, usage)."""
        return ChainOutcome(self.final_text, self.responses, self.usage)


class PromptChain:
    """Steps that run in order on one provider; each step's output is a variable for the steps after it."""

    def __init__(self, llm: ChainBackend) -> None:
        self._start({DEFAULT_PROVIDER: llm}, DEFAULT_PROVIDER)

    def _start(self, providers: Mapping[str, ChainBackend], default: str | None) -> None:
        self.providers: dict[str, ChainBackend] = dict(providers)
        self.default_provider = default
        self.steps: list[ChainStep] = []
        self._environment = template_environment()

    def __repr__(self) -> str:
        steps = ", ".join(f"{s.name}@{s.provider}" for s in self.steps)
        return f"{type(self).__name__}([{steps}])"

    def step(
        self,
        name: str,
        template: str,
        *,
        system: str | None = None,
        provider: str | None = None,
        mode: Mode = "chat",
        temperature: float | None = None,
        max_tokens: int | None = None,
        params: GenerationParams | None = None,
        transform: TransformSpec | Sequence[TransformSpec] | None = None,
    ) -> Self:
        """Add a step whose output later templates read as `{{ name }}`.

        `system` is a template too (chat mode only). `temperature` and `max_tokens` take precedence
        over the same fields of `params`, which override the provider's own defaults. `transform`
        is a built-in's name (`trim`, `strip_think`, `extract_json`), a `str -> str` callable, or a
        list of them applied in order. Mistakes raise a `ConfigError` here, not when the chain runs.
        """
        self._check_name(name)
        provider_name = self._provider_for(name, provider)
        if mode not in ("chat", "completion"):
            raise ConfigError(f"chain step {name!r}: mode must be 'chat' or 'completion', not {mode!r}")
        if system is not None and mode == "completion":
            # A completion prompt is sent as it is: no protocol has a place for a system message there.
            raise ConfigError(f"chain step {name!r}: a completion step has no system message; put it in the prompt")
        prompt, prompt_fields = self._compile(name, template)
        system_template, system_fields = self._compile(name, system) if system is not None else (None, set())
        step_params = (params or GenerationParams()).merged(
            GenerationParams(temperature=temperature, max_tokens=max_tokens)
        )
        self.steps.append(ChainStep(
            name=name, template=template, system=system, provider=provider_name, mode=mode, params=step_params,
            transforms=resolve_transforms(transform), fields=frozenset(prompt_fields | system_fields),
            compiled=(prompt, system_template),
        ))
        return self

    @property
    def required_variables(self) -> frozenset[str]:
        """The names a caller must pass: those the templates read that no earlier step produces."""
        needed: set[str] = set()
        produced: set[str] = set()
        for step in self.steps:
            needed |= step.fields - produced
            produced.add(step.name)
        return frozenset(needed)

    def check(self, variables: Collection[str]) -> None:
        """Raise a `ConfigError` unless the chain can run with these variable names.

        A template that reads a name neither the variables nor an earlier step define raises a
        `ChainTemplateError` naming the step; so does a variable named like a step (it would be
        silently replaced by that step's output)."""
        if not self.steps:
            raise ConfigError("the chain has no steps")
        defined = set(variables)
        for step in self.steps:
            if step.name in variables:
                raise ChainTemplateError(step.name, "a variable has the name of this step; rename one of them")
            missing = step.fields - defined
            if missing:
                raise ChainTemplateError(
                    step.name,
                    f"the template reads {_names(missing)}, which is not defined before this step "
                    f"(defined: {_names(defined) or 'nothing'})",
                    missing=missing,
                )
            defined.add(step.name)

    def with_providers(self, providers: Mapping[str, ChainBackend]) -> Self:
        """The same steps, with these backends in place of the registered ones of the same names.

        A job builds its chain once and gives every task its own way of calling the backends."""
        unknown = set(providers) - set(self.providers)
        if unknown:
            raise ConfigError(f"no provider named {_names(unknown)} in this chain; known: {_names(self.providers)}")
        clone = copy.copy(self)  # shares the compiled steps
        clone.providers = {**self.providers, **providers}
        return clone

    async def arun(self, variables: Mapping[str, Any] | None = None, /, **more: Any) -> dict[str, str]:
        """Run every step; step name -> output. Variables come as a mapping, keywords, or both."""
        return (await self.arun_detailed(variables, **more)).outputs

    async def arun_detailed(self, variables: Mapping[str, Any] | None = None, /, **more: Any) -> ChainResult:
        """Run every step; each step's prompt, output and response.

        Provider errors keep their type (a `RateLimitError` stays one) and gain the step's name in
        their message; no step runs unless every template can be filled."""
        values = {**(variables or {}), **more}
        self.check(values)
        results: list[StepResult] = []
        for step in self.steps:
            result = await self._run_step(step, values)
            results.append(result)
            values[step.name] = result.output
        return ChainResult(tuple(results))

    async def arun_item(self, item: Mapping[str, Any]) -> ChainOutcome:
        """Run the chain as a job's unit on one dataset item: (final_text, step responses, summed usage).

        The final text is what a job scores; the responses let it count and price every step
        (`ChainResult.usage_by_provider` when steps use backends with different prices)."""
        return (await self.arun_detailed(item)).outcome()

    run = blocking(arun)
    run_detailed = blocking(arun_detailed)
    run_item = blocking(arun_item)

    # ---- internals -------------------------------------------------------------------------------

    def _check_name(self, name: str) -> None:
        # A name is usable iff `{{ name }}` reads exactly that variable: this rejects non-identifiers,
        # Jinja keywords (`true`, `none`) and the environment's globals (`range`, `dict`).
        try:
            usable = referenced_fields("{{ " + name + " }}", self._environment) == {name}
        except TemplateSyntaxError:
            usable = False
        if not usable:
            raise ConfigError(f"chain step name {name!r} cannot be used in a template; use a plain identifier")
        if any(step.name == name for step in self.steps):
            raise ConfigError(f"chain step {name!r} is defined twice")
        readers = [step.name for step in self.steps if name in step.fields]
        if readers:
            raise ChainTemplateError(readers[0], f"reads {{{{ {name} }}}} before step {name!r} produces it")

    def _provider_for(self, step: str, provider: str | None) -> str:
        name = provider if provider is not None else self.default_provider
        if name is None:
            raise ConfigError(f"chain step {step!r}: choose a provider= from {_names(self.providers)}")
        if name not in self.providers:
            raise ConfigError(f"chain step {step!r}: no provider named {name!r}; known: {_names(self.providers)}")
        return name

    def _compile(self, step: str, source: str) -> tuple[Template, set[str]]:
        try:
            return self._environment.from_string(source), referenced_fields(source, self._environment)
        except TemplateSyntaxError as exc:
            raise ChainTemplateError(step, f"template syntax error: {exc.message} (line {exc.lineno})") from None

    async def _run_step(self, step: ChainStep, values: Mapping[str, Any]) -> StepResult:
        prompt_template, system_template = step.compiled
        prompt = _render(step.name, prompt_template, values)
        provider = self.providers[step.provider]
        try:
            if step.mode == "completion":
                response = await provider.acomplete(prompt, step.params)
            else:
                messages = [ChatMessage.user(prompt)]
                if system_template is not None:
                    messages.insert(0, ChatMessage.system(_render(step.name, system_template, values)))
                response = await provider.achat(messages, step.params)
        except EvalpipeError as error:
            # The same object re-raised, so its type, status and retry hint still drive retries and rows.
            error.message = f"chain step {step.name!r}: {error.message}"
            error.args = (error.message,)
            raise
        try:
            output = apply_transforms(step.transforms, response.text)
        except Exception as error:  # a user's transform may fail in any way; say where
            error.add_note(f"in a transform of chain step {step.name!r}")
            raise
        return StepResult(step.name, step.provider, prompt, output, response)


class MultiPromptChain(PromptChain):
    """A chain whose steps choose their backend from a registry of named providers.

    `MultiPromptChain({"fast": small_llm, "smart": big_llm}).step("draft", ..., provider="fast")`.
    A step without `provider=` uses `default`, or the only provider when there is one."""

    def __init__(self, providers: Mapping[str, ChainBackend], *, default: str | None = None) -> None:
        if not providers:
            raise ConfigError("a MultiPromptChain needs at least one provider")
        if default is not None and default not in providers:
            raise ConfigError(f"default provider {default!r} is not among {_names(providers)}")
        if default is None and len(providers) == 1:
            default = next(iter(providers))
        self._start(providers, default)


def _render(step: str, template: Template, values: Mapping[str, Any]) -> str:
    try:
        return template.render(values)
    except UndefinedError as exc:  # a missing attribute or key of a value: `{{ doc.title }}`
        raise ChainTemplateError(step, str(exc.message)) from None
    except SecurityError as exc:
        raise ChainTemplateError(step, f"not allowed in the sandbox: {exc}") from None
    except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
        # A filter or an expression failing on these values, e.g. `{{ n + 1 }}` with a string n.
        raise ChainTemplateError(step, f"{type(exc).__name__}: {exc}") from None


def _sum_usage(usages: Iterable[Usage]) -> Usage:
    input_tokens = output_tokens = 0
    for usage in usages:
        input_tokens += usage.input_tokens
        output_tokens += usage.output_tokens
    return Usage(input_tokens, output_tokens)


def _names(names: Collection[str]) -> str:
    return ", ".join(repr(name) for name in sorted(names))


__all__ = [
    "ChainBackend",
    "ChainOutcome",
    "ChainResult",
    "ChainStep",
    "ChainTemplateError",
    "MultiPromptChain",
    "PromptChain",
    "StepResult",
]
