"""A run's rows as a matrix, one page at a time: items (with their repeat and turn) down, the run's
(backend, parameter set) columns across, the answer and score of each task in the cells.

```
parts ─lazy scan: keys, column, status, verdict, score (+ texts when searched)─▶ one row per matrix row:
      failed anywhere? errored anywhere? differs between columns? text found? sort value
      (per partition of the items, by a hash of the item id: one group table at a time)
      ─filter, concatenate, sort─▶ the matching keys (one small row per matrix row) ─slice─▶ the page's keys
parts ─lazy scan: the page's items only, semi-joined on the page's keys─▶ the page's cells
```

No query holds a run's rows: the first reads a few narrow columns and keeps one row per matrix row;
the second reads the answers of the page's items only.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from evalpipe.analysis.runs import Run, collect, collect_all

KEYS = ("item_id", "repeat", "turn")
PER_PAGE = 50
ROWS_PER_PARTITION = 250_000  # rows grouped at once: a million-row run's group tables stay small
EXCERPT = 240  # characters of an answer in a cell; the row's page has the whole answer
_COLUMN = ("backend_id", "param_set")
_PARTITION_SEED = 20_261_129
_CACHED_RUNS = 64
_COLUMNS: dict[tuple[tuple[str, int, int], ...], list[tuple[str, str]]] = {}


@dataclass(frozen=True, slots=True)
class MatrixQuery:
    """What the matrix shows: filters, the score column, the sort and the page."""

    failures: bool = False  # rows with a failing cell: `passed` false or an error (or, with a criterion, its
    #                          score below 1)
    errors: bool = False  # rows with an error cell
    differ: bool = False  # rows whose cells' scores or statuses differ between columns
    criterion: str | None = None  # the criterion whose score the cells show, compare and sort by
    text: str = ""  # rows with this text (any case) in the item id, prompt or an answer
    sort: str = "order"  # "order" (job order), "item", or "c<N>": column N's score
    descending: bool = False
    page: int = 1

    @property
    def score(self) -> str:
        """The score column shown in the cells."""
        return f"score_{self.criterion}" if self.criterion else "score_total"


@dataclass(frozen=True, slots=True)
class Cell:
    """One task of the matrix."""

    task_index: int
    status: str
    error_type: str | None
    passed: bool | None
    score: float | None
    answer: str

    @property
    def failed(self) -> bool:
        """Whether the task errored or its verdict is a fail."""
        return self.status == "error" or self.passed is False


@dataclass(frozen=True, slots=True)
class MatrixRow:
    """One item (at one repeat and turn) across the columns; None where a column has no task."""

    item_id: str | None
    repeat: int | None
    turn: int | None
    cells: list[Cell | None]


@dataclass(frozen=True, slots=True)
class MatrixPage:
    """A page of the matrix, with how many rows match the filters."""

    columns: list[tuple[str, str]]  # (backend id, parameter set)
    rows: list[MatrixRow]
    matching: int
    page: int
    pages: int
    criteria: list[str] = field(default_factory=list)

    @property
    def conditions(self) -> list[str]:
        """`backend_id=…` and `param_set=…` for each value a column has: the sides a comparison can choose."""
        backends = dict.fromkeys(f"backend_id={backend}" for backend, _ in self.columns)
        param_sets = dict.fromkeys(f"param_set={param_set}" for _, param_set in self.columns)
        return [*backends, *param_sets]


def _failing(query: MatrixQuery) -> pl.Expr:
    error = pl.col("status") == "error"
    if query.criterion:
        return error | (pl.col(query.score) < 1.0).fill_null(False)
    return error | (pl.col("passed") == False).fill_null(False)  # noqa: E712 - a polars expression, not a bool


def columns_of(run: Run) -> list[tuple[str, str]]:
    """The run's (backend id, parameter set) pairs in job order; computed once per set of part files (paging
    needs them on every page, and a run in progress adds parts)."""
    signature = tuple((str(part), part.stat().st_size, part.stat().st_mtime_ns) for part in run.parts)
    found = _COLUMNS.get(signature)
    if found is None:
        frame = collect(run.scan([*_COLUMN, "task_index"]).group_by(_COLUMN).agg(pl.col("task_index").min())
                        .sort("task_index"), run)
        found = [(str(b), str(p)) for b, p in frame.select(_COLUMN).iter_rows()]
        if len(_COLUMNS) >= _CACHED_RUNS:
            _COLUMNS.pop(next(iter(_COLUMNS)))
        _COLUMNS[signature] = found
    return list(found)


def check_query(run: Run, query: MatrixQuery) -> MatrixQuery:
    """`query` with an unknown criterion or sort dropped (a stale link stays usable)."""
    criterion = query.criterion if query.criterion in run.criteria else None
    sort = query.sort if query.sort in ("order", "item") or query.sort[1:].isdigit() else "order"
    return MatrixQuery(query.failures, query.errors, query.differ, criterion, query.text.strip(), sort,
                       query.descending, max(1, query.page))


def matrix_page(run: Run, query: MatrixQuery, per_page: int = PER_PAGE) -> MatrixPage:
    """The page `query` asks for."""
    query = check_query(run, query)
    columns = columns_of(run)
    keys = _matching_keys(run, query, columns)
    pages = max(1, math.ceil(keys.height / per_page))
    page = min(query.page, pages)
    wanted = keys.slice((page - 1) * per_page, per_page)
    cells = _cells(run, query, wanted)
    index = {column: n for n, column in enumerate(columns)}
    grid: dict[tuple[Any, ...], list[Cell | None]] = {key: [None] * len(columns)
                                                      for key in wanted.select(KEYS).iter_rows()}
    for r in cells.iter_rows(named=True):
        slots = grid.get(tuple(r[k] for k in KEYS))
        n = index.get((str(r["backend_id"]), str(r["param_set"])))
        if slots is None or n is None or slots[n] is not None:
            continue
        score = r["score"]
        slots[n] = Cell(r["task_index"], r["status"] or "", r["error_type"], r["passed"],
                        score if score is None or math.isfinite(score) else None, r["answer"] or "")
    rows = [MatrixRow(item, repeat, turn, slots) for (item, repeat, turn), slots in grid.items()]
    return MatrixPage(columns, rows, keys.height, page, pages, run.criteria)


def _matching_keys(run: Run, query: MatrixQuery, columns: list[tuple[str, str]]) -> pl.DataFrame:
    """One row per matrix row that passes the filters, sorted: its keys and its order in the job."""
    score = query.score
    needed = [*KEYS, *_COLUMN, "task_index", "status", "passed", score]
    if query.text:
        needed += ["prompt", "response"]
    frame = run.scan(needed)
    aggregates = [pl.col("task_index").min().alias("_order")]
    filters: list[pl.Expr] = []
    if query.failures:
        aggregates.append(_failing(query).any().alias("_failures"))
        filters.append(pl.col("_failures"))
    if query.errors:
        aggregates.append((pl.col("status") == "error").any().alias("_errors"))
        filters.append(pl.col("_errors"))
    if query.differ:
        nulls = pl.col(score).null_count()
        aggregates.append(((pl.col(score).max() != pl.col(score).min()).fill_null(False)
                           | ((nulls > 0) & (nulls < pl.len()))
                           | (pl.col("status").min() != pl.col("status").max())).alias("_differ"))
        filters.append(pl.col("_differ"))
    if query.text:
        needle = query.text.lower()
        found = pl.any_horizontal([pl.col(c).fill_null("").str.to_lowercase().str.contains(needle, literal=True)
                                   for c in ("item_id", "prompt", "response")])
        aggregates.append(found.any().alias("_text"))
        filters.append(pl.col("_text"))
    sort_by, descending = "_order", query.descending
    if query.sort == "item":
        sort_by = "item_id"
    elif query.sort.startswith("c") and int(query.sort[1:]) < len(columns):
        backend, param_set = columns[int(query.sort[1:])]
        here = (pl.col("backend_id") == backend) & (pl.col("param_set") == param_set)
        aggregates.append(pl.col(score).filter(here & pl.col(score).is_finite()).mean().alias("_sort"))
        sort_by = "_sort"
    count = max(1, math.ceil(run.rows / ROWS_PER_PARTITION))
    partitions = []
    for k in range(count):  # one after the other: the peak is one partition's group table
        part = frame if count == 1 else frame.filter(pl.col("item_id").hash(_PARTITION_SEED) % count == k)
        grouped = part.group_by(KEYS).agg(aggregates)
        if filters:
            grouped = grouped.filter(pl.all_horizontal(filters))
        extra = [sort_by] if sort_by not in (*KEYS, "_order") else []
        partitions.append(collect(grouped.select(*KEYS, "_order", *extra), run))
    keys = pl.concat(partitions) if len(partitions) > 1 else partitions[0]
    return keys.sort([sort_by, "_order"], descending=[descending, False], nulls_last=True).select(*KEYS, "_order")


def _cells(run: Run, query: MatrixQuery, wanted: pl.DataFrame) -> pl.DataFrame:
    """The tasks of the page's rows: read only for the page's items, then matched on every key."""
    if wanted.is_empty():
        return pl.DataFrame()
    items = wanted.get_column("item_id").unique().to_list()
    texts = [c for c in ("response", "refusal", "error_message") if run.has(c)]
    # The first text there is: an answer, else a refusal (its answer is empty), else the error.
    answer = pl.coalesce([pl.when(pl.col(c) != "").then(pl.col(c)) for c in texts]).str.slice(0, EXCERPT)
    frame = (run.scan([*KEYS, *_COLUMN, "task_index", "status", "error_type", "passed", query.score, *texts])
             .filter(pl.col("item_id").is_in(items) if None not in items else pl.lit(True))
             .join(wanted.lazy().select(KEYS), on=list(KEYS), how="semi", nulls_equal=True)
             .select(*KEYS, *_COLUMN, "task_index", "status", "error_type", "passed",
                     pl.col(query.score).alias("score"), answer.alias("answer")))
    (found,) = collect_all([frame], run)
    return found


@dataclass(frozen=True, slots=True)
class RowDetail:
    """Everything one task's row holds that a reader wants: the prompt as sent, the answer, every score."""

    fields: dict[str, Any]  # identity, parameters, status, usage
    messages: list[tuple[str, str]]  # (role, content) as sent
    item: str | None  # the dataset item, pretty JSON
    prompt: str | None
    response: str | None
    reasoning: str | None
    refusal: str | None
    error: str | None
    scores: list[tuple[str, float | None, str | None]]  # (criterion, score, explanation), then total
    passed: bool | None


_FIELDS = ("task_index", "item_id", "backend_id", "provider", "model", "param_set", "temperature", "top_p",
           "top_k", "max_tokens", "seed", "repeat", "turn", "reasoning_effort", "status", "error_type",
           "finish_reason", "input_tokens", "output_tokens", "reasoning_tokens", "cost_usd", "scoring_cost_usd",
           "latency_s", "ttft_s", "attempts", "cached", "safety")


def row_detail(run: Run, task_index: int) -> RowDetail | None:
    """The row of task `task_index`, or None when the run has none."""
    frame = collect(run.scan().filter(pl.col("task_index") == task_index).head(1), run)
    if frame.is_empty():
        return None
    r = frame.row(0, named=True)
    scores: list[tuple[str, float | None, str | None]] = [
        (name, r.get(f"score_{name}"), r.get(f"explanation_{name}")) for name in run.criteria]
    scores.append(("total", r.get("score_total"), None))
    error = ": ".join(str(r[k]) for k in ("error_type", "error_message") if r.get(k)) or None
    return RowDetail({k: r[k] for k in _FIELDS if k in r and r[k] is not None}, _messages(r.get("messages")),
                     _pretty(r.get("item")), r.get("prompt"), r.get("response"), r.get("reasoning"), r.get("refusal"),
                     error, scores, r.get("passed"))


def _messages(text: str | None) -> list[tuple[str, str]]:
    """The messages column (JSON [{role, content}]) as (role, text) pairs; parts other than text as JSON."""
    if not text:
        return []
    try:
        data = json.loads(text)
    except ValueError:
        return [("(unreadable)", text)]
    found = []
    for message in data if isinstance(data, list) else []:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        found.append((str(message.get("role", "")),
                      content if isinstance(content, str) else json.dumps(content, indent=2, ensure_ascii=False)))
    return found


def _pretty(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text
