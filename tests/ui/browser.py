"""Debian's Chromium driven by Playwright, as every UI test launches it.

Playwright's own browser downloads are never used: ``.ci/run`` installs Debian's
``chromium`` and the Python package only. Nothing a page asks for leaves this machine (the
Prefect UI calls an analytics host even with analytics off). Screenshots go to
``$REVIVE_TEST_ARTIFACTS`` (default ``.revive/test-artifacts`` in the repository), where CI
keeps them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.factories import REPO

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("REVIVE_TEST_ARTIFACTS") or REPO / ".revive" / "test-artifacts")
NOT_LOCAL = re.compile(r"^https?://(?!127\.0\.0\.1[:/]).*")


def require_browser() -> Any:
    """Playwright's sync API, or skip (fail under ``REVIVE_REQUIRE_TOOLS=1``)."""
    try:
        from playwright import sync_api
    except ImportError as exc:
        missing = f"playwright is not installed ({exc})"
    else:
        if CHROMIUM.exists():
            return sync_api
        missing = f"{CHROMIUM} is missing (Debian's chromium package)"
    if os.environ.get("REVIVE_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{missing}: .ci/run installs it", pytrace=False)
    pytest.skip(missing)


@contextmanager
def chromium(sync_api: Any) -> Iterator[Any]:
    """A headless Debian Chromium, closed when the block ends."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                             args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def local_context(browser: Any, **options: Any) -> Any:
    """A new browser context whose requests beyond 127.0.0.1 are aborted."""
    context = browser.new_context(**options)
    context.route(NOT_LOCAL, lambda route: route.abort())
    return context


def artifact(name: str) -> Path:
    """Where a test saves the file ``name`` for people to look at after the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name
