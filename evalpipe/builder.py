"""The fluent builder: `LLMBuilder().backend("openai").model("gpt-4o-mini").build()`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from evalpipe.backends.base import Provider, ProviderConfig
from evalpipe.backends.registry import LLMBackend, parse_backend, provider_class
from evalpipe.errors import ConfigError
from evalpipe.redaction import header_value_problem, register_secret
from evalpipe.types import GenerationParams, Tool, check_header_values

GIVEN_KEY = "the api_key given to the builder"


def check_api_key(key: str, source: str) -> None:
    """Refuse a key that cannot go into an HTTP header, naming `source` (a variable), never the key.

    A key with a trailing newline (read from a file) is refused rather than stripped: a key is
    sent as it was given or not at all, and the fix (`tr -d '\\n'`) is the user's to make once."""
    register_secret(key)  # whatever happens next, the value is never shown
    problem = header_value_problem(key)
    if problem is not None:
        raise ConfigError(f"{source} {problem}: the API key cannot be sent as it is; fix the value")


class BuilderOptions(BaseModel):
    """The builder's options, validated when `build()` is called."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    backend: LLMBackend | None = None
    api_key: SecretStr | None = None
    base_url: str | None = None
    model: str | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    seed: int | None = None
    stop: list[str] | None = None
    system: str | None = None
    json_schema: dict[str, Any] | None = None
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    reasoning_budget_tokens: int | None = Field(default=None, ge=1)
    extra_body: dict[str, Any] | None = None
    tools: list[Any] | None = None  # Tool objects, made (and checked) by the builder's methods
    tool_choice: str | None = Field(default=None, min_length=1)
    timeout: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=4, ge=0)
    headers: dict[str, str] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)


class LLMBuilder:
    """Collects options step by step; `build()` checks them and returns a provider."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def __repr__(self) -> str:
        hidden = {"api_key": "***", "headers": {name: "***" for name in self._values.get("headers", {})}}
        shown = {k: hidden.get(k, v) for k, v in self._values.items()}
        return f"LLMBuilder({shown})"

    def _set(self, **values: Any) -> LLMBuilder:
        self._values.update(values)
        return self

    def backend(self, backend: LLMBackend | str) -> LLMBuilder:
        """Which backend to talk to (an `LLMBackend` or its name)."""
        return self._set(backend=parse_backend(backend))

    def api_key(self, key: str) -> LLMBuilder:
        """The API key; without it the backend's conventional environment variable is read."""
        return self._set(api_key=SecretStr(key))

    def base_url(self, url: str) -> LLMBuilder:
        """Where the API lives, e.g. `http://127.0.0.1:8000/v1` for a local or fake server."""
        return self._set(base_url=url)

    def model(self, model: str) -> LLMBuilder:
        return self._set(model=model)

    def temperature(self, value: float) -> LLMBuilder:
        return self._set(temperature=value)

    def top_p(self, value: float) -> LLMBuilder:
        return self._set(top_p=value)

    def top_k(self, value: int) -> LLMBuilder:
        return self._set(top_k=value)

    def max_tokens(self, value: int) -> LLMBuilder:
        return self._set(max_tokens=value)

    def seed(self, value: int) -> LLMBuilder:
        return self._set(seed=value)

    def stop(self, sequences: Sequence[str]) -> LLMBuilder:
        return self._set(stop=list(sequences))

    def system(self, prompt: str) -> LLMBuilder:
        """A system prompt added to every conversation that has none."""
        return self._set(system=prompt)

    def json_schema(self, schema: dict[str, Any]) -> LLMBuilder:
        """Ask for JSON matching `schema` (structured output where the backend supports it)."""
        return self._set(json_schema=schema)

    def reasoning_effort(self, effort: Literal["low", "medium", "high"]) -> LLMBuilder:
        """How hard a reasoning model thinks; backends without the control list it in `ignored_options`."""
        return self._set(reasoning_effort=effort)

    def reasoning_budget_tokens(self, tokens: int) -> LLMBuilder:
        """At most this many tokens of reasoning, where the backend takes a budget (see `ignored_options`)."""
        return self._set(reasoning_budget_tokens=tokens)

    def extra_body(self, fields: dict[str, Any]) -> LLMBuilder:
        """Fields deep-merged into every request body as they are: a vendor option evalpipe has no name for."""
        return self._set(extra_body={**self._values.get("extra_body", {}), **fields})

    def tool(self, name: str, description: str = "", parameters: dict[str, Any] | None = None) -> LLMBuilder:
        """Offer the model a tool: a name, what it does, a JSON Schema of its arguments."""
        tool = Tool(name, description, parameters) if parameters is not None else Tool(name, description)
        return self._set(tools=[*self._values.get("tools", []), tool])

    def tools(self, tools: Sequence[Tool | dict[str, Any]]) -> LLMBuilder:
        """Offer several tools: `Tool`s or dicts (`{name, description, parameters}`, OpenAI's or
        Anthropic's spelling)."""
        made = [tool if isinstance(tool, Tool) else Tool.from_dict(tool) for tool in tools]
        return self._set(tools=[*self._values.get("tools", []), *made])

    def tool_choice(self, choice: str) -> LLMBuilder:
        """Whether the model must call a tool: "auto", "none", "required", or the name of one tool."""
        return self._set(tool_choice=choice)

    def timeout(self, seconds: float) -> LLMBuilder:
        """Seconds one attempt may take (for streams: the longest silence between chunks)."""
        return self._set(timeout=seconds)

    def max_retries(self, count: int) -> LLMBuilder:
        return self._set(max_retries=count)

    def header(self, name: str, value: str) -> LLMBuilder:
        """An extra HTTP header on every request (OpenRouter's `X-Title`, say)."""
        return self._set(headers={**self._values.get("headers", {}), name: value})

    def option(self, name: str, value: Any) -> LLMBuilder:
        """A backend-specific option: `deployment` and `api_version` (Azure), `embedding_model`, ..."""
        return self._set(options={**self._values.get("options", {}), name: value})

    def embedding_model(self, model: str) -> LLMBuilder:
        """The model `embed()` uses when it differs from the chat model."""
        return self.option("embedding_model", model)

    def build(self) -> Provider:
        """Check the options and return the provider; a ConfigError says what is wrong."""
        try:
            options = BuilderOptions(**self._values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"invalid LLMBuilder options: {problems}") from None
        if options.backend is None:
            raise ConfigError("no backend chosen: call .backend(LLMBackend.OPENAI) or another")
        cls = provider_class(options.backend)
        api_key = options.api_key
        if api_key is not None:
            check_api_key(api_key.get_secret_value(), GIVEN_KEY)
        elif found := cls.key_from_environment():
            check_api_key(found[1], found[0])
            api_key = SecretStr(found[1])
        check_header_values(options.headers, "given to the builder")
        if api_key is None and cls.requires_api_key:
            raise ConfigError(
                f"{options.backend.value} needs an API key: call .api_key(...) or set {cls.api_key_env}"
            )
        params = GenerationParams(
            temperature=options.temperature, top_p=options.top_p, top_k=options.top_k,
            max_tokens=options.max_tokens, seed=options.seed,
            stop=tuple(options.stop) if options.stop else None,
            system=options.system, json_schema=options.json_schema,
            reasoning_effort=options.reasoning_effort, reasoning_budget_tokens=options.reasoning_budget_tokens,
            extra_body=options.extra_body,
            tools=tuple(options.tools) if options.tools else None, tool_choice=options.tool_choice,
        )
        config = ProviderConfig(
            backend=options.backend.value,
            model=options.model or cls.default_model,
            base_url=(options.base_url or cls.default_base_url).rstrip("/") + "/",
            api_key=api_key, params=params, timeout_s=options.timeout,
            max_retries=options.max_retries, headers=options.headers, options=options.options,
        )
        return cls(config)
