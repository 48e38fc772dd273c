"""Two raters complete a study in headless Chromium; the admin page shows their exact answers.

Needs Debian's `chromium` and the Python `playwright` package (its own browser download is not
used). Without them the test is skipped, unless RATGAN_REQUIRE_BROWSER=1 (as in CI), where it
fails instead. With RATGAN_TURING_SCREENSHOT=PATH it also saves a screenshot of the rating page.
"""

import os
import shutil
import sqlite3

import pytest

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium() -> str | None:
    for candidate in (
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        "/usr/bin/chromium",
    ):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    reason = None
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the Python package playwright is not installed (pip install playwright)"
    if reason is None and executable is None:
        reason = "no chromium binary found (apt-get install chromium)"
    if reason:
        if os.environ.get("RATGAN_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required but {reason}")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


def _open(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 760})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("body[data-status=ready], body[data-status=done]", timeout=15000)
    return page, errors


def _answer(page, answer, mouse=False):
    """Answer the scan on screen; return its opaque item id."""
    item = page.get_attribute("body", "data-item")
    if mouse:
        page.click(f"#choose-{answer}")
        page.dblclick("#submit")  # a double click must not answer the next scan as well
    else:
        page.keyboard.press("r" if answer == "real" else "s")
        page.wait_for_selector(f"body[data-choice={answer}]")
        page.keyboard.press("Enter")
    page.wait_for_function(
        "item => (document.body.dataset.status === 'ready' && document.body.dataset.item !== item)"
        " || document.body.dataset.status === 'done'",
        arg=item,
        timeout=15000,
    )
    return item


def _key(study):
    with sqlite3.connect(study.path) as conn:
        rows = conn.execute(
            "SELECT item.public_id, rater.name, item.position, scan.source FROM item "
            "JOIN rater ON rater.id = item.rater_id JOIN scan ON scan.id = item.scan_id"
        ).fetchall()
    return {public: (rater, position, source) for public, rater, position, source in rows}


def test_two_raters_complete_a_study(browser, phantom_server):
    study = phantom_server.study
    plan = {
        "alice": ["real", "synthetic", "synthetic", "real"],
        "bob": ["synthetic", "real", "real", "real"],
    }
    given = {}  # item id -> answer given in the browser

    # Alice uses the keyboard, stops after two scans and resumes from her link later.
    page, errors = _open(browser, phantom_server.rater_url("alice"))
    assert page.inner_text("#progress-text") == "0 of 4 rated"
    assert page.inner_text("#item-title") == "Scan 1 of 4"
    assert page.inner_text("#slice-label") == "slice 21 / 40"
    page.keyboard.press("ArrowUp")
    page.keyboard.press("ArrowUp")
    assert page.inner_text("#slice-label") == "slice 23 / 40"
    page.keyboard.press("End")
    assert page.get_attribute("body", "data-slice") == "40"
    page.keyboard.press("Home")
    assert page.get_attribute("body", "data-slice") == "1"
    page.keyboard.press("Enter")  # nothing chosen yet: nothing is sent
    assert page.is_disabled("#submit")
    for answer in plan["alice"][:2]:
        given[_answer(page, answer)] = answer
    page.close()
    page, more_errors = _open(browser, phantom_server.rater_url("alice"))
    errors += more_errors
    assert page.inner_text("#progress-text") == "2 of 4 rated"
    assert page.inner_text("#item-title") == "Scan 3 of 4"
    for answer in plan["alice"][2:]:
        given[_answer(page, answer)] = answer
    assert page.is_visible("#done") and "All 4 scans are rated" in page.inner_text("#done")

    # Bob uses the mouse: the wheel scrolls slices, a double click on Submit counts once.
    page, more_errors = _open(browser, phantom_server.rater_url("bob"))
    errors += more_errors
    page.mouse.move(400, 350)
    page.mouse.wheel(0, -120)
    page.wait_for_selector("body[data-slice='22']")
    page.click("#choose-synthetic")
    if os.environ.get("RATGAN_TURING_SCREENSHOT"):
        page.screenshot(path=os.environ["RATGAN_TURING_SCREENSHOT"])
    for answer in plan["bob"]:
        given[_answer(page, answer, mouse=True)] = answer
    assert page.get_attribute("body", "data-status") == "done"
    assert errors == []

    # The database holds exactly the answers given, once each, at the right positions.
    key = _key(study)
    expected = {key[item][:2]: answer for item, answer in given.items()}
    for rater, answers in plan.items():
        assert [expected[(rater, position)] for position in range(1, 5)] == answers
    assert {(r.rater, r.position): r.answer for r in study.records()} == expected

    # The admin page shows every answer and Table 3 computed from them.
    admin, more_errors = _open_admin(browser, phantom_server.admin_url)
    rows = admin.eval_on_selector_all(
        "#answers tbody tr",
        "rows => rows.map(r => [r.dataset.rater, Number(r.dataset.position), r.dataset.answer,"
        " r.cells[4].textContent.trim()])",
    )
    assert {(rater, position): answer for rater, position, answer, _ in rows} == expected
    assert all(cell == answer for _, _, answer, cell in rows)
    table = admin.eval_on_selector_all(
        "#table3 tr", "rows => rows.map(r => Array.from(r.cells, c => c.textContent.trim()))"
    )
    table = {row[0]: row[1:] for row in table}
    assert table[""] == ["alice", "bob"]
    for column, rater in enumerate(("alice", "bob")):
        mine = [(key[i][2], a) for i, a in given.items() if key[i][0] == rater]
        fooled = sum(source != "real" and a == "real" for source, a in mine)
        missed = sum(source == "real" and a == "synthetic" for source, a in mine)
        assert table["alphaGAN"][column] == str(fooled)
        assert table["Real"][column] == str(missed)
        assert table["Right answers"][column] == str(4 - fooled - missed)
        assert table["Answered"][column] == "4/4"
    assert more_errors == []


def _open_admin(browser, url):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("#answers")
    return page, errors


def test_an_answer_lost_to_another_tab_is_reported(browser, carol_server):
    first, errors = _open(browser, carol_server.rater_url("carol"))
    second, more_errors = _open(browser, carol_server.rater_url("carol"))
    item = first.get_attribute("body", "data-item")
    assert second.get_attribute("body", "data-item") == item
    _answer(first, "real")  # saved
    assert first.is_hidden("#error")
    _answer(second, "synthetic")  # the same scan, answered in the other tab: 409
    assert second.is_visible("#error")
    assert "NOT saved" in second.inner_text("#error")
    assert second.inner_text("#item-title") == "Scan 2 of 4"
    assert errors == [] and more_errors == []
    (record,) = [r for r in carol_server.study.records() if r.position == 1]
    assert record.answer == "real"


def test_an_answer_saved_before_is_reported_as_saved(browser, carol_server):
    """The same answer sent again (a reply lost on the way, or the same answer in another
    tab) is stored: the page says so instead of "NOT saved"."""
    first, errors = _open(browser, carol_server.rater_url("carol"))
    second, more_errors = _open(browser, carol_server.rater_url("carol"))
    _answer(first, "real")  # saved
    _answer(second, "real")  # the same scan and answer again: 409 already_saved
    assert second.is_visible("#error")
    text = second.inner_text("#error")
    assert "already been saved" in text and "NOT saved" not in text
    assert second.inner_text("#item-title") == "Scan 2 of 4"
    assert errors == [] and more_errors == []
