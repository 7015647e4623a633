"""Whether each backend and judge of a job can run here, checked before anything is called.

A backend can run when its API key is set (its `api_key_env`, else its vendor's conventional
variables) to a value that can be sent (no surrounding whitespace, control or non-ASCII characters)
and the model file it names is there (a local GGUF). One that cannot is an error at
`validate`, `plan` and `run`, unless the job marks it `optional: true`: then it is skipped with its
reason, and the run counts its tasks as skipped. A nightly job must not pass with half its vendors
missing just because their keys were never set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from evalpipe.backends.registry import provider_class
from evalpipe.errors import register_secret
from evalpipe.pipeline.job.spec import BackendSpec, JobSpec
from evalpipe.redaction import header_value_problem

HOW_TO_SKIP = "or mark it `optional: true` to skip it when it cannot run"


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Why a backend cannot run here, and what would fix it."""

    reason: str  # "OPENAI_API_KEY is not set"
    remedy: str  # "set it"

    def __str__(self) -> str:
        return self.reason


def unavailable_reason(spec: BackendSpec, environ: Mapping[str, str]) -> Unavailable | None:
    """Why `spec` cannot run with `environ` (its key variable unset, its model file absent); None if it can."""
    cls = provider_class(spec.backend)
    variables = [spec.api_key_env] if spec.api_key_env else [v for v in (cls.api_key_env, *cls.api_key_env_aliases)
                                                             if v]
    if spec.api_key_env or cls.requires_api_key:
        found = next((variable for variable in variables if environ.get(variable)), None)
        if found is None:
            return Unavailable(f"{' or '.join(variables) or 'its API key variable'} is not set", "set it")
        register_secret(environ[found])  # whatever happens next, the value is never shown
        if (problem := header_value_problem(environ[found])) is not None:
            return Unavailable(f"{found} {problem}: the API key cannot be sent as it is",
                               "fix the value (e.g. `tr -d '\\n'` on the file it came from)")
    missing = cls.missing_model_file(spec.model or cls.default_model, spec.base_url)
    if missing is not None:
        return Unavailable(f"model file not found: {missing}",
                           "fix the path (a relative one starts at the current directory)")
    return None


def job_backends(spec: JobSpec) -> Iterator[tuple[tuple[str, int], BackendSpec]]:
    """Every backend and judge of the job with where it sits in the job file (`("judges", 0)`)."""
    for index, backend in enumerate(spec.backends):
        yield ("backends", index), backend
    for index, judge in enumerate(spec.judges):
        yield ("judges", index), judge


def unavailable_message(backend: BackendSpec, why: Unavailable | str) -> str:
    """The one line that says a required backend cannot run, and what to do."""
    remedy = why.remedy if isinstance(why, Unavailable) else "fix it"
    return f"backend {backend.id!r} cannot run: {why}; {remedy}, {HOW_TO_SKIP}"


__all__ = ["HOW_TO_SKIP", "Unavailable", "job_backends", "unavailable_message", "unavailable_reason"]
