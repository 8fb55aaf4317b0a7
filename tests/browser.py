"""The browser tests' one copy of their setup: a real ``invsync serve`` process, a headless
Chromium driven by selenium, and the page helpers (every page wait goes through
:func:`wait_page`, selenium's ``WebDriverWait``).

The ``browser`` fixture (tests/conftest.py) opens :func:`chromium`; Chromium and chromedriver
are found on ``PATH`` or through ``INVSYNC_CHROMIUM`` and ``INVSYNC_CHROMEDRIVER``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TOKEN, env_for

from invsync.sandbox.process import SandboxProcess, wait_for_listening

PASSWORD = "merchant-password-1"
"""The password of the demo user ``merchant`` that :func:`serve_process` adds."""


HEADLESS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run"]
"""Chromium's flags for a quiet headless run in a container (add ``--user-data-dir``)."""


def find_chromium() -> str | None:
    """Chromium's binary: ``INVSYNC_CHROMIUM``, else the first Chromium or Chrome on
    ``PATH``; None when there is none."""
    override = os.environ.get("INVSYNC_CHROMIUM")
    if override:
        return override
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def browser_paths() -> tuple[str, str] | None:
    """Chromium's binary and chromedriver, or None when either is missing."""
    binary = find_chromium()
    driver = os.environ.get("INVSYNC_CHROMEDRIVER") or shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    if not binary or not driver:
        return None
    return binary, driver


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium with its own profile folder; always quit. Skips the test when
    there is no Chromium, chromedriver or selenium."""
    paths = browser_paths()
    if paths is None:
        pytest.skip("no Chromium and chromedriver (apt-get install chromium chromium-driver; "
                    "or set INVSYNC_CHROMIUM and INVSYNC_CHROMEDRIVER)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    from selenium.webdriver.chrome.service import Service

    binary, driver_path = paths
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (*HEADLESS, "--window-size=1100,900", "--force-device-scale-factor=1",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium look for a driver online
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Served:
    """A running ``invsync serve`` process."""

    url: str
    process: subprocess.Popen[str]
    env: dict[str, str]
    output: list[str] = field(default_factory=list)


@contextmanager
def serve_process(sandbox: SandboxProcess, tmp_path: Path,
                  config: Path | None = None) -> Iterator[Served]:
    """A demo user and ``invsync serve --port 0`` in front of ``sandbox`` (with the config
    file ``config``, if given); always stopped. The token never reaches the server's log."""
    env = env_for(sandbox, tmp_path)
    if config is not None:
        env["INVSYNC_CONFIG"] = str(config)
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
    assert TOKEN not in child.text()


def by_id(driver: Any, element_id: str) -> Any:
    """The element with this id (raises selenium's NoSuchElementException if none)."""
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id)


def wait_page(driver: Any, check: Callable[[], Any], timeout: float = 60) -> Any:
    """Wait (selenium's WebDriverWait) until ``check`` returns something true; return it.
    An element missing or replaced meanwhile counts as not yet."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2,
                         ignored_exceptions=[NoSuchElementException,
                                             StaleElementReferenceException]
                         ).until(lambda _: check())


def text_of(driver: Any) -> str:
    """The visible text of the page (read in one go, so a page change cannot split it)."""
    return str(driver.execute_script("return document.body ? document.body.innerText : ''"))


def sign_in(driver: Any, served: Served, shot: Callable[[str], None] | None = None) -> None:
    """Sign in as the demo user; ``shot(name)`` is called once the form is filled in."""
    driver.get(served.url + "/login")
    by_id(driver, "username").send_keys("merchant")
    by_id(driver, "password").send_keys(PASSWORD)
    if shot:
        shot("1-sign-in")
    by_id(driver, "sign-in").click()
    wait_page(driver, lambda: "Upload a stock file" in text_of(driver))
