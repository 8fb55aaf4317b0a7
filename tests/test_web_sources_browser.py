"""Fetch now in a real headless Chromium: a real ``invsync serve`` with a configured local
drop-folder source, in front of a real sandbox store (see test_web_browser.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import Served, by_id, serve_process, sign_in, text_of, wait_page

from invsync.sandbox.process import SandboxProcess

CSV = "sku,quantity\nTOWEL-907-NAVY-SHEET,5\nTOWEL-907-BURG-BATH,7\n"


@pytest.fixture
def served_with_source(sandbox: SandboxProcess, tmp_path: Path) -> Iterator[Served]:
    drop = tmp_path / "private-drop"
    drop.mkdir()
    (drop / "stock_0612.csv").write_text(CSV)
    config = tmp_path / "invsync.toml"
    config.write_text(f'[sources.warehouse]\nurl = "{drop}/stock_*.csv"\nsettle_s = 0\n')
    config.chmod(0o600)
    with serve_process(sandbox, tmp_path, config) as srv:
        yield srv
    assert "private-drop" not in "".join(srv.output)  # the source's path is not even logged


def test_fetch_now_shows_the_sources_file_as_a_preview(served_with_source: Served,
                                                       browser: Any) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, served_with_source)
    assert "warehouse" in by_id(browser, "source-list").text
    assert "private-drop" not in browser.page_source
    browser.find_element(By.CSS_SELECTOR, 'button[data-source="warehouse"]').click()
    wait_page(browser, lambda: "/uploads/" in browser.current_url
             and "TOWEL-907-NAVY-SHEET" in text_of(browser))
    assert "stock_0612.csv" in text_of(browser)
