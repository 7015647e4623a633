"""Tools and images in jobs: the job's `tools:` loaded and checked, and `prompt.images` rendered per item.

A tool is given three ways: inline (`{name, description, parameters}`), from a file (`{file: path}`,
JSON or YAML, one tool or a list, relative to the job file), or as `module:function`, whose schema
comes from the function's signature (annotations, defaults) and docstring (first paragraph, and an
`Args:` section for the parameters). Every schema must be a valid JSON Schema of an object, and every
name one the vendors accept. Images are item templates: each renders to a path (relative to the
dataset file), an http(s) / data URL, or nothing (no image for that item); every item's images must
exist, and be an image each backend of the job accepts (its vendor's format, size and pixel limits,
`Provider.image_rules`), before any call.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import jsonschema
import yaml
from jinja2 import Template, TemplateError, TemplateSyntaxError

from evalpipe.backends.image_rules import ImageRules
from evalpipe.backends.registry import provider_class
from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.dataset import Dataset, DatasetError, display_path
from evalpipe.pipeline.job.spec import JobSpec, ToolSpec
from evalpipe.pipeline.job.templates import FieldPath, referenced_fields, template_environment
from evalpipe.types import TOOL_CHOICE_MODES, ChatMessage, Image, Tool

Report = Callable[[FieldPath, str], None]  # where in the job, what is wrong

MAX_IMAGE_PROBLEMS = 10
_URL = ("http://", "https://", "data:")
_JSON_TYPES: Mapping[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean",
                                  list: "array", tuple: "array", dict: "object"}


def load_tools(spec: JobSpec, base_dir: Path,
               report: Report) -> tuple[tuple[Tool, ...], dict[str, Callable[..., Any]]]:
    """The job's tools in order, and the Python functions of its `module:function` ones by tool name;
    each problem (unreadable file, bad schema or name, a repeated name) reported."""
    tools: list[Tool] = []
    functions: dict[str, Callable[..., Any]] = {}
    for index, entry in enumerate(spec.tools):
        where: FieldPath = ("tools", index)
        try:
            if isinstance(entry, str):
                function = _imported(entry)
                loaded = [tool_from_function(function)]
                functions[loaded[0].name] = function
            else:
                loaded = _tools_of(entry, base_dir)
        except ConfigError as exc:
            report(where, exc.message)
            continue
        for tool in loaded:
            problem = schema_problem(tool.parameters)
            if problem is not None:
                report(where, f"tool {tool.name!r}: parameters are not a valid JSON Schema: {problem}")
            elif any(t.name == tool.name for t in tools):
                report(where, f"tool name {tool.name!r} is given twice; vendors refuse repeated names")
            else:
                tools.append(tool)
    names = [tool.name for tool in tools]
    for where, choice in [(("tool_choice",), spec.tool_choice),
                          *((("parameters", "sets", i, "tool_choice"), s.tool_choice)
                            for i, s in enumerate(spec.parameters.sets)),
                          (("parameters", "defaults", "tool_choice"), spec.parameters.defaults.tool_choice)]:
        if choice is not None and choice not in (*TOOL_CHOICE_MODES, *names):
            offered = f"; the job's tools are: {', '.join(names)}" if names else "; the job offers no tools"
            report(where, f"{choice!r} is not one of {', '.join(TOOL_CHOICE_MODES)} or a tool's name{offered}")
    if spec.tools and (spec.prompt.mode == "completion" or spec.prompt.chain is not None):
        report(("tools",), "tools are offered in chat calls only; this job's prompt is a completion or a chain")
    if spec.max_steps > 1 and not functions:
        report(("max_steps",), "more than one step needs a tool the runner can call: give one as module:function")
    return tuple(tools), functions


def _tools_of(entry: ToolSpec, base_dir: Path) -> list[Tool]:
    if entry.file is None:
        return [Tool(str(entry.name), entry.description,
                     entry.parameters if entry.parameters is not None else {"type": "object", "properties": {}})]
    path = Path(entry.file) if Path(entry.file).is_absolute() else base_dir / entry.file
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if path.suffix.lower() in (".yaml", ".yml") else json.loads(text)
    except OSError as exc:
        raise ConfigError(f"cannot read the tool file {entry.file!r}: {exc.strerror or exc}") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"the tool file {entry.file!r} does not parse: {exc}") from None
    specs = data if isinstance(data, list) else [data]
    if not specs or not all(isinstance(s, Mapping) for s in specs):
        raise ConfigError(f"the tool file {entry.file!r} must hold a tool {{name, description, parameters}} "
                          "or a list of them")
    return [Tool.from_dict(s) for s in specs]


def _imported(reference: str) -> Callable[..., Any]:
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{reference!r}: expected a tool {{name, description, parameters}}, a {{file: path}}, "
                          "or module:function")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"tool {reference!r} cannot be imported: {exc}") from None
    if not callable(function):
        raise ConfigError(f"tool {reference!r} is not a function")
    return function  # type: ignore[no-any-return]


def schema_problem(schema: dict[str, Any]) -> str | None:
    """Why `schema` cannot describe a tool's arguments (not a valid JSON Schema, or not of an object), or None."""
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        return f"at {exc.json_path}: {exc.message}"
    if schema.get("type") != "object":
        return f"the arguments must be an object (`type: object`), got type {schema.get('type')!r}"
    return None


def tool_from_function(function: Callable[..., Any]) -> Tool:
    """A tool for `function`: its name, its docstring's first paragraph, and a schema of its parameters."""
    doc = inspect.getdoc(function) or ""
    summary = doc.split("\n\n", 1)[0].replace("\n", " ").strip()
    described = _argument_docs(doc)
    try:
        hints = get_type_hints(function)
    except (NameError, TypeError) as exc:
        raise ConfigError(f"tool {function.__name__!r}: its annotations cannot be read: {exc}") from None
    properties: dict[str, Any] = {}
    required = []
    for name, parameter in inspect.signature(function).parameters.items():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        schema = _schema_of(hints.get(name, Any))
        if name in described:
            schema["description"] = described[name]
        properties[name] = schema
        if parameter.default is parameter.empty:
            required.append(name)
    return Tool(function.__name__, summary, {"type": "object", "properties": properties, "required": required})


def _schema_of(annotation: Any) -> dict[str, Any]:
    """A JSON Schema for a parameter's annotation (`{}`, any value, for what has no JSON counterpart)."""
    origin = get_origin(annotation)
    if origin is Literal:
        return {"enum": list(get_args(annotation))}
    if origin in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        return _schema_of(members[0]) if len(members) == 1 else {"anyOf": [_schema_of(m) for m in members]}
    if origin in (list, tuple, Sequence) and get_args(annotation):
        return {"type": "array", "items": _schema_of(get_args(annotation)[0])}
    kind = _JSON_TYPES.get(origin or annotation)
    return {"type": kind} if kind else {}


_ARGUMENT = re.compile(r"^\s+(\w+)(?:\s*\([^)]*\))?\s*:\s*(.+)$")


def _argument_docs(doc: str) -> dict[str, str]:
    """Parameter descriptions from a Google-style `Args:` (or `Parameters:`) docstring section."""
    found: dict[str, str] = {}
    inside = False
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            inside = True
        elif inside and line and not line[0].isspace():
            inside = False
        elif inside and (match := _ARGUMENT.match(line)):
            found[match.group(1)] = match.group(2).strip()
    return found


class ImageTemplates:
    """`prompt.images` compiled once: `render(item)` gives the item's images, paths resolved."""

    def __init__(self, sources: Sequence[str], folder: Path) -> None:
        environment = template_environment()
        self.sources = list(sources)
        self.folder = folder  # relative paths start here: the dataset file's folder
        self.compiled: list[Template] = [environment.from_string(source) for source in self.sources]
        self.fields = frozenset[str]().union(*(referenced_fields(source, environment) for source in self.sources))

    def render(self, item: Mapping[str, Any]) -> tuple[Image, ...]:
        """The item's images; raises jinja2's `TemplateError` when a template fails on it."""
        images = (self.render_one(index, item) for index in range(len(self.compiled)))
        return tuple(image for image in images if image is not None)

    def render_one(self, index: int, item: Mapping[str, Any]) -> Image | None:
        """The item's image from template `index`: a URL, or a path resolved against the dataset's folder;
        None when it renders empty (`{{ image | default('') }}`: items without an image)."""
        text = self.compiled[index].render(item).strip()
        if not text:
            return None
        if text.startswith(_URL):
            return Image.from_url(text)
        path = Path(text)
        return Image.from_path(path if path.is_absolute() else self.folder / path)


def image_folder(dataset: Dataset, base_dir: Path) -> Path:
    """Where an item's relative image paths start: the dataset file's folder, or the job's for inline items."""
    return dataset.path.parent if dataset.path is not None else base_dir


def image_templates(spec: JobSpec, dataset: Dataset, base_dir: Path) -> ImageTemplates | None:
    """The job's compiled image templates, or None when its items carry no images."""
    if not spec.prompt.images:
        return None
    return ImageTemplates(spec.prompt.images, image_folder(dataset, base_dir))


def with_images(messages: tuple[ChatMessage, ...], images: Sequence[Image]) -> tuple[ChatMessage, ...]:
    """`messages` with `images` attached to the last user message."""
    if not images:
        return messages
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        raise ConfigError("images go with a user message, and the prompt has none")
    attached = replace(messages[last], images=(*messages[last].images, *images))
    return (*messages[:last], attached, *messages[last + 1:])


def check_images(spec: JobSpec, dataset: Dataset, base_dir: Path, report: Report) -> None:
    """Every item's images: the templates render, each file exists, and each backend of the job takes it
    (one problem per item, image and backend, naming all three)."""
    if not spec.prompt.images:
        return
    if spec.prompt.mode == "completion" or spec.prompt.chain is not None:
        report(("prompt", "images"), "images go with chat messages; this prompt is a completion or a chain")
        return
    try:
        templates = image_templates(spec, dataset, base_dir)
    except TemplateSyntaxError as exc:
        report(("prompt", "images"), f"template syntax error: {exc.message}")
        return
    assert templates is not None
    rules = [(b.id, provider_class(b.backend).image_rules) for b in spec.backends]
    for count, (item_id, where, problem) in enumerate(_image_problems(dataset, templates, rules)):
        if count == MAX_IMAGE_PROBLEMS:  # a missing folder must not list every item
            report(("prompt", "images"), "more items have image problems; fix these first")
            return
        report(where, f"item {item_id!r}: {problem}")


def _shown_url(url: str) -> str:
    """A URL for a message: a data URL by its type and length only."""
    head, _, payload = url.partition(",")
    return f"{head},<{len(payload)} characters>" if url.startswith("data:") else url


def _image_problems(dataset: Dataset, templates: ImageTemplates,
                    rules: Sequence[tuple[str, ImageRules]]) -> Iterator[tuple[str, FieldPath, str]]:
    try:
        for item in dataset:
            location = dataset.location(item)
            for index in range(len(templates.compiled)):
                where: FieldPath = ("prompt", "images", index)
                try:
                    image = templates.render_one(index, item.data)
                except (TemplateError, ArithmeticError, LookupError, TypeError, ValueError) as exc:
                    yield item.id, where, f"({location}) the image template fails: {exc}"
                    continue
                if image is None:
                    continue
                if image.path is not None and not Path(image.path).is_file():
                    yield item.id, where, f"({location}) image file {display_path(Path(image.path))!r} does not exist"
                    continue
                shown = display_path(Path(image.path)) if image.path is not None else _shown_url(image.url or "")
                for backend_id, vendor in rules:
                    if (problem := vendor.problem(image)) is not None:
                        yield item.id, where, f"({location}) image {shown!r} {problem} (backend {backend_id!r})"
    except DatasetError:
        return  # the dataset check reports it
