"""End to end in a real headless Chromium (selenium): a real ``invsync serve`` process in front
of a real sandbox store, both on 127.0.0.1 with free ports.

Sign-in → upload → map → preview → confirm → result → history, a hostile SKU and file name,
a forged cross-site form, a CLI run holding the store's lock, and a stale preview. With
``INVSYNC_SCREENSHOTS=DIR`` (``make screenshots``) the main flow saves a PNG of each step
into DIR (the README's ``docs/screenshots/``).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import Served, by_id, serve_process, sign_in, text_of, wait_page
from conftest import ROOT, env_for, lock_holder, run_invsync, state_store_dir, write_csv

from invsync.sandbox.process import SandboxProcess


@pytest.fixture
def served(sandbox: SandboxProcess, tmp_path: Path) -> Iterator[Served]:
    """``invsync serve`` in front of ``sandbox`` (see tests/browser.py)."""
    with serve_process(sandbox, tmp_path) as srv:
        yield srv


# --------------------------------------------------------------------------- helpers


def screenshots(tmp_path: Path) -> Callable[[Any, str], None]:
    target = os.environ.get("INVSYNC_SCREENSHOTS")
    folder = Path(target) if target else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)

    def shot(driver: Any, name: str) -> None:
        # The whole page, not just the window (Chromium's DevTools protocol).
        size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        bottom = driver.execute_script(
            "return document.querySelector('main').getBoundingClientRect().bottom")
        clip = {"x": 0, "y": 0, "width": size["width"],
                "height": min(int(bottom) + 24, 1800), "scale": 1}
        data = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True, "clip": clip})["data"]
        (folder / f"{name}.png").write_bytes(base64.b64decode(data))

    return shot


def assert_no_alert(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - the property raises when there is none


# --------------------------------------------------------------------------- tests


def test_sign_in_upload_map_preview_confirm_result_history(
        served: Served, browser: Any, sandbox: SandboxProcess, tmp_path: Path) -> None:
    shot = screenshots(tmp_path)
    # Last night's export set some levels: the preview has "now" values and a drop to 0.
    nightly = write_csv(tmp_path / "nightly.csv", ["sku", "quantity"],
                        [["TOWEL-907-NAVY-SHEET", 40], ["TOWEL-907-BURG-BATH", 12],
                         ["TOWEL-907-SAND-HAND", 9], ["POSTER-1755", 3]])
    assert run_invsync(["sync", str(nightly)], served.env).returncode == 0
    # The merchant's correction, with headers invsync does not know and one bad row.
    merchant = write_csv(tmp_path / "Lager Korrektur.csv", ["Artikel", "Bestand", "Notiz"],
                         [["TOWEL-907-NAVY-SHEET", 0, "sold out"],
                          ["TOWEL-907-BURG-BATH", 15, ""],
                          ["TOWEL-907-SAND-HAND", "zwei", "typo"]])
    sign_in(browser, served, lambda name: shot(browser, name))
    by_id(browser, "file").send_keys(str(merchant))
    shot(browser, "2-upload")
    by_id(browser, "upload").click()
    # Map the columns.
    wait_page(browser, lambda: "Which column is which?" in text_of(browser))
    from selenium.webdriver.support.ui import Select

    selects = browser.find_elements("css selector", "#columns select")
    Select(selects[0]).select_by_value("sku")
    Select(selects[1]).select_by_value("quantity")
    shot(browser, "3-map")
    by_id(browser, "save-map").click()
    # Preview: nothing sent, biggest drop first and highlighted, the bad row explained.
    wait_page(browser, lambda: "Nothing has been sent yet" in text_of(browser))
    puts_before = [r for r in sandbox.requests() if r["method"] == "PUT"]
    rows = browser.find_elements("css selector", "#changes tbody tr")
    assert [r.text.split()[0] for r in rows] == ["TOWEL-907-NAVY-SHEET", "TOWEL-907-BURG-BATH"]
    assert "zero" in rows[0].get_attribute("class")
    # The location by the store's name for it, never a bare number.
    assert rows[0].text.split()[1:] == ["Default", "location", "40", "0", "-40"]
    rejected = by_id(browser, "rejected-rows").text
    assert "A quantity that is not a whole number." in rejected and "zwei" in rejected
    assert by_id(browser, "rejected-csv").text == "Download rejected.csv"
    assert browser.find_elements("id", "rejected-xlsx") == []  # only for workbooks
    shot(browser, "4-preview")
    by_id(browser, "apply").click()
    # Result.
    wait_page(browser, lambda: by_id(browser, "accepted").text == "2", timeout=90)
    assert by_id(browser, "refused").text == "0"
    shot(browser, "5-result")
    assert sandbox.levels()[(1, "TOWEL-907-NAVY-SHEET")] == 0
    assert sandbox.levels()[(1, "TOWEL-907-BURG-BATH")] == 15
    puts = [r for r in sandbox.requests() if r["method"] == "PUT"]
    assert len(puts) == len(puts_before) + 1
    # The full report opens (its own CSP), and the history lists page and CLI runs.
    by_id(browser, "report-link").click()
    # (styled now: the kicker is upper case on screen)
    wait_page(browser, lambda: "invsync sync run" in text_of(browser).lower())
    browser.get(served.url + "/history")
    history = by_id(browser, "history").text
    assert "Lager Korrektur.csv" in history and "merchant" in history
    assert "nightly.csv" in history and "command line" in history
    shot(browser, "6-history")
    # The original upload can be downloaded by a signed-in user (fetched in the page).
    link = browser.find_element("css selector", "#history a").get_attribute("href")
    browser.get(link)
    original = browser.find_element("partial link text", "download the original file")
    assert "/files/original" in original.get_attribute("href")


def test_hostile_sku_and_file_name_are_shown_as_text(
        served: Served, browser: Any, tmp_path: Path) -> None:
    evil_sku = "<img src=x onerror=\"document.title='pwned';alert(1)\">"
    script_sku = "<script>document.title='pwned'</script>"
    path = tmp_path / "<svg onload=alert(1)>.csv"
    write_csv(path, ["sku", "quantity"], [[evil_sku, 5], [script_sku, 6], ["<i>B</i>", "<b>x</b>"]])
    sign_in(browser, served)
    by_id(browser, "file").send_keys(str(path))
    by_id(browser, "upload").click()
    wait_page(browser, lambda: "Nothing has been sent yet" in text_of(browser))
    assert_no_alert(browser)
    assert "pwned" not in browser.title
    body = text_of(browser)
    assert evil_sku in body and script_sku in body and "<b>x</b>" in body
    assert "<svg onload=alert(1)>.csv" in body
    assert browser.find_elements("css selector", "main img, main svg, main b, main i") == []
    for page in ("/history", "/"):
        browser.get(served.url + page)
        assert_no_alert(browser)
        assert "pwned" not in browser.title
    assert "<svg onload=alert(1)>.csv" in text_of(browser)


def test_forged_cross_site_form_changes_nothing(
        served: Served, browser: Any, sandbox: SandboxProcess, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "stock.csv", ["sku", "quantity"], [["POSTER-1755", 7]])
    sign_in(browser, served)
    by_id(browser, "file").send_keys(str(path))
    by_id(browser, "upload").click()
    wait_page(browser, lambda: "Nothing has been sent yet" in text_of(browser))
    upload_url = browser.current_url
    # A page elsewhere posts a form to the apply URL, with the signed-in browser.
    attacker = tmp_path / "attacker.html"
    attacker.write_text(f'<form id="f" method="post" action="{upload_url}/apply">'
                        f'<input name="csrf_token" value="guess"></form>'
                        f'<script>document.getElementById("f").submit()</script>')
    browser.get(attacker.as_uri())
    wait_page(browser, lambda: browser.current_url.startswith(served.url))
    assert "Please try again" in text_of(browser) or "Sign in" in text_of(browser)
    # The same page's own form, with its token tampered with, is refused too.
    browser.get(upload_url)
    browser.execute_script("document.querySelector('#apply-form [name=csrf_token]').value='x'")
    by_id(browser, "apply").click()
    wait_page(browser, lambda: "Please try again" in text_of(browser))
    browser.get(upload_url)
    assert "Nothing has been sent yet" in text_of(browser)
    assert [r for r in sandbox.requests() if r["method"] == "PUT"] == []


def test_a_cli_run_holding_the_lock_makes_the_page_wait(
        sandbox_factory: Callable[..., SandboxProcess], browser: Any, tmp_path: Path) -> None:
    slow = sandbox_factory()
    env = env_for(slow, tmp_path)
    with serve_process(slow, tmp_path) as srv:
        mine = write_csv(tmp_path / "mine.csv", ["sku", "quantity"], [["POSTER-1755", 11]])
        sign_in(browser, srv)
        by_id(browser, "file").send_keys(str(mine))
        by_id(browser, "upload").click()
        wait_page(browser, lambda: "Nothing has been sent yet" in text_of(browser))
        slow.set_faults(latency_ms=700)  # slow from here on: the CLI run holds the lock long
        # A long CLI run (other items, many small batches, one at a time) takes the lock.
        catalog = [line.split(",")[0] for line in
                   (ROOT / "sample_data" / "catalog.csv").read_text().splitlines()[1:]]
        big = write_csv(tmp_path / "big.csv", ["sku", "quantity"],
                        [[sku, 1] for sku in catalog if sku != "POSTER-1755"][:600])
        cli = subprocess.Popen([sys.executable, "-m", "invsync", "sync", str(big),
                                "--batch-size", "50", "--concurrency", "1"], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            lock = state_store_dir(tmp_path / "state", slow.store_hash, slow.url) / "lock"
            lock_holder(lock, cli, None, timeout=60)  # the CLI run has taken the lock
            by_id(browser, "apply").click()
            wait_page(browser,
                      lambda: "another update of this store is running" in text_of(browser))
            assert "Waiting" in by_id(browser, "progress-text").text
            screenshots(tmp_path)(browser, "5a-waiting-for-the-lock")
            assert cli.poll() is None  # the CLI run is still going: the page really waited
            # When the CLI run ends, the page's changes go through.
            wait_page(browser, lambda: by_id(browser, "accepted").text == "1", timeout=180)
            assert cli.wait(timeout=120) in (0, 1)  # it finished, never locked out (4)
        finally:
            if cli.poll() is None:
                cli.kill()
            cli.wait()
        assert slow.levels()[(1, "POSTER-1755")] == 11


def test_stale_preview_asks_to_preview_again(
        served: Served, browser: Any, sandbox: SandboxProcess, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "stock.csv", ["sku", "quantity"], [["POSTER-1755", 7]])
    sign_in(browser, served)
    by_id(browser, "file").send_keys(str(path))
    by_id(browser, "upload").click()
    wait_page(browser, lambda: "Nothing has been sent yet" in text_of(browser))
    # Meanwhile the nightly run sets the same item.
    night = write_csv(tmp_path / "night.csv", ["sku", "quantity"], [["POSTER-1755", 30]])
    assert run_invsync(["sync", str(night)], served.env).returncode == 0
    puts = len([r for r in sandbox.requests() if r["method"] == "PUT"])
    by_id(browser, "apply").click()
    wait_page(browser, lambda: "changed since your preview" in text_of(browser), timeout=90)
    assert "nothing was sent" in text_of(browser)
    assert len([r for r in sandbox.requests() if r["method"] == "PUT"]) == puts
    assert sandbox.levels()[(1, "POSTER-1755")] == 30
    by_id(browser, "preview-again").click()
    wait_page(browser, lambda: "Nothing has been sent yet" in text_of(browser))
    row = browser.find_element("css selector", "#changes tbody tr").text.split()
    assert row == ["POSTER-1755", "Default", "location", "30", "7", "-23"]


def test_encoding_and_header_row_are_advanced_choices_of_upload_and_preview(
        sandbox_factory: Callable[..., SandboxProcess], browser: Any, tmp_path: Path) -> None:
    # Location 1 is labelled in Greek: the file names it, so the encoding matters to a used
    # cell (doubt only in a column invsync does not use would be read, with a note).
    locations = write_csv(tmp_path / "locations.csv", ["id", "code", "label", "enabled"],
                          [[1, "BC-LOCATION-1", "Αποθηκη", "true"]])
    sandbox = sandbox_factory("--locations", str(locations))
    with serve_process(sandbox, tmp_path) as served:
        _encoding_and_header_row(served, browser, sandbox, tmp_path)


def _encoding_and_header_row(served: Served, browser: Any, sandbox: SandboxProcess,
                             tmp_path: Path) -> None:
    shot = screenshots(tmp_path)
    from selenium.webdriver.support.ui import Select

    # An old till's export: notes above the header (row 24), Greek names, ISO-8859-7 text
    # that could as well be Cyrillic or Hebrew.
    text = ("Stock count, warehouse 2\n" + "".join(f"note {i}\n" for i in range(22))
            + "sku,quantity,name,location\nPOSTER-1755,4,Λεωνιδας,Αποθηκη\n"
            "TOWEL-907-BURG-BATH,6,Αλεξανδρος,αποθηκη\n")
    path = tmp_path / "till export.csv"
    path.write_bytes(text.encode("iso-8859-7"))
    sign_in(browser, served)
    by_id(browser, "file").send_keys(str(path))
    # The advanced choices are folded away, automatic by default.
    assert not by_id(browser, "header_row").is_displayed()
    by_id(browser, "advanced").find_element("css selector", "summary").click()
    wait_page(browser, lambda: by_id(browser, "header_row").is_displayed())
    assert Select(by_id(browser, "encoding")).first_selected_option.text == "Automatic"
    by_id(browser, "header_row").send_keys("24")
    browser.execute_script("window.scrollTo(0, 0)")
    shot(browser, "2b-upload-advanced")
    by_id(browser, "upload").click()
    # The encoding cannot be told: the page says so and where to pick it.
    wait_page(browser, lambda: "This file could not be used" in text_of(browser))
    failed = by_id(browser, "failed").text
    assert "encoding is unclear" in failed and "till export.csv" in failed
    assert 'pick its text encoding under "Text encoding and header row"' in failed
    assert by_id(browser, "header_row").get_attribute("value") == "24"  # kept
    Select(by_id(browser, "encoding")).select_by_visible_text("Greek (ISO-8859-7)")
    shot(browser, "4a-pick-the-encoding")
    by_id(browser, "read-again").click()
    wait_page(browser, lambda: "Nothing has been sent yet" in text_of(browser))
    assert by_id(browser, "read-as").text == "Greek (ISO-8859-7) text, column names on row 24"
    rows = [r.text.split() for r in browser.find_elements("css selector", "#changes tbody tr")]
    assert sorted(r[0] for r in rows) == ["POSTER-1755", "TOWEL-907-BURG-BATH"]
    shot(browser, "4b-preview-read-as")
    by_id(browser, "apply").click()
    wait_page(browser, lambda: by_id(browser, "accepted").text == "2", timeout=90)
    assert sandbox.levels()[(1, "POSTER-1755")] == 4
    assert sandbox.levels()[(1, "TOWEL-907-BURG-BATH")] == 6


def test_phone_width_pages_fit_and_cancel_words(
        sandbox_factory: Callable[..., SandboxProcess], browser: Any, tmp_path: Path) -> None:
    """At 375 px every page fits without the page itself scrolling sideways, and a running
    apply can be cancelled from the page: the rest is not sent, in plain words."""
    slow = sandbox_factory("--latency-ms", "700")
    shot = screenshots(tmp_path)
    browser.set_window_size(375, 800)
    levels = {f"TOWEL-907-{c}": 5 + i for i, c in enumerate(
        ("NAVY-SHEET", "BURG-BATH", "SAND-HAND"))}
    path = write_csv(tmp_path / "a very long file name from the accounting export.csv",
                     ["sku", "quantity"], [[k, v] for k, v in levels.items()] + [["X", "1.204"]])

    def fits() -> None:
        wide = browser.execute_script(
            "return document.documentElement.scrollWidth - window.innerWidth")
        assert wide <= 0, f"{browser.current_url} scrolls sideways by {wide} px"

    with serve_process(slow, tmp_path) as served:
        browser.get(served.url + "/login")
        fits()
        sign_in(browser, served)
        fits()
        shot(browser, "phone-upload")
        by_id(browser, "file").send_keys(str(path))
        by_id(browser, "upload").click()
        wait_page(browser, lambda: "Nothing has been sent yet" in text_of(browser))
        fits()
        shot(browser, "phone-preview")
        page = text_of(browser)
        for word in ("batch", "dry run", "stale", "partial", "--"):
            assert word not in page.lower(), word
        by_id(browser, "apply").click()
        wait_page(browser, lambda: "Applied" in text_of(browser) or "Cancel" in text_of(browser),
                 timeout=90)
        if browser.find_elements("id", "cancel"):
            shot(browser, "phone-applying")
            by_id(browser, "cancel").click()
        wait_page(browser, lambda: "applying now" not in text_of(browser).lower()
                 and "cancelling" not in text_of(browser).lower(), timeout=90)
        fits()
        shot(browser, "phone-after")
        browser.get(served.url + "/history")
        fits()
        # Not just scrolling inside its box: at phone width the history reads as a list.
        wide = browser.execute_script("const t = document.getElementById('history');"
                                      "return t.scrollWidth - t.parentElement.clientWidth")
        assert wide <= 0, f"the history table is {wide} px wider than the page"
        shot(browser, "phone-history")
