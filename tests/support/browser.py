"""A real browser for the web pages' tests: Debian's `chromium` package, headless, driven by
Playwright's async API (never a browser Playwright downloads; `make test` installs the package
through deploy/tools.sh).

    async with chromium() as browser:
        page = await new_page(browser, f"http://{host}:{port}")
        errors = page_errors(page)
        await page.goto(".../console/")
        ...
        assert errors == []
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium keeps dialling Google's services, which a
# closed network refuses, slowly; QUIC likewise.
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
VIEWPORT = {"width": 1440, "height": 900}
TIMEOUT_MS = 15_000


def chromium_path() -> str:
    """Debian's chromium; a clear failure (not a skip) when it is not installed."""
    if CHROMIUM.is_file():
        return str(CHROMIUM)
    found = shutil.which("chromium")
    assert found, "Debian's chromium is missing: bash deploy/tools.sh chromium"
    return found


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """A headless Chromium for the block, closed after it."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path(), args=ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(browser: Browser, base_url: str, *, locale: str = "zh-CN") -> Page:
    """A page in a fresh context (its own sessionStorage and localStorage) under `base_url`."""
    context = await browser.new_context(base_url=base_url, viewport=VIEWPORT, locale=locale)
    context.set_default_timeout(TIMEOUT_MS)
    return await context.new_page()


def page_errors(page: Page) -> list[str]:
    """The page's uncaught script errors, as they happen: a test asserts the list stays empty."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    return errors


FRONTEND = Path(__file__).resolve().parent.parent.parent / "frontend"


def sources_hash(*sources: str) -> str:
    """What frontend/stamp.js writes into a build's sources.sha256 for these files and folders
    of frontend/: a committed build whose stamp differs lags its sources."""
    paths = []
    for source in sources:
        path = FRONTEND / source
        paths += [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
    digest = hashlib.sha256()
    for name in sorted(p.relative_to(FRONTEND).as_posix() for p in paths):
        digest.update(name.encode() + b"\0" + (FRONTEND / name).read_bytes() + b"\0")
    return digest.hexdigest()
