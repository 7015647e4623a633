"""The matrix's pages, filters and sort, checked against a plain reading of every row of small runs."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from evalpipe.analysis.runs import open_run
from evalpipe.analysis.synthetic import SyntheticRun, write_synthetic_run
from evalpipe.view.matrix import KEYS, MatrixQuery, MatrixRow, matrix_page, row_detail
from tests.view.conftest import HOSTILE_ANSWER, Results


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 items × 3 repeats × 2 backends × 2 parameter sets, 10% errors, in parts of 100 rows."""
    spec = SyntheticRun(items=30, repeats=3, param_sets={"cold": (0.2, 0.9), "hot": (1.2, 1.0)}, error_rate=0.1,
                        rows_per_part=100)
    return write_synthetic_run(tmp_path_factory.mktemp("matrix") / "run", spec)


def every_row(path: Path) -> pl.DataFrame:
    return pl.read_parquet(sorted((path / "parquet").glob("part-*.parquet")))


def all_pages(path: Path, query: MatrixQuery) -> list[MatrixRow]:
    run = open_run(path)
    first = matrix_page(run, query, per_page=7)
    rows = list(first.rows)
    for number in range(2, first.pages + 1):
        rows += matrix_page(run, MatrixQuery(**{**_fields(query), "page": number}), per_page=7).rows
    return rows


def _fields(query: MatrixQuery) -> dict[str, object]:
    return {name: getattr(query, name) for name in query.__slots__}


def keys_where(frame: pl.DataFrame, condition: pl.Expr) -> set[tuple[object, ...]]:
    return set(frame.filter(condition).select(KEYS).unique().iter_rows())


def test_pages_hold_every_task_once_in_its_column(synthetic: Path) -> None:
    frame = every_row(synthetic)
    rows = all_pages(synthetic, MatrixQuery())
    assert len(rows) == 30 * 3
    assert len({(r.item_id, r.repeat, r.turn) for r in rows}) == len(rows)
    page = matrix_page(open_run(synthetic), MatrixQuery())
    assert page.columns == [("alpha", "cold"), ("alpha", "hot"), ("beta", "cold"), ("beta", "hot")]
    seen = set()
    for row in rows:
        for (backend, param_set), cell in zip(page.columns, row.cells, strict=True):
            assert cell is not None
            truth = frame.row(cell.task_index, named=True)  # task_index is the row's position in this run
            assert (truth["item_id"], truth["repeat"], truth["backend_id"], truth["param_set"]) == (
                row.item_id, row.repeat, backend, param_set)
            assert cell.score == truth["score_total"] and cell.status == truth["status"]
            seen.add(cell.task_index)
    assert seen == set(range(frame.height))
    assert [r.item_id for r in rows[:3]] == ["item-0"] * 3  # job order


def test_filters_keep_exactly_the_rows_with_a_matching_cell(synthetic: Path) -> None:
    frame = every_row(synthetic)

    def shown(query: MatrixQuery) -> set[tuple[object, ...]]:
        return {(r.item_id, r.repeat, r.turn) for r in all_pages(synthetic, query)}

    failing = (pl.col("status") == "error") | (pl.col("passed") == False)  # noqa: E712
    assert shown(MatrixQuery(failures=True)) == keys_where(frame, failing)
    errors = keys_where(frame, pl.col("status") == "error")
    assert 0 < len(errors) < 90
    assert shown(MatrixQuery(errors=True)) == errors
    spread = frame.group_by(KEYS).agg(
        ((pl.col("score_total").max() != pl.col("score_total").min())
         | (pl.col("score_total").null_count().is_between(1, 3))).alias("differs"))
    differing = set(spread.filter("differs").select(KEYS).iter_rows())
    assert 0 < len(differing) < 90
    assert shown(MatrixQuery(differ=True)) == differing
    assert shown(MatrixQuery(errors=True, differ=True)) == errors & differing
    assert shown(MatrixQuery(text="QUESTION 7")) == keys_where(frame, pl.col("prompt").str.contains("question 7"))
    # With a criterion, a failure is that criterion's score below 1 (or an error).
    judge = keys_where(frame, (pl.col("status") == "error") | (pl.col("score_judge") < 1))
    assert shown(MatrixQuery(failures=True, criterion="judge")) == judge != shown(MatrixQuery(failures=True))


def test_sorting_by_a_column_orders_the_rows_by_its_score(synthetic: Path) -> None:
    rows = all_pages(synthetic, MatrixQuery(sort="c2", descending=True, criterion="judge"))
    scores = [r.cells[2].score if r.cells[2] is not None else None for r in rows]
    known = [s for s in scores if s is not None]
    assert known == sorted(known, reverse=True) and known[0] > known[-1]
    assert all(s is None for s in scores[len(known):])  # errors (no score) last
    rising = all_pages(synthetic, MatrixQuery(sort="c2", criterion="judge"))
    assert [r.cells[2].score for r in rising if r.cells[2] and r.cells[2].score is not None] == sorted(known)
    by_item = [r.item_id for r in all_pages(synthetic, MatrixQuery(sort="item", descending=True))]
    assert by_item == sorted(by_item, reverse=True)


def test_row_detail_gives_each_score_its_explanation(synthetic: Path) -> None:
    detail = row_detail(open_run(synthetic), 5)
    assert detail is not None
    assert [(name, explanation) for name, _, explanation in detail.scores] == [
        ("accuracy", "accuracy graded synthetically"), ("judge", "judge graded synthetically"), ("total", None)]


def test_a_stale_page_or_unknown_criterion_still_shows_a_page(synthetic: Path) -> None:
    page = matrix_page(open_run(synthetic), MatrixQuery(page=999, criterion="nope", sort="c99x"))
    assert page.page == page.pages == 2 and len(page.rows) == 40  # 90 rows, 50 a page


def test_row_detail_has_the_prompt_as_sent_every_score_and_the_answer(results: Results) -> None:
    run = open_run(results.first)
    frame = every_row(results.first)
    hostile = frame.filter(pl.col("item_id") == "hostile").row(0, named=True)
    detail = row_detail(run, hostile["task_index"])
    assert detail is not None
    assert detail.messages[0] == ("system", "You answer briefly.")
    assert detail.messages[1][0] == "user" and HOSTILE_ANSWER in detail.messages[1][1]
    assert detail.response == HOSTILE_ANSWER
    assert [name for name, _, _ in detail.scores] == ["says_answer", "echoes", "total"]
    assert detail.scores[0][1] == 1.0 and detail.scores[1][1] == 0.0
    assert detail.item is not None and '"id": "hostile"' in detail.item
    refused = frame.filter((pl.col("item_id") == "refused") & (pl.col("backend_id") == "oa")).row(0, named=True)
    detail = row_detail(run, refused["task_index"])
    assert detail is not None and detail.refusal and "sorry" in detail.refusal
    broken = frame.filter(pl.col("item_id") == "broken").row(0, named=True)
    detail = row_detail(run, broken["task_index"])
    assert detail is not None and detail.error and detail.error.startswith("ContextLengthError")
    assert row_detail(run, 10_000) is None
