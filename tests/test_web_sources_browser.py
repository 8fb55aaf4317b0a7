"""Fetch now in a real headless Chromium: a real ``invsync serve`` with a configured local
drop-folder source, in front of a real sandbox store (see test_web_browser.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, env_for
from test_web_browser import PASSWORD, Served, browser, by_id, sign_in, text_of, wait_for

from invsync.sandbox.process import SandboxProcess, wait_for_listening

__all__ = ["browser"]  # the fixture, used by name

CSV = "sku,quantity\nTOWEL-907-NAVY-SHEET,5\nTOWEL-907-BURG-BATH,7\n"


@pytest.fixture
def served_with_source(sandbox: SandboxProcess, tmp_path: Path) -> Iterator[Served]:
    drop = tmp_path / "private-drop"
    drop.mkdir()
    (drop / "stock_0612.csv").write_text(CSV)
    config = tmp_path / "invsync.toml"
    config.write_text(f'[sources.warehouse]\nurl = "{drop}/stock_*.csv"\nsettle_s = 0\n')
    config.chmod(0o600)
    env = {**env_for(sandbox, tmp_path), "INVSYNC_CONFIG": str(config)}
    added = subprocess.run([sys.executable, "-m", "invsync", "portal", "add-user", "merchant"],
                           input=PASSWORD + "\n", env=env, cwd=ROOT, capture_output=True,
                           text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    proc = subprocess.Popen([sys.executable, "-m", "invsync", "serve", "--port", "0"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    child = wait_for_listening(proc, "invsync serve", 60)
    try:
        yield Served(child.url, proc, env, child.output)
    finally:
        child.stop()
    assert "private-drop" not in child.text()  # the source's path is not even logged


def test_fetch_now_shows_the_sources_file_as_a_preview(served_with_source: Served,
                                                       browser: Any) -> None:
    from selenium.webdriver.common.by import By

    sign_in(browser, served_with_source)
    assert "warehouse" in by_id(browser, "source-list").text
    assert "private-drop" not in browser.page_source
    browser.find_element(By.CSS_SELECTOR, 'button[data-source="warehouse"]').click()
    wait_for(browser, lambda: "/uploads/" in browser.current_url
             and "TOWEL-907-NAVY-SHEET" in text_of(browser))
    assert "stock_0612.csv" in text_of(browser)
