"""Settings for every test: no HTTP proxy, and garbage collected after each module.

Unclosed sockets and files are reported when the garbage collector finds them, which can be
in any later test, even in the middle of a hypothesis run, where the warning (an error
here) makes an innocent test fail or look flaky. Collecting at the end of each test module
reports a leak in the module that caused it (after every test would cost minutes).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """slack_sdk sends every request through $HTTPS_PROXY, even to 127.0.0.1, and every
    server a test talks to is local."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True, scope="module")
def _collect_garbage_after_each_module() -> Iterator[None]:
    yield
    gc.collect()
