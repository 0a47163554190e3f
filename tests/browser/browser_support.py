"""Fixtures of the browser tier: UIs opened in a real Chromium (Debian's, driven by Playwright).

scripts/install_tools.sh installs the `chromium` package; Playwright's own browser download is
never used. Every request a page makes outside loopback is aborted, so a test sees what a user
without internet sees and never depends on a CDN.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


@pytest.fixture(scope="module", name="browser")
def browser_fixture() -> Iterator:
    """Debian's Chromium, headless, launched once per module.

    Not per session: while Playwright's sync API is open it runs an asyncio loop in the main
    thread, and every later test that calls asyncio.run (or Ray's sync API) would fail.
    """
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("no chromium binary: run scripts/install_tools.sh (Debian's chromium)")
    with sync_playwright() as pw:
        # Root in CI: Chromium's sandbox needs user namespaces it may not get there.
        args = ["--no-sandbox", "--disable-dev-shm-usage"] if os.geteuid() == 0 else []
        browser = pw.chromium.launch(executable_path=chromium, args=args)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(name="page")
def page_fixture(browser) -> Iterator:
    """A fresh page whose requests beyond loopback are aborted (and recorded on `page.blocked`)."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    blocked: list[str] = []

    def only_loopback(route) -> None:
        if urlsplit(route.request.url).hostname in LOOPBACK:
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    context.route("**/*", only_loopback)
    page = context.new_page()
    page.blocked = blocked
    try:
        yield page
    finally:
        context.close()
