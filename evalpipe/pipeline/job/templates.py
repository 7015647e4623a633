"""Prompt templates: Jinja2 in a sandbox, compiled once per job, rendered per item into chat messages.

A template sees the item's fields as variables (`{{ question }}`). `StrictUndefined` turns a missing
field into an error instead of an empty prompt, and the loader checks every template's fields against
the dataset before any call. Autoescaping is off: prompts are text, not HTML. As Jinja does by
default, one trailing newline is dropped: a YAML `|` block always ends in one, and a completion prompt
ending "A:\\n" instead of "A:" changes what a base model writes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.spec import PromptSpec
from evalpipe.pipeline.job.template_sandbox import MAX_RENDERED_CHARS, BoundedSandbox, TemplateLimitError
from evalpipe.types import ChatMessage, Role

FieldPath = tuple[str | int, ...]  # where a value sits in the job file: ("prompt", "messages", 1, "content")


class PromptTemplateError(ConfigError):
    """Templates that do not compile; `problems` holds (field, line within the template, message) each."""

    def __init__(self, problems: list[tuple[FieldPath, int | None, str]]) -> None:
        super().__init__("; ".join(f"{format_field(path)}: {message}" for path, _, message in problems))
        self.problems = problems


class TemplateRenderError(ConfigError):
    """A template failed for one item: a field it uses is missing, or an expression fails on the values."""

    def __init__(self, field: FieldPath, message: str, *, missing_field: bool) -> None:
        super().__init__(f"{format_field(field)}: {message}")
        self.field = field
        self.missing_field = missing_field


def format_field(path: FieldPath) -> str:
    """A field path as people write it: `backends[1].rpm`."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def template_environment() -> SandboxedEnvironment:
    """The environment every job template compiles in: sandboxed and bounded (`BoundedSandbox`), strict
    about undefined names, no escaping."""
    return BoundedSandbox(undefined=StrictUndefined, autoescape=False)


def render_problem(exc: BaseException) -> tuple[str, bool] | None:
    """What a render failure says, and whether it is a missing field; None for an error not of the template."""
    if isinstance(exc, UndefinedError):
        return str(exc.message), True
    if isinstance(exc, TemplateLimitError):
        return f"past the sandbox's limits: {exc}", False
    if isinstance(exc, SecurityError):
        return f"not allowed in the sandbox: {exc}", False
    if isinstance(exc, MemoryError):
        return "the template needs more memory than there is (a text or list too large?)", False
    if isinstance(exc, RecursionError):
        return "the template nests too deeply (a macro calling itself?)", False
    if isinstance(exc, TemplateError | ArithmeticError | LookupError | TypeError | ValueError):
        # A filter or an expression failing on this item's values, e.g. `{{ n + 1 }}` with a string n.
        return f"{type(exc).__name__}: {exc}", False
    return None


def compile_problem(exc: BaseException) -> tuple[int | None, str] | None:
    """The template line and message of a template that does not compile; None for another error."""
    if isinstance(exc, TemplateSyntaxError):
        return exc.lineno, f"template syntax error: {exc.message} (template line {exc.lineno})"
    if isinstance(exc, RecursionError | MemoryError):
        return None, "the template is nested too deeply to compile"
    if isinstance(exc, TemplateLimitError):
        return None, f"past the sandbox's limits: {exc}"
    return None


def template_sources(prompt: PromptSpec) -> list[tuple[FieldPath, Role, str]]:
    """Each template of `prompt` in message order, with where it sits in the job and its message role."""
    if prompt.messages is not None:
        return [(("prompt", "messages", i, "content"), m.role, m.content) for i, m in enumerate(prompt.messages)]
    if prompt.chain is not None:  # the first step's prompt stands for the task (row, estimates)
        return [(("prompt", "chain", 0, "user"), "user", prompt.chain[0].user)]
    sources: list[tuple[FieldPath, Role, str]] = []
    if prompt.system is not None:
        sources.append((("prompt", "system"), "system", prompt.system))
    if prompt.user is not None:
        sources.append((("prompt", "user"), "user", prompt.user))
    return sources


def referenced_fields(source: str, environment: SandboxedEnvironment | None = None) -> set[str]:
    """The item fields a template needs; raises jinja2's `TemplateSyntaxError` if it does not parse.

    A field read only behind `is defined` / `is undefined` or through `| default(...)` is optional and
    not counted: that is how a template says a field may be absent.
    """
    environment = environment or template_environment()
    tree = environment.parse(source)
    optional = {test.node.name for test in tree.find_all(nodes.Test)
                if test.name in ("defined", "undefined") and isinstance(test.node, nodes.Name)}
    optional |= {used.node.name for used in tree.find_all(nodes.Filter)
                 if used.name in ("default", "d") and isinstance(used.node, nodes.Name)}
    names = meta.find_undeclared_variables(tree) - optional
    return {name for name in names if name not in environment.globals}  # range, dict, ... are not fields


def option_templates(value: Any, path: FieldPath) -> list[tuple[FieldPath, str]]:
    """The strings with template syntax inside a scorer's options (`values: ["{{ expected }}"]`), by path."""
    if isinstance(value, str):
        return [(path, value)] if "{{" in value or "{%" in value else []
    if isinstance(value, Mapping):
        return [found for key, child in value.items() for found in option_templates(child, (*path, str(key)))]
    if isinstance(value, list):
        return [found for index, child in enumerate(value) for found in option_templates(child, (*path, index))]
    return []


def required_fields(prompt_spec: PromptSpec) -> set[str]:
    """The item fields the prompt's templates need (optional ones left out); raises `PromptTemplateError`."""
    return set(PromptTemplates(prompt_spec).fields)


class PromptTemplates:
    """A prompt's templates compiled once; `render(item)` gives the messages of one call."""

    def __init__(self, prompt: PromptSpec, environment: SandboxedEnvironment | None = None) -> None:
        self.prompt = prompt
        self.environment = environment or template_environment()
        self.compiled: list[tuple[FieldPath, Role, Template]] = []
        # Per template, its pieces when it only puts fields in text (`Q: {{ question }}`): rendered by
        # joining them, which gives jinja2's text at a tenth of its cost (a share of each task's CPU).
        self._substitutions: list[Substitution | None] = []
        self.fields_by_template: dict[FieldPath, frozenset[str]] = {}
        problems: list[tuple[FieldPath, int | None, str]] = []
        for path, role, source in template_sources(prompt):
            try:
                self.fields_by_template[path] = frozenset(referenced_fields(source, self.environment))
                self.compiled.append((path, role, self.environment.from_string(source)))
                self._substitutions.append(Substitution.of(self.environment.parse(source)))
            except (TemplateSyntaxError, TemplateLimitError, RecursionError, MemoryError) as exc:
                line, message = compile_problem(exc) or (None, str(exc))
                problems.append((path, line, message))
        if problems:
            raise PromptTemplateError(problems)
        if prompt.dialogue is not None:
            self.fields_by_template[("prompt", "dialogue")] = frozenset({prompt.dialogue})
        self.fields: frozenset[str] = frozenset().union(*self.fields_by_template.values())

    def render(self, item: Mapping[str, Any]) -> tuple[ChatMessage, ...]:
        """The messages for `item`; raises `TemplateRenderError` naming the template that failed."""
        messages: list[ChatMessage] = []
        for (path, role, template), substitution in zip(self.compiled, self._substitutions, strict=True):
            if substitution is not None and (text := substitution.render(item)) is not None:
                messages.append(ChatMessage(role, text))
                continue
            try:
                messages.append(ChatMessage(role, template.render(item)))
            except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError, MemoryError,
                    RecursionError) as exc:
                message, missing = render_problem(exc) or (str(exc), False)
                raise TemplateRenderError(path, message, missing_field=missing) from None
        if self.prompt.dialogue is not None:
            messages.extend(transcript(item, self.prompt.dialogue))
        return tuple(messages)


class Substitution:
    """A template made only of text and bare fields (`{{ name }}`: no filter, test, tag or expression)."""

    def __init__(self, pieces: list[tuple[bool, str]]) -> None:
        self._pieces = pieces  # (is a field, literal text or field name), in order

    @classmethod
    def of(cls, tree: nodes.Template) -> Substitution | None:
        """The pieces of a parsed template, or None when it is more than text and bare fields."""
        pieces: list[tuple[bool, str]] = []
        for output in tree.body:
            if not isinstance(output, nodes.Output):
                return None
            for node in output.nodes:
                if isinstance(node, nodes.TemplateData):
                    pieces.append((False, node.data))
                elif isinstance(node, nodes.Name) and node.ctx == "load":
                    pieces.append((True, node.name))
                else:
                    return None
        return cls(pieces)

    def render(self, item: Mapping[str, Any]) -> str | None:
        """The text, when every field is present and text and the result is within the sandbox's size
        limit; else None, and jinja2 renders it (a number's or a date's text, and every error, are its)."""
        parts: list[str] = []
        size = 0
        for is_field, text in self._pieces:
            if is_field:
                value = item.get(text)
                if type(value) is not str:
                    return None
                text = value
            size += len(text)
            parts.append(text)
        return "".join(parts) if size <= MAX_RENDERED_CHARS else None


def transcript(item: Mapping[str, Any], field: str) -> list[ChatMessage]:
    """The dialogue in `item[field]`: a list of `{role, content}` with at least one user message."""
    where: FieldPath = ("prompt", "dialogue")
    if field not in item:
        raise TemplateRenderError(where, f"the item has no field {field!r}", missing_field=True)
    turns = item[field]
    if not isinstance(turns, list) or not turns:
        raise TemplateRenderError(where, f"field {field!r} must be a non-empty list of {{role, content}}",
                                  missing_field=False)
    messages = []
    for index, turn in enumerate(turns):
        if (not isinstance(turn, Mapping) or turn.get("role") not in ("system", "user", "assistant")
                or not isinstance(turn.get("content"), str)):
            raise TemplateRenderError(where, f"{field}[{index}] must be {{role: system|user|assistant, content: "
                                             f"text}}, got {turn!r:.80}", missing_field=False)
        messages.append(ChatMessage(turn["role"], turn["content"]))
    if not any(m.role == "user" for m in messages):
        raise TemplateRenderError(where, f"field {field!r} has no user message to answer", missing_field=False)
    return messages
