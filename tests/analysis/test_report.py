"""`evalpipe report` in a real headless Chromium (Debian's chromium and chromedriver, installed by
`make test`): the page loads offline with no console errors, every chart draws, filtering and expanding
the per-item table work, and hostile answer text stays text."""

from __future__ import annotations

import dataclasses
import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from evalpipe.analysis.synthetic import SyntheticRun, write_synthetic_run
from evalpipe.cli import main
from tests.browser import headless_chromium


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with headless_chromium() as driver:
        yield driver


def open_report(browser: WebDriver, path: Path) -> list[dict[str, object]]:
    """Load the report; returns the console messages of the load."""
    browser.get(path.as_uri())
    return list(browser.get_log("browser"))


def not_blank(png: bytes) -> float:
    """The share of a screenshot's pixels that are not background white."""
    histogram = Image.open(io.BytesIO(png)).convert("L").histogram()  # pixel counts per grey level
    return sum(histogram[:240]) / sum(histogram)


def shown_rows(browser: WebDriver) -> int:
    """How many item rows the browser renders (asked in one script: a WebDriver call per row is slow)."""
    count: int = browser.execute_script(
        "return Array.from(document.querySelectorAll('#items tr.item')).filter(r => r.checkVisibility()).length")
    return count


def test_report_of_a_real_run_loads_draws_and_filters(real_run: Path, tmp_path: Path, browser: WebDriver,
                                                      hostile_answer: str) -> None:
    output = tmp_path / "report.html"
    assert main(["report", str(real_run), "-o", str(output)]) == 0
    html = output.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "the report must not load anything"

    console = open_report(browser, output)
    assert console == [], console  # no errors, and the hostile answer's script did not run
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    # The answer's markup shows as text.
    assert hostile_answer in browser.execute_script("return document.getElementById('items').textContent")
    assert not browser.find_elements(By.CSS_SELECTOR, "#items b, #items img")

    charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
    # 2 histograms (one per backend), 2 scatters, 2 temperature × top_p heatmaps (the job is a 2 × 2 grid).
    assert len(charts) == 6
    for chart in charts:
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
        assert chart.size["height"] > 100
        assert not_blank(chart.screenshot_as_png) > 0.02, chart.get_attribute("innerHTML")[:200]

    assert shown_rows(browser) == 48
    assert browser.find_element(By.ID, "shown-count").text == "48 of 48 rows"
    Select(browser.find_element(By.ID, "filter-status")).select_by_visible_text("error")
    assert shown_rows(browser) == 8  # the context-length item, per backend and grid point
    Select(browser.find_element(By.ID, "filter-backend")).select_by_visible_text("oa")
    assert shown_rows(browser) == 4
    Select(browser.find_element(By.ID, "filter-status")).select_by_visible_text("all")
    search = browser.find_element(By.ID, "filter-text")
    search.send_keys("say the answer 3")  # a phrase from the prompt, which only the details hold
    assert shown_rows(browser) == 4
    assert browser.find_element(By.ID, "shown-count").text == "4 of 48 rows"

    row = next(r for r in browser.find_elements(By.CSS_SELECTOR, "#items tr.item") if r.is_displayed())
    detail = row.find_element(By.XPATH, "following-sibling::tr[1]")
    assert not detail.is_displayed()
    row.click()
    assert detail.is_displayed()
    assert detail.text.startswith("prompt\nsay the answer 3\nanswer\nEcho: say the answer 3")
    assert browser.get_log("browser") == []


def test_report_with_a_comparison_shows_the_regression(baseline_run: Path, baseline_spec: SyntheticRun,
                                                       tmp_path: Path, browser: WebDriver) -> None:
    candidate = write_synthetic_run(tmp_path / "b", dataclasses.replace(
        baseline_spec, noise_seed=5, shift={"beta": -0.15}, run_id="candidate"))
    output = tmp_path / "compare.html"
    assert main(["report", str(baseline_run), "--compare", str(candidate), "--fail-on-regression", "0.02",
                 "-o", str(output)]) == 0
    assert open_report(browser, output) == []
    gate = browser.find_element(By.CSS_SELECTOR, ".gate-failed").text
    assert "failed for beta · cold, beta · hot, beta · warm" in gate
    chart = browser.find_element(By.CSS_SELECTOR, "#comparison ~ .charts figure.chart")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
    assert not_blank(chart.screenshot_as_png) > 0.02
    # One interval per backend, parameter set and metric; 8 of beta's 9 are drawn red (the whole interval
    # below zero: its accuracy at the hot parameter set, pass/fail over 80 items, is not clearly worse).
    assert len(chart.find_elements(By.CSS_SELECTOR, "circle")) == 18
    assert len(chart.find_elements(By.CSS_SELECTOR, "circle[fill='#d62728']")) == 8
    verdicts = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#differences td:last-child")]
    assert verdicts.count("worse") == 8
    assert len(browser.find_elements(By.CSS_SELECTOR, "#regressions tbody tr")) == 30  # top 5 per group
    assert len(browser.find_elements(By.CSS_SELECTOR, "#improvements tbody tr")) == 30
    # A 960-row run: the table holds every row; the heatmaps show the 3 parameter sets.
    assert shown_rows(browser) == 960
    assert "The first" not in browser.find_element(By.TAG_NAME, "body").text
    first = browser.find_element(By.CSS_SELECTOR, "#items tr.item")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", first)  # not under the sticky header
    first.click()
    assert "judge\njudge graded synthetically" in first.find_element(By.XPATH, "following-sibling::tr[1]").text


def test_partial_run_is_labelled_and_large_runs_are_capped(tmp_path: Path, browser: WebDriver) -> None:
    run_dir = write_synthetic_run(tmp_path / "run", SyntheticRun(items=1_500, rows_per_part=1_000))
    (run_dir / "manifest.json").unlink()
    output = tmp_path / "partial.html"
    assert main(["report", str(run_dir), "-o", str(output)]) == 0
    assert open_report(browser, output) == []
    assert "no manifest.json" in browser.find_element(By.ID, "partial").text
    assert shown_rows(browser) == 2_000
    assert "The first 2,000 of 3,000 rows" in browser.find_element(By.TAG_NAME, "body").text


def test_report_with_history_draws_a_trend_per_metric_with_the_regression_marked(
        nightly: list[Path], tmp_path: Path, browser: WebDriver) -> None:
    output = tmp_path / "history.html"
    assert main(["report", str(nightly[2]), "--history", str(nightly[0].parent), "-o", str(output)]) == 0
    assert open_report(browser, output) == []
    charts = browser.find_elements(By.CSS_SELECTOR, "#trends figure.chart")
    assert len(charts) == 2 * 6  # 2 backends × (total, says_answer, pass rate, error rate, cost, latency)
    chart = browser.find_element(By.CSS_SELECTOR, "#trends svg[aria-label='oa / default: total']")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
    assert chart.size["height"] > 100 and not_blank(chart.screenshot_as_png) > 0.02
    # One point per run; only the third, whose paired change excludes 0, is marked, in red; it is this report's run.
    assert len(chart.find_elements(By.CSS_SELECTOR, "circle")) == 3
    marked = chart.find_elements(By.CSS_SELECTOR, "circle.change")
    assert [m.get_attribute("class") for m in marked] == ["change worse"]
    assert marked[0].get_attribute("fill") == "#d62728"
    assert nightly[2].name in marked[0].find_element(By.TAG_NAME, "title").get_attribute("textContent")
    assert len(chart.find_elements(By.CSS_SELECTOR, "rect.current")) == 1
