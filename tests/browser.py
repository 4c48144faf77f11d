"""Headless Debian chromium driven by selenium through the system chromedriver (never selenium-manager:
no browser download). CI installs the packages and sets MONKEY_REQUIRE_BROWSER=1, so a missing browser
fails there instead of skipping."""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
MISSING = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).is_file()]
NO_BROWSER = f"browser tests need Debian's chromium and chromium-driver (missing: {', '.join(MISSING)})"
REQUIRE_BROWSER = os.environ.get("MONKEY_REQUIRE_BROWSER") == "1"


def start_browser(downloads: Path):
    """A headless chromium that saves downloads into `downloads` without asking."""
    if MISSING:
        if REQUIRE_BROWSER:
            pytest.fail(f"{NO_BROWSER}; MONKEY_REQUIRE_BROWSER=1 forbids skipping")
        pytest.skip(NO_BROWSER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--allow-file-access-from-files",
        "--window-size=1400,1000",
    ):
        options.add_argument(argument)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver
