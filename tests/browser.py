"""A real headless Chromium (Debian's `chromium` + `chromium-driver`), driven with Selenium.

The system binary is used as is: nothing is downloaded at run time (Selenium Manager is
bypassed by naming the driver), and the flags keep it from reaching for the network.
Under CI a missing browser fails the test; elsewhere it skips with the install command.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager

import pytest

CHROMIUM = os.environ.get("SMALLFLEET_CHROMIUM", "/usr/bin/chromium")
DRIVER = os.environ.get("SMALLFLEET_CHROMEDRIVER", "/usr/bin/chromedriver")
INSTALL = "apt-get install chromium chromium-driver (make test does it)"


@contextmanager
def chromium():
    """A fresh headless Chromium session that records the page's console."""
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        message = f"no browser at {CHROMIUM} / {DRIVER}: {INSTALL}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="smallfleet-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-gpu", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                 "--window-size=1280,2000"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver) -> list[str]:
    """Console messages of level SEVERE (errors, failed loads) since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def broken_images(driver) -> list[str]:
    """Images on the page that did not load (or have no pixels)."""
    return driver.execute_script(
        "return Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt || i.src.slice(0, 60));"
    )
