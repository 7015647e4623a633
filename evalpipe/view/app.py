"""`evalpipe view`: a local, read-only web app over a results directory.

```
GET /                                   runs, newest first (kept current by polling /api/runs)
GET /api/runs                           the runs list as JSON
GET /runs/{job}/latest[/...]            the job's newest run (any page of it)
GET /runs/{job}/{run}                   the matrix: items × (backend, parameter set), filters, sort, pages
GET /runs/{job}/{run}/rows/{task}       one task's row: the prompt as sent, the answer, every score
GET /runs/{job}/{run}/summary           the summary with its intervals (and /summary.json)
GET /compare?a=JOB/RUN&b=JOB/RUN&ca=COLUMN=VALUE&cb=COLUMN=VALUE    B − A with intervals
GET /jobs/{job}/history                 the job's metrics across runs
```

Endpoints are plain functions: Starlette runs them in its thread pool, so a slow query over a big run
does not hold up the runs list. Every page is rendered by Jinja with autoescaping on: answers that
contain markup stay text. Nothing is loaded from outside: styles and the one script are served here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from evalpipe.analysis.catalog import check_results_dir, job_path, list_runs, run_path
from evalpipe.analysis.history import HistoryCache
from evalpipe.analysis.runs import Run, open_run
from evalpipe.errors import ConfigError
from evalpipe.view import analyses
from evalpipe.view.matrix import MatrixQuery, matrix_page, row_detail

_HERE = Path(__file__).parent
POLL_SECONDS = 3


def create_app(directory: str | Path) -> Starlette:
    """The viewer over `directory` (`<job>/<run_id>/` folders); ConfigError when it is not a directory."""
    results = check_results_dir(Path(directory))
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(_HERE / "templates"), autoescape=True,
                                     undefined=jinja2.StrictUndefined)
    templates = Jinja2Templates(env=environment)
    # A job's history reads every run's rows; a run's points are kept until its parts change.
    history_cache = HistoryCache()

    def page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
        return templates.TemplateResponse(request, name, {"directory": str(results), **context},
                                          status_code=status_code)

    def failure(request: Request, error: ConfigError | ValueError, status_code: int = 404) -> Response:
        message = error.message if isinstance(error, ConfigError) else str(error)
        return page(request, "error.html.jinja", status_code, title="Not found" if status_code == 404 else "Error",
                    message=message)

    def open_named(request: Request) -> Run:
        params = request.path_params
        return open_run(run_path(results, params["job"], params["run_id"]))

    def runs(request: Request) -> Response:
        return page(request, "runs.html.jinja", title="Runs", runs=list_runs(results), poll_seconds=POLL_SECONDS)

    def runs_json(request: Request) -> Response:
        return JSONResponse({"runs": [entry.as_json() for entry in list_runs(results)]})

    def latest(request: Request) -> Response:
        job = request.path_params["job"]
        newest = next((e for e in list_runs(results) if e.job == job and e.latest), None)
        if newest is None:
            return failure(request, ConfigError(f"{job!r} has no runs under {results}"))
        return RedirectResponse(f"/runs/{quote(job)}/{quote(newest.run_id)}{request.path_params['rest']}")

    def run_rows(request: Request) -> Response:
        try:
            run = open_named(request)
            query = _matrix_query(request)
            matrix = matrix_page(run, query)
        except ConfigError as error:
            return failure(request, error)
        return page(request, "run.html.jinja", title=f"{run.name} — rows", run=run, job=request.path_params["job"],
                    query=query, matrix=matrix, links=_Links(request))

    def row(request: Request) -> Response:
        try:
            run = open_named(request)
            detail = row_detail(run, request.path_params["task_index"])
        except ConfigError as error:
            return failure(request, error)
        if detail is None:
            return failure(request, ConfigError(f"{run.name} has no task {request.path_params['task_index']}"))
        return page(request, "row.html.jinja", title=f"{run.name} — task {request.path_params['task_index']}",
                    run=run, job=request.path_params["job"], detail=detail)

    def summary(request: Request) -> Response:
        try:
            run = open_named(request)
            found = analyses.summary_view(run)
        except ConfigError as error:
            return failure(request, error)
        return page(request, "summary.html.jinja", title=f"{run.name} — summary", run=run,
                    job=request.path_params["job"], summary=found)

    def summary_json(request: Request) -> Response:
        try:
            text = analyses.summary_json(open_named(request))
        except ConfigError as error:
            return JSONResponse({"error": error.message}, status_code=404)
        return PlainTextResponse(text, media_type="application/json")

    def compare(request: Request) -> Response:
        form = analyses.CompareForm.from_query(request.query_params)
        choices = list_runs(results)
        if not form.a:
            return page(request, "compare.html.jinja", title="Compare", form=form, runs=choices, comparison=None)
        try:
            comparison = analyses.compare_view(results, form)
        except (ConfigError, ValueError) as error:
            return failure(request, error, 400)
        return page(request, "compare.html.jinja", title="Compare", form=form, runs=choices, comparison=comparison)

    def history(request: Request) -> Response:
        job = request.path_params["job"]
        try:
            found = analyses.history_view(job_path(results, job), history_cache)
        except ConfigError as error:
            return failure(request, error)
        return page(request, "history.html.jinja", title=f"{job} — history", job=job, history=found)

    routes = [
        Route("/", runs), Route("/api/runs", runs_json),
        Route("/runs/{job}/latest{rest:path}", latest),
        Route("/runs/{job}/{run_id}", run_rows),
        Route("/runs/{job}/{run_id}/rows/{task_index:int}", row),
        Route("/runs/{job}/{run_id}/summary", summary),
        Route("/runs/{job}/{run_id}/summary.json", summary_json),
        Route("/compare", compare),
        Route("/jobs/{job}/history", history),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes)


def _flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "") in ("1", "on", "true")


def _matrix_query(request: Request) -> MatrixQuery:
    params = request.query_params
    try:
        number = int(params.get("page", "1"))
    except ValueError:
        number = 1
    return MatrixQuery(failures=_flag(request, "failures"), errors=_flag(request, "errors"),
                       differ=_flag(request, "differ"), criterion=params.get("criterion") or None,
                       text=params.get("q", ""), sort=params.get("sort", "order"), descending=_flag(request, "desc"),
                       page=number)


class _Links:
    """Links to the same matrix with one parameter changed (filters kept)."""

    def __init__(self, request: Request) -> None:
        self._path = request.url.path
        self._params = dict(request.query_params)

    def sort(self, key: str, current: MatrixQuery) -> str:
        """The link that sorts by `key`, lowest first (the failures, for a score), flipping the direction when it
        already sorts by it."""
        descending = "1" if current.sort == key and not current.descending else ""
        return self.with_(sort=key, desc=descending, page="")

    def page(self, number: int) -> str:
        """The link to page `number`."""
        return self.with_(page=str(number))

    def with_(self, **changes: str) -> str:
        """The current URL with `changes` (an empty value removes the parameter)."""
        params = {**self._params, **changes}
        query = urlencode({k: v for k, v in params.items() if v})
        return f"{self._path}?{query}" if query else self._path
