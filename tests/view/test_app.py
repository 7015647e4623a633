"""The viewer's pages over HTTP: summary, compare, history, and the errors a user can provoke."""

from __future__ import annotations

import json

import httpx

from tests.view.conftest import HOSTILE_ANSWER, Results


def get(viewer: str, path: str, **params: str) -> httpx.Response:
    return httpx.get(viewer + path, params=params, timeout=30, follow_redirects=True)


def test_runs_json_lists_both_runs(viewer: str, results: Results) -> None:
    runs = get(viewer, "/api/runs").json()["runs"]
    names = [r["run_id"] for r in runs if r["job"] == "viewer-test"]
    assert names == [results.second.name, results.first.name]


def test_the_matrix_escapes_answers(viewer: str, results: Results) -> None:
    page = get(viewer, f"/runs/viewer-test/{results.first.name}", q="hostile")
    assert page.status_code == 200
    assert HOSTILE_ANSWER not in page.text and "&lt;script&gt;console.error" in page.text
    assert page.text.count('class="matrix-row"') == 1


def test_summary_has_intervals_over_items_and_a_json_twin(viewer: str, results: Results) -> None:
    page = get(viewer, f"/runs/viewer-test/{results.second.name}/summary")
    assert page.status_code == 200
    assert "items × 1" in page.text and " [" in page.text  # a mean with its interval and its clusters
    data = json.loads(get(viewer, f"/runs/viewer-test/{results.second.name}/summary.json").text)
    assert len(data["groups"]) == 4 and data["groups"][0]["score_total_items"] == 6


def test_compare_two_runs_finds_the_regression_with_both_answers(viewer: str, results: Results) -> None:
    page = get(viewer, "/compare", a=f"viewer-test/{results.first.name}", b=f"viewer-test/{results.second.name}")
    assert page.status_code == 200, page.text
    differences = page.text.split('class="differences"')[1].split("</table>")[0]
    assert differences.count("<tr>") == 1 + 4 * 3  # the header, then 4 groups × (total and 2 criteria)
    assert "B − A [95% CI over items]" in differences
    regressions = page.text.split('id="regressions"')[1].split("</table>")[0]
    assert "item_id=q0" in regressions and "no idea" in regressions and "Echo: say the answer 0" in regressions


def test_compare_two_columns_of_one_run(viewer: str, results: Results) -> None:
    rows = get(viewer, f"/runs/viewer-test/{results.first.name}").text
    form = rows.split('id="compare-columns"')[1].split("</form>")[0]
    assert "<option selected>backend_id=oa</option>" in form and "<option selected>backend_id=an</option>" in form
    assert "<option >param_set=temperature=0.2</option>" in form
    page = get(viewer, "/compare", a=f"viewer-test/{results.first.name}", ca="backend_id=oa", cb="backend_id=an")
    assert page.status_code == 200, page.text
    assert "backend_id compared across (oa → an)" in page.text
    refused = get(viewer, "/compare", a=f"viewer-test/{results.first.name}", ca="nope=1", cb="nope=2")
    assert refused.status_code == 400 and "has no column" in refused.text


def test_history_draws_a_trend_per_group_and_metric(viewer: str, results: Results) -> None:
    page = get(viewer, "/jobs/viewer-test/history")
    assert page.status_code == 200
    assert page.text.count("<svg") == 4 * 7  # 4 groups × (total, 2 criteria, pass rate, error rate, cost, latency)


def test_latest_names_the_newest_run_of_a_job(viewer: str, results: Results) -> None:
    page = get(viewer, "/runs/viewer-test/latest/summary")
    assert page.status_code == 200 and str(page.url).endswith(f"/runs/viewer-test/{results.second.name}/summary")
    assert get(viewer, "/runs/nope/latest").status_code == 404


def test_unknown_runs_are_not_found(viewer: str, results: Results) -> None:
    assert get(viewer, "/runs/viewer-test/nope").status_code == 404
    assert get(viewer, "/runs/viewer-test/..%2F..").status_code == 404
    assert get(viewer, f"/runs/viewer-test/{results.first.name}/rows/99999").status_code == 404
    assert get(viewer, "/jobs/nope/history").status_code == 404
