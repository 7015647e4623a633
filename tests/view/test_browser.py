"""The viewer in a real headless Chromium: every page loads with no console error and nothing from outside
loopback, answers with markup stay text, filters and sorting work, and a new run appears without a reload."""

from __future__ import annotations

import json

import polars as pl
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from evalpipe.testing import FakeServer
from tests.view.conftest import HOSTILE_ANSWER, Results, run_once


def requested_urls(browser: WebDriver) -> list[str]:
    """Every URL the browser requested since the last call (from the performance log)."""
    urls = []
    for entry in browser.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_every_page_loads_cleanly_from_loopback_only(browser: WebDriver, viewer: str, results: Results) -> None:
    first, second = results.first.name, results.second.name
    task = pl.read_parquet(results.first / "parquet").filter(pl.col("item_id") == "q1")["task_index"][0]
    pages = ["/", f"/runs/viewer-test/{first}", f"/runs/viewer-test/{first}?failures=1&sort=c1&desc=1",
             f"/runs/viewer-test/{first}/rows/{task}", f"/runs/viewer-test/{first}/summary", "/compare",
             f"/compare?a=viewer-test/{first}&b=viewer-test/{second}", "/jobs/viewer-test/history"]
    requested_urls(browser)
    for page in pages:
        browser.get(viewer + page)
        assert browser.find_element(By.TAG_NAME, "h1").text
        assert browser.get_log("browser") == [], page
        resources = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert resources and all(url.startswith(viewer + "/") for url in resources), (page, resources)
    urls = requested_urls(browser)
    assert len(urls) >= len(pages) * 2  # each page, its stylesheet and icon at least
    assert all(url.startswith(viewer + "/") for url in urls), [u for u in urls if not u.startswith(viewer)]


def test_an_answer_with_markup_stays_text(browser: WebDriver, viewer: str, results: Results) -> None:
    browser.get(f"{viewer}/runs/viewer-test/{results.first.name}?q=hostile")
    answers = browser.find_elements(By.CSS_SELECTOR, "#matrix td.cell .answer")
    assert len(answers) == 4 and all(a.get_attribute("textContent") == HOSTILE_ANSWER for a in answers)
    assert not browser.find_elements(By.CSS_SELECTOR, "#matrix b, #matrix img, #matrix script")
    follow(browser, "#matrix td.cell a.score")
    assert browser.find_element(By.ID, "response").get_attribute("textContent") == HOSTILE_ANSWER
    assert not browser.find_elements(By.CSS_SELECTOR, "main b, main img, main script")
    assert browser.get_log("browser") == []  # the answer's script never ran


def shown(browser: WebDriver) -> list[dict[str, object]]:
    """The matrix rows shown: item, and per cell its class and score (one script, not a call per cell)."""
    rows: list[dict[str, object]] = browser.execute_script("""
        return Array.from(document.querySelectorAll('#matrix tr.matrix-row')).map(r => ({
            item: r.dataset.item,
            cells: Array.from(r.querySelectorAll('td.cell')).map(c => c.className),
            scores: Array.from(r.querySelectorAll('td.cell, td.missing')).map(c => c.dataset.score ?? '')}))""")
    return rows


def follow(browser: WebDriver, selector: str) -> None:
    """Click `selector` and wait for the page it loads."""
    page = browser.find_element(By.TAG_NAME, "html")
    browser.find_element(By.CSS_SELECTOR, selector).click()
    WebDriverWait(browser, 10).until(expected_conditions.staleness_of(page))


def test_filters_and_sorting(browser: WebDriver, viewer: str, results: Results) -> None:
    browser.get(f"{viewer}/runs/viewer-test/{results.second.name}")
    assert len(shown(browser)) == 7
    browser.find_element(By.CSS_SELECTOR, "input[name=failures]").click()
    follow(browser, "#filters button")
    failing = shown(browser)
    # q0 and q1 answer "no idea", "broken" errors, "refused" refuses; "hostile" fails on echoes only.
    assert sorted(str(r["item"]) for r in failing) == ["broken", "hostile", "q0", "q1", "refused"]
    assert all(any("fail" in c or "error" in c for c in r["cells"]) for r in failing)  # type: ignore[attr-defined]
    browser.find_element(By.CSS_SELECTOR, "input[name=errors]").click()
    follow(browser, "#filters button")
    assert [r["item"] for r in shown(browser)] == ["broken"]
    assert browser.find_element(By.ID, "count").text.startswith("1 matching rows")

    browser.get(f"{viewer}/runs/viewer-test/{results.second.name}?criterion=echoes")
    follow(browser, "a.sort[data-sort=c0]")
    ascending = [r["scores"][0] for r in shown(browser)]  # type: ignore[index]
    follow(browser, "a.sort[data-sort=c0]")
    descending = [r["scores"][0] for r in shown(browser)]  # type: ignore[index]
    scored = [float(s) for s in ascending if s != ""]
    assert scored == sorted(scored) and scored[0] < scored[-1]
    assert [float(s) for s in descending if s != ""] == sorted(scored, reverse=True)
    assert "criterion=echoes" in browser.current_url and "desc=1" in browser.current_url
    assert browser.get_log("browser") == []


def test_a_run_started_while_the_list_is_open_appears_without_reload(browser: WebDriver, viewer: str,
                                                                      results: Results,
                                                                      fake_server: FakeServer) -> None:
    browser.get(viewer + "/")
    assert not browser.find_elements(By.CSS_SELECTOR, "tr[data-run^='late-job/']")
    browser.execute_script("window.notReloaded = true")
    run_dir = run_once(results.root, fake_server, name="late-job")
    row = WebDriverWait(browser, 15).until(
        lambda b: b.find_elements(By.CSS_SELECTOR, f"tr[data-run='late-job/{run_dir.name}']"))[0]
    assert browser.execute_script("return window.notReloaded") is True
    assert "latest" in row.text and "completed" in row.text and "28" in row.text
    assert browser.get_log("browser") == []
