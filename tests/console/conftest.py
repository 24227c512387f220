"""Headless Chromium for the console tests: Debian's ``chromium`` driven by Playwright's Python
package (its own browser downloads are not used). ``make unit`` installs chromium where it is
missing; without it the tests skip, which fails a CI run (BATCHROCK_NO_SKIPS)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("BATCHROCK_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A persistent-profile Chromium context with a fresh user-data-dir."""
    sync_api = pytest.importorskip("playwright.sync_api")  # the dev extra: CI has it
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (make unit installs Debian's chromium)")
    # Assertions wait for what the page shows; a busy CI machine may take a while.
    sync_api.expect.set_options(timeout=30_000)
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    browser.clear_cookies()
    page = browser.new_page()
    page.set_default_timeout(30_000)
    try:
        yield page
    finally:
        page.close()
