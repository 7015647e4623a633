"""Hostile job files for the fuzz tests and `scripts/fuzz_jobs.py`: the shipped jobs, pointed at the
fake provider server, each changed by one hostile mutation (a number out of range, a template bomb or
escape, a YAML alias bomb), and the check every one must pass.

Every case must end like a bad job file: exit 2, a first line `error: <file>:<line>: ...`, no
traceback, no call reaching the server, and within `CASE_SECONDS`.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from evalpipe.cli import main
from evalpipe.testing import FakeServer

ROOT = Path(__file__).resolve().parents[2]
SHIPPED_JOBS = sorted((ROOT / "jobs").glob("*.yaml"))
KEY_VARIABLE = "EVALPIPE_HOSTILE_JOB_KEY"
KEY = "sk-hostile-job-fuzz"
CASE_SECONDS = 10.0  # the sandbox stops a render at 1 s; load, checks and process start fit in the rest
LOCATED = re.compile(r"^error: \S+\.(yaml|jsonl):\d+: ")
_SENTINEL = "HOSTILE_YAML_HERE"
_KEPT_BACKEND_KEYS = ("id", "rpm", "tpm", "max_concurrency", "price_input_per_1m", "price_output_per_1m",
                      "timeout_s", "max_retries", "optional", "stream")

HOSTILE_NUMBERS: list[Any] = [10**23, -(10**23), math.nan, math.inf, -math.inf, 1e300]
NUMERIC_FIELDS: list[tuple[str | int, ...]] = [
    ("parameters", "defaults", "seed"), ("parameters", "defaults", "max_tokens"), ("parameters", "defaults", "top_k"),
    ("parameters", "defaults", "temperature"), ("parameters", "grid", "seed"), ("backends", 0, "rpm"),
    ("backends", 0, "tpm"), ("backends", 0, "max_concurrency"), ("backends", 0, "timeout_s"),
    ("backends", 0, "price_input_per_1m"), ("backends", 0, "max_retries"), ("repeats",), ("concurrency",),
    ("task_timeout_s",), ("budget", "max_cost_usd"), ("budget", "max_tokens"), ("scorers", 0, "weight"),
    ("confirm_above", "tasks"), ("confirm_above", "cost_usd"), ("dataset", "limit"),
]
HOSTILE_TEMPLATES = [
    "{{ 9**(9**9) }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
    "{{ 'a'*10**11 }}",
    "{{ ('question ' ~ ' ')*10**8 }}",
    "{{ ''|center(10**10) }}",
    "{{ ''.ljust(10**10) }}",
    "{{ '%9999999999d'|format(1) }}",
    "{{ '{:>9999999999}'.format(1) }}",
    "{{ ('a'*1000000).replace('a', 'a'*1000000) }}",
    "{% set ns = namespace(x=3) %}{% for i in range(64) %}{% set ns.x = ns.x * ns.x %}{% endfor %}{{ ns.x }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ self.__init__.__globals__ }}",
    "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
    "{{ (range(100000)|list)*1000 }}",
    "{{ nope_not_a_field }}",
    "{% for %}",
]
TEMPLATE_SLOTS = ["prompt.user", "prompt.system", "contains.values", "exact_match.expected", "llm_judge.rubric",
                  "scorer.when"]


@dataclass(frozen=True)
class Case:
    """One hostile job: which shipped job, what was done to it, and the file's text."""

    job: str
    mutation: str
    text: str
    kind: str = ""  # number, template, yaml


def shipped_job(path: Path, server: FakeServer) -> dict[str, Any]:
    """A shipped job with every backend and judge on the fake server's OpenAI endpoint, and its
    dataset path absolute (the case is written elsewhere)."""
    data: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    if "path" in data["dataset"]:
        data["dataset"]["path"] = str((path.parent / data["dataset"]["path"]).resolve())
    for group in ("backends", "judges"):
        data[group] = [{**{k: v for k, v in entry.items() if k in _KEPT_BACKEND_KEYS}, "backend": "openai",
                        "model": "gpt-4o-mini", "base_url": server.url_for("openai"), "api_key_env": KEY_VARIABLE}
                       for entry in data.get(group, [])]
    if not data["judges"]:
        del data["judges"]
    return data


def _set(data: dict[str, Any], path: tuple[str | int, ...], value: Any) -> None:
    node: Any = data
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    node[path[-1]] = value


def _dump(data: dict[str, Any]) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10**6)


def with_number(data: dict[str, Any], path: tuple[str | int, ...], value: Any) -> tuple[str, str]:
    """The job with a hostile number at `path` (a grid key gets it as its one value)."""
    if path[0] == "scorers" and not data.get("scorers"):
        data["scorers"] = [{"type": "length", "name": "fuzz_length"}]
    _set(data, path, [value] if path[:2] == ("parameters", "grid") else value)
    return _dump(data), f"{'.'.join(map(str, path))} = {value!r}"


def with_template(data: dict[str, Any], slot: str, template: str, prefix: str) -> tuple[str, str]:
    """The job with a hostile template in `slot` (after `prefix`)."""
    text = prefix + template
    prompt = data["prompt"]
    first = data["backends"][0]["id"]
    scorers = data.setdefault("scorers", [])
    if slot == "prompt.user" and "user" in prompt:
        prompt["user"] = text + prompt["user"]
    elif slot in ("prompt.user", "prompt.system") and "chain" not in prompt:
        prompt["system"] = text
    elif slot == "exact_match.expected":
        scorers.append({"type": "exact_match", "name": "fuzz_exact", "expected": text})
    elif slot == "llm_judge.rubric":
        scorers.append({"type": "llm_judge", "name": "fuzz_judge", "backend": first, "rubric": text})
    elif slot == "scorer.when":
        scorers.append({"type": "length", "name": "fuzz_when", "when": text})
    else:
        scorers.append({"type": "contains", "name": "fuzz_contains", "values": [text]})
    return _dump(data), f"{slot} = {text!r}"


def alias_bomb(width: int, depth: int) -> str:
    """A flow mapping whose last key expands to `width ** depth` values."""
    levels = [f"l0: &l0 [{', '.join(['x'] * width)}]"]
    levels += [f"l{d}: &l{d} [{', '.join([f'*l{d - 1}'] * width)}]" for d in range(1, depth)]
    return "{" + ", ".join(levels) + "}"


def with_yaml(data: dict[str, Any], kind: str, where: str, width: int, depth: int) -> tuple[str, str]:
    """The job with a hostile YAML construct in the first backend's options or the dataset's items."""
    construct = {"bomb": alias_bomb(width, depth), "recursive": "&loop {again: [*loop]}",
                 "deep": "[" * 5000 + "]" * 5000}[kind]
    if where == "options":
        data["backends"][0]["options"] = _SENTINEL
    else:
        data["dataset"] = {"items": [{"question": _SENTINEL}]}
    what = f"{kind} in {where}" + (f" ({width}^{depth} values)" if kind == "bomb" else "")
    return _dump(data).replace(_SENTINEL, construct, 1), what


def cases(server: FakeServer) -> st.SearchStrategy[Case]:
    """Hostile job files: one mutation of one shipped job, its backends on `server`."""

    @st.composite
    def case(draw: st.DrawFn) -> Case:
        job = draw(st.sampled_from(SHIPPED_JOBS), label="job")
        data = shipped_job(job, server)
        kind = draw(st.sampled_from(["number", "template", "yaml"]), label="kind")
        if kind == "number":
            text, what = with_number(data, draw(st.sampled_from(NUMERIC_FIELDS), label="field"),
                                     draw(st.sampled_from(HOSTILE_NUMBERS), label="value"))
        elif kind == "template":
            prefix = draw(st.text(alphabet="abc xyz:\n", max_size=12), label="prefix")
            text, what = with_template(data, draw(st.sampled_from(TEMPLATE_SLOTS), label="slot"),
                                       draw(st.sampled_from(HOSTILE_TEMPLATES), label="template"), prefix)
        else:
            width = draw(st.integers(5, 12), label="width")
            depth = draw(st.integers(math.ceil(math.log(20_000, width)), 9), label="depth")
            text, what = with_yaml(data, draw(st.sampled_from(["bomb", "recursive", "deep"]), label="yaml"),
                                   draw(st.sampled_from(["options", "items"]), label="where"), width, depth)
        return Case(job.name, what, text, kind)

    return case()


@dataclass(frozen=True)
class Outcome:
    """What `evalpipe run` did with a case."""

    code: int | str  # the exit code, or the exception that escaped
    stderr: str
    seconds: float
    calls: int


def run_case(case: Case, directory: Path, server: FakeServer, run: Callable[[list[str]], int] = main) -> Outcome:
    """`evalpipe run` on the case, in process: exit code, error output, time, calls the server got."""
    path = directory / "hostile.yaml"
    path.write_text(case.text, encoding="utf-8")
    before = server.stats(KEY).requests
    stderr = io.StringIO()
    started = time.monotonic()
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
            code: int | str = run(["run", str(path), "--out", str(directory / "results")])
    except BaseException as exc:  # noqa: BLE001 - an escaped exception is what the fuzz looks for
        code = f"{type(exc).__name__}: {exc}"[:300]
    return Outcome(code, stderr.getvalue(), time.monotonic() - started, server.stats(KEY).requests - before)


def problems(outcome: Outcome) -> list[str]:
    """What is wrong with how a hostile case ended; empty when it ended as a bad job file should."""
    found = []
    if outcome.code != 2:
        found.append(f"exit {outcome.code!r}, expected 2")
    if not LOCATED.match(outcome.stderr):
        found.append(f"message not located as file:line: {outcome.stderr[:200]!r}")
    if "Traceback" in outcome.stderr:
        found.append("a traceback was printed")
    if outcome.calls:
        found.append(f"{outcome.calls} call(s) reached the server")
    if outcome.seconds > CASE_SECONDS:
        found.append(f"took {outcome.seconds:.1f} s (limit {CASE_SECONDS:g} s)")
    return found
