"""A job's backends opened for a run: each provider built from its spec and key, each with its limiter
(in-process, or leased from a cluster's actor) and retry policy; optional backends that cannot run are
skipped with their reason, required ones stop the run before any call."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

from evalpipe.backends.base import Provider
from evalpipe.backends.retry import RetryPolicy
from evalpipe.builder import LLMBuilder, check_api_key
from evalpipe.errors import ConfigError
from evalpipe.pipeline.job.availability import Unavailable, job_backends, unavailable_message, unavailable_reason
from evalpipe.pipeline.job.load import JobFileError, LoadedJob, Problem
from evalpipe.pipeline.job.spec import BackendSpec
from evalpipe.pipeline.job.templates import format_field
from evalpipe.pipeline.running.backend import Backend
from evalpipe.pipeline.running.limits import BackendLimiter, GlobalLimiter, Limiter

LimiterFactory = Callable[[BackendSpec, GlobalLimiter, float], Limiter]  # (spec, job-wide cap, period_s)


def open_backends(
    loaded: LoadedJob, period_s: float, environ: Mapping[str, str] | None = None,
    *, shared: GlobalLimiter | None = None, providers: Mapping[str, Provider] | None = None,
    limiters: LimiterFactory | None = None,
) -> tuple[dict[str, Backend], dict[str, str]]:
    """A provider and limiter per backend and judge that can run; the optional ones that cannot, with
    the reason they are skipped. A required one that cannot run (its key unset, its model file absent)
    raises `JobFileError`, one line per backend.

    `shared` is the job-wide cap on calls in flight that every backend's limiter draws on; `providers`
    are built providers to use for their ids."""
    environ = os.environ if environ is None else environ
    providers = providers or {}
    backends: dict[str, Backend] = {}
    skipped: dict[str, str] = {}
    missing: list[Problem] = []
    where_job = str(loaded.path) if loaded.path is not None else f"job {loaded.spec.name}"
    for where, spec in job_backends(loaded.spec):
        if spec.id in providers:
            provider = providers[spec.id]
        else:
            why: Unavailable | str | None = unavailable_reason(spec, environ)
            if why is None:
                try:
                    provider = build_provider(spec, environ)
                except ConfigError as error:
                    why = error.message
            if why is not None:
                if spec.optional:
                    skipped[spec.id] = str(why)
                else:
                    missing.append(Problem(where_job, None, format_field(where), unavailable_message(spec, why)))
                continue
        limiter: Limiter = (BackendLimiter.from_spec(spec, shared=shared, period_s=period_s) if limiters is None
                            else limiters(spec, shared or GlobalLimiter(spec.max_concurrency), period_s))
        backends[spec.id] = Backend(spec, provider, limiter, RetryPolicy(max_retries=spec.max_retries))
    if missing:
        raise JobFileError(missing)
    return backends, skipped


def build_provider(spec: BackendSpec, environ: Mapping[str, str]) -> Provider:
    """The provider of `spec`, built but not opened (its key read from `environ`)."""
    builder = LLMBuilder().backend(spec.backend).timeout(spec.timeout_s).max_retries(0)  # the runner retries
    if spec.api_key_env:
        if not environ.get(spec.api_key_env):
            raise ConfigError(f"{spec.api_key_env} is not set")
        check_api_key(environ[spec.api_key_env], spec.api_key_env)  # names the variable, not the builder
        builder.api_key(environ[spec.api_key_env])
    if spec.model:
        builder.model(spec.model)
    if spec.base_url:
        builder.base_url(spec.base_url)
    for name, value in spec.options.items():
        builder.option(name, value)
    return builder.build()


__all__ = ["LimiterFactory", "build_provider", "open_backends"]
