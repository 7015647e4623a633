"""Job files: read the YAML, validate it, and check everything a run needs before the first call.

`load_job` reports every problem at once, one per line, as `jobs/x.yaml:14: backends[1].rpm: <what is
wrong and what was expected>`: the file, the line (kept from the YAML nodes), the field. Beyond the
schema it checks the scorers (known, with valid options), the templates (syntax), and the dataset in
one streaming pass: readable, not empty, no duplicate ids, and every field a template reads present
in every item. Duplicate ids are found with 8 bytes per item, so even a huge file checks in flat memory.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import inspect
import itertools
import os
import re
import types
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from jinja2 import Template
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from evalpipe.backends.registry import provider_class
from evalpipe.chain import ChainTemplateError, MultiPromptChain
from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.availability import job_backends, unavailable_message, unavailable_reason
from evalpipe.pipeline.job.batch_mode import check_batch_mode
from evalpipe.pipeline.job.chain import build_chain
from evalpipe.pipeline.job.dataset import Dataset, DatasetError, DatasetItem, display_path, duplicate_items, id_digest
from evalpipe.pipeline.job.spec import GRID_KEYS, BackendSpec, JobSpec
from evalpipe.pipeline.job.templates import (
    FieldPath,
    PromptTemplateError,
    PromptTemplates,
    TemplateRenderError,
    compile_problem,
    format_field,
    option_templates,
    referenced_fields,
    render_problem,
    template_environment,
)
from evalpipe.pipeline.job.tools import check_images, load_tools
from evalpipe.pipeline.job.yaml_lines import LineLoader, StructureError
from evalpipe.scoring.calls import ANSWERING
from evalpipe.scoring.registry import BUILT_IN, build_scorer
from evalpipe.types import ChatMessage, ChatResponse, GenerationParams, Tool

# Templates are rendered in full for the first items only. A missing field is checked on every item;
# an expression that fails on some value (`{{ n + 1 }}` with a string n) is caught only in this sample.
RENDER_CHECK_ITEMS = 100
MAX_DUPLICATES_REPORTED = 5
_IDENTIFIER_PATTERN = next(filter(None, (getattr(m, "pattern", None) for m in JobSpec.model_fields["name"].metadata)))


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a job: where (file, line, field) and what was expected."""

    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"


class JobFileError(ConfigError):
    """A job that cannot run; the message lists every problem, one per line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = tuple(problems)


@dataclass(frozen=True, slots=True)
class LoadedJob:
    """A validated job: its spec, where it came from, and its dataset and templates ready to expand."""

    spec: JobSpec
    path: Path | None  # None for a job built in code
    sha256: str  # of the job file's bytes (of the spec's JSON for a job built in code)
    base_dir: Path  # relative dataset paths start here: the job file's directory
    dataset: Dataset
    templates: PromptTemplates
    chain: MultiPromptChain | None = None  # a job whose unit is a prompt chain
    # Optional backends and judges that cannot run here, with the reason (checked by `load_job`).
    skipped: dict[str, str] = field(default_factory=dict)
    tools: tuple[Tool, ...] = ()  # offered in every chat call of the job
    tool_functions: Mapping[str, Callable[..., Any]] = field(default_factory=dict)  # the module:function ones


def limited_items(loaded: LoadedJob, limit: int) -> LoadedJob:
    """`loaded` with only its first `limit` items (the job's own `dataset.limit` if smaller)."""
    dataset = loaded.spec.dataset
    limited = dataset.model_copy(update={"limit": min(limit, dataset.limit or limit)})
    return dataclasses.replace(loaded, spec=loaded.spec.model_copy(update={"dataset": limited}),
                               dataset=Dataset(limited, loaded.base_dir))


def model_for(backend: BackendSpec) -> str:
    """The model a backend entry calls: its own `model`, or the backend's default."""
    return backend.model or provider_class(backend.backend).default_model


@dataclass(slots=True)
class _Locator:
    """Turns a field path into a `Problem` with the best line known for it."""

    file: str
    loader: LineLoader | None = None
    problems: list[Problem] = field(default_factory=list)

    def line(self, path: FieldPath) -> int | None:
        if self.loader is None:
            return None
        for end in range(len(path), 0, -1):  # the field itself, else its nearest ancestor
            if path[:end] in self.loader.key_lines:
                return self.loader.key_lines[path[:end]]
        return None

    def template_line(self, path: FieldPath, line_in_template: int | None) -> int | None:
        mark = self.loader.value_marks.get(path) if self.loader else None
        if mark is None or line_in_template is None:
            return self.line(path)
        first, style = mark
        # A block scalar (`|`, `>`) starts on the line after its indicator.
        return first + line_in_template - (0 if style in ("|", ">") else 1)

    def add(self, path: FieldPath, message: str, line: int | None = None) -> None:
        self.problems.append(Problem(self.file, line or self.line(path), format_field(path), message))

    def error(self) -> JobFileError:
        """Every problem: the job file's in line order, then those inside the data file."""
        return JobFileError(sorted(self.problems, key=lambda p: (p.file != self.file, p.line or 0)))


def load_job(path: str | os.PathLike[str], *, environ: Mapping[str, str] | None = None) -> LoadedJob:
    """Read, validate and check the job file at `path`; raises `JobFileError` listing every problem.

    Every backend and judge must be able to run with `environ` (default: the process environment):
    its key set, its model file there; an `optional: true` one that cannot is listed in `skipped`."""
    job_path = Path(path)
    locator = _Locator(display_path(job_path))
    try:
        raw = job_path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        why = f"not UTF-8 text: {exc.reason}" if isinstance(exc, UnicodeDecodeError) else exc.strerror
        raise JobFileError([Problem(locator.file, None, "", f"cannot read the job file: {why}")]) from None
    loader = locator.loader = LineLoader(text)
    try:
        data = loader.load_with_lines()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        column = f" (column {mark.column + 1})" if mark else ""
        message = f"YAML syntax error: {exc.problem or exc.context}{column}"
        raise JobFileError([Problem(locator.file, mark.line + 1 if mark else None, "", message)]) from None
    except yaml.YAMLError as exc:
        raise JobFileError([Problem(locator.file, None, "", f"YAML error: {exc}")]) from None
    except StructureError as exc:
        raise JobFileError([Problem(locator.file, exc.line, "", exc.message)]) from None
    except RecursionError:
        raise JobFileError([Problem(locator.file, None, "", "the YAML is nested too deeply to read")]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        got = "nothing (the file is empty)" if data is None else f"a {type(data).__name__}"
        message = f"a job file must be a mapping with keys like name, dataset, prompt, backends; got {got}"
        raise JobFileError([Problem(locator.file, 1 if data is not None else None, "", message)])
    for key_path, first, again in loader.duplicate_keys:
        locator.add(key_path, f"duplicate key (first at line {first}); give each key once", again)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        reported: set[FieldPath] = set()
        for error in exc.errors():
            where, message = _validation_problem(error, data)
            if where not in reported:  # a union reports one error per member for the same value
                reported.add(where)
                locator.add(where, message)
        raise locator.error() from None
    # Absolute, so that the dataset is found even if the process changes directory before expanding.
    return _checked(spec, job_path.parent.resolve(), locator, job_path, hashlib.sha256(raw).hexdigest(),
                    os.environ if environ is None else environ)


def prepare_job(spec: JobSpec, *, base_dir: str | os.PathLike[str] = ".",
                environ: Mapping[str, str] | None = None) -> LoadedJob:
    """A `LoadedJob` for a spec built in code, with the same checks as `load_job` (without line numbers).

    Backends are checked against `environ` only when it is given: code often passes built providers
    (with their keys) to the run instead, and the runner checks the others when it opens them."""
    digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()
    return _checked(spec, Path(base_dir).resolve(), _Locator(f"job {spec.name}"), None, digest, environ)


def _checked(spec: JobSpec, base_dir: Path, locator: _Locator, path: Path | None, digest: str,
             environ: Mapping[str, str] | None) -> LoadedJob:
    for index, backend in enumerate(spec.backends):
        if not model_for(backend):
            locator.add(("backends", index, "model"), f"{backend.backend.value} has no default model; set `model`")
    skipped = _check_availability(spec, environ, locator) if environ is not None else {}
    check_batch_mode(spec, locator.add)
    scorer_fields, scorer_templates = _check_scorers(spec, locator, base_dir)
    chain, chain_fields = _check_chain(spec, locator)
    templates: PromptTemplates | None = None
    try:
        templates = PromptTemplates(spec.prompt)
    except PromptTemplateError as exc:
        for where, line_in_template, message in exc.problems:
            locator.add(where, message, locator.template_line(where, line_in_template))
    dataset = Dataset(spec.dataset, base_dir)
    _check_dataset(dataset, templates, scorer_templates, {**scorer_fields, **chain_fields}, locator)
    tools, tool_functions = load_tools(spec, base_dir, locator.add)
    check_images(spec, dataset, base_dir, locator.add)
    if locator.problems or templates is None:
        raise locator.error()
    return LoadedJob(spec, path, digest, base_dir, dataset, templates, chain, skipped, tools, tool_functions)


def _check_availability(spec: JobSpec, environ: Mapping[str, str], locator: _Locator) -> dict[str, str]:
    """One problem per required backend or judge that cannot run; the optional ones that cannot, with why."""
    skipped: dict[str, str] = {}
    for where, backend in job_backends(spec):
        reason = unavailable_reason(backend, environ)
        if reason is None:
            continue
        if backend.optional:
            skipped[backend.id] = str(reason)
        else:
            locator.add(where, unavailable_message(backend, reason))
    return skipped


def _check_chain(spec: JobSpec, locator: _Locator) -> tuple[MultiPromptChain | None, dict[FieldPath, frozenset[str]]]:
    """The job's prompt chain, built (every template checked), and the item fields each step reads."""
    if spec.prompt.chain is None:
        return None, {}
    try:
        chain = build_chain(spec.prompt.chain, [b.id for b in (*spec.backends, *spec.judges)])
    except ConfigError as exc:
        failed = exc.step if isinstance(exc, ChainTemplateError) else None
        index = next((i for i, s in enumerate(spec.prompt.chain) if s.name == failed), None)
        locator.add(("prompt", "chain", index) if index is not None else ("prompt", "chain"), exc.message)
        return None, {}
    # A step reads item fields and earlier steps' outputs; the dataset must have the fields.
    fields: dict[FieldPath, frozenset[str]] = {}
    earlier: set[str] = set()
    for index, step in enumerate(chain.steps):
        fields[("prompt", "chain", index, "user")] = step.fields - earlier
        earlier.add(step.name)
    return chain, fields


class _DeclaredBackends:
    """The job's backends and judges as scorers see them when a job is checked: known, not yet callable."""

    def __init__(self, spec: JobSpec) -> None:
        self.ids = {backend.id for backend in (*spec.backends, *spec.judges)}

    def has(self, backend_id: str) -> bool:
        return backend_id == ANSWERING or backend_id in self.ids

    async def chat(self, backend_id: str, messages: Sequence[ChatMessage],
                   params: GenerationParams | None = None) -> ChatResponse:
        raise RuntimeError("a scorer called a model while the job was being checked")

    async def embed(self, backend_id: str, texts: Sequence[str]) -> list[list[float]]:
        raise RuntimeError("a scorer called a model while the job was being checked")


def _check_scorers(spec: JobSpec, locator: _Locator, base_dir: Path
                   ) -> tuple[dict[FieldPath, frozenset[str]], dict[FieldPath, Template]]:
    """Build each scorer once to check it; return the item fields its option templates read, and
    those templates compiled (rendered against the first items by `_check_dataset`)."""
    fields: dict[FieldPath, frozenset[str]] = {}
    compiled: dict[FieldPath, Template] = {}
    environment = template_environment()
    for index, scorer in enumerate(spec.scorers):
        options = dict(scorer.model_extra or {})
        try:
            build_scorer(scorer.type, scorer.name, options, _DeclaredBackends(spec), base_dir=base_dir)
        except ConfigError as exc:
            message = exc.message
            if message.startswith("unknown scorer"):
                message += similar(scorer.type, BUILT_IN)
            elif scorer.type in BUILT_IN and "unexpected keyword" in message:
                allowed = [p for p in inspect.signature(BUILT_IN[scorer.type]).parameters
                           if p not in ("name", "calls", "base_dir")]
                message += f"; its options are: {', '.join(allowed)}"
            locator.add(("scorers", index), message)
        # Option templates (`values: ["{{ expected }}"]`) read item fields too: a typo there would
        # otherwise score every answer against an empty string.
        for where, text in option_templates(options, ("scorers", index)):
            try:
                fields[where] = frozenset(referenced_fields(text, environment))
                compiled[where] = environment.from_string(text)
            except Exception as exc:  # a template that does not compile: said below, else raised again
                problem = compile_problem(exc)
                if problem is None:
                    raise
                locator.add(where, problem[1], locator.template_line(where, problem[0]))
    return fields, compiled


def _check_dataset(
    dataset: Dataset,
    templates: PromptTemplates | None,
    scorer_templates: Mapping[FieldPath, Template],
    scorer_fields: Mapping[FieldPath, frozenset[str]],
    locator: _Locator,
) -> None:
    """One streaming pass: parse every item, check template fields, remember 8-byte id digests.

    The prompt's and the scorers' templates are rendered for the first `RENDER_CHECK_ITEMS` items, in
    the bounded sandbox: a template that fails there would fail after the calls were paid. A template
    that failed once is not rendered again (it may have spent the sandbox's whole time limit)."""
    source_field: FieldPath = ("dataset", "path") if dataset.path is not None else ("dataset", "items")
    checks = {**(templates.fields_by_template if templates else {}), **scorer_fields}
    needed = frozenset[str]().union(*checks.values())
    missing: dict[tuple[FieldPath, str], tuple[DatasetItem, int]] = {}  # first item lacking it, how many
    render_failed: set[FieldPath] = set()
    digests = array("q")
    try:
        dataset.check_file()
        for item in dataset:
            digests.append(id_digest(item.id))
            if not needed <= item.data.keys():
                for path, name in ((path, name) for path, names in checks.items() for name in names):
                    if name in item.data:
                        continue
                    first, count = missing.get((path, name), (item, 0))
                    missing[(path, name)] = (first, count + 1)
            elif item.position < RENDER_CHECK_ITEMS and not render_failed:
                for where, why in _render_failures(templates, scorer_templates, item.data):
                    render_failed.add(where)
                    locator.add(where, f"fails for item {item.id!r} ({dataset.location(item)}): {why}")
    except DatasetError as exc:
        if exc.line is None:
            locator.add(source_field, f"{exc.problem} ({exc.source})")
        else:
            locator.problems.append(Problem(exc.source, exc.line, "", exc.problem))
        return
    if not digests:
        locator.add(source_field, f"the dataset has no items ({dataset.source})")
        return
    for (where, name), (item, count) in missing.items():
        more = f" and {count - 1} more item(s)" if count > 1 else ""
        hint = similar(name, item.data.keys())
        message = (f"uses field {name!r}, missing from item {item.id!r} ({dataset.location(item)}){more}; "
                   f"that item has: {', '.join(sorted(map(str, item.data))) or 'no fields'}{hint}")
        locator.add(where, message)
    _report_duplicates(dataset, digests, locator)


def _render_failures(templates: PromptTemplates | None, scorer_templates: Mapping[FieldPath, Template],
                     data: Mapping[str, Any]) -> list[tuple[FieldPath, str]]:
    """Each template that fails to render for one item, with why."""
    failures: list[tuple[FieldPath, str]] = []
    if templates is not None:
        try:
            templates.render(data)
        except TemplateRenderError as exc:
            failures.append((exc.field, exc.message.partition(": ")[2]))
    for where, template in scorer_templates.items():
        try:
            template.render(data)
        except Exception as exc:  # a template's failure is reported; anything else is a bug, raised again
            problem = render_problem(exc)
            if problem is None:
                raise
            failures.append((where, problem[0]))
    return failures


def _report_duplicates(dataset: Dataset, digests: array[int], locator: _Locator) -> None:
    pairs = duplicate_items(dataset, digests)
    for first, again in itertools.islice(pairs, MAX_DUPLICATES_REPORTED):
        if dataset.spec.id_field in again.data:
            what = f"duplicate item id {again.id!r} (first at {dataset.location(first)}); ids must be unique"
        else:
            what = (f"same content as {dataset.location(first)}, so the same id: items without "
                    f"`{dataset.spec.id_field}` get an id from their content")
        if dataset.path is None:
            locator.add(("dataset", "items", again.position), what)
        else:
            locator.problems.append(Problem(dataset.source, again.line, "", what))
    more = sum(1 for _ in pairs)
    if more:
        locator.add(("dataset",), f"{more} more duplicate item ids not listed")


def _validation_problem(error: ErrorDetails, data: Any) -> tuple[FieldPath, str]:
    """Where a pydantic error points in the job file, and a message saying what was expected."""
    path = _data_path(error["loc"], data)
    kind, given = error["type"], error.get("input")
    context = error.get("ctx") or {}
    if kind == "missing":
        return path, "required key is missing"
    if kind == "extra_forbidden":
        allowed = _allowed_keys(path)
        known = f"; allowed here: {', '.join(allowed)}{similar(str(path[-1]), allowed)}" if allowed else ""
        return path, f"unknown key{known}"
    if kind in ("enum", "literal_error"):
        options = re.findall(r"'([^']*)'", str(context.get("expected", "")))
        noun = "key" if error["loc"][-1:] == ("[key]",) else "backend" if path[-1:] == ("backend",) else "value"
        return path, f"unknown {noun} {given!r}; expected one of: {', '.join(options)}{similar(str(given), options)}"
    if kind == "value_error":
        return path, str(error["msg"]).removeprefix("Value error, ")
    message = str(error["msg"])
    if kind == "string_pattern_mismatch" and context.get("pattern") == _IDENTIFIER_PATTERN:
        message = "use only letters, digits, '_', '.' and '-', starting with a letter, digit or '_'"
    if given is None or isinstance(given, str | int | float | bool):
        shown = repr(given)
        message += f" (got {shown[:60]}...)" if len(shown) > 80 else f" (got {shown})"
    return path, message


def _data_path(loc: tuple[int | str, ...], data: Any) -> FieldPath:
    """The part of a pydantic location that names data in the file (without union tags like `float`)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_list or (isinstance(node, dict) and part in node):
            path.append(part)
            node = node[part]
        elif isinstance(node, dict) and isinstance(part, str) and part.isidentifier():
            # A validator that checks nested values reports them one level up: `parameters.temperature`
            # for a value under `parameters.grid.temperature`. Point at the value when it is there.
            holder = next((key for key, child in node.items() if isinstance(child, dict) and part in child), None)
            path.extend([part] if holder is None else [holder, part])
            node = None if holder is None else node[holder][part]
    return tuple(path)


def _allowed_keys(path: FieldPath) -> list[str]:
    """The keys the schema allows in the mapping that holds `path`'s last key."""
    annotation: Any = JobSpec
    for part in path[:-1]:
        annotation = _optional_removed(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(part, str):
            found = annotation.model_fields.get(part)
            annotation = found.annotation if found else None
        elif get_origin(annotation) is list and isinstance(part, int):
            annotation = get_args(annotation)[0]
        elif get_origin(annotation) is dict:
            annotation = get_args(annotation)[1]
        else:
            return []
    annotation = _optional_removed(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return sorted(annotation.model_fields)
    return []


def _optional_removed(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        return members[0] if len(members) == 1 else annotation
    return annotation


def similar(word: str, options: Iterable[object]) -> str:
    """` (did you mean 'x'?)` when one of `options` is close to `word`, else an empty string."""
    close = difflib.get_close_matches(word, [str(option) for option in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def ignored_sweeps(spec: JobSpec) -> list[str]:
    """Warnings for parameters that vary across the job's parameter sets on a backend that never sends
    them: the rows record them as None, and the sweep compares identical calls."""
    sets = spec.parameters.expanded()
    varied = {name for name in (*GRID_KEYS, "stop") if len({repr(getattr(s, name)) for s in sets}) > 1}
    found = []
    for backend in (*spec.backends,):
        ignored = sorted(varied & provider_class(backend.backend).ignored_options)
        if ignored:
            found.append(f"backend {backend.id} ({backend.backend.value}) ignores {', '.join(ignored)}, which the "
                         f"parameter sets vary: its rows record None there and its sets send the same request")
    return found
