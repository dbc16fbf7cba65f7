"""Open a local HTML file in Debian's Chromium, headless, recording every request it makes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium tries to reach Google's hosts at start.
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


@contextmanager
def open_page(html: Path, profile: Path) -> Iterator[tuple[Any, list[str]]]:
    """Yield (page, requested URLs) for ``html``; skip visibly when no browser is installed."""
    if not CHROMIUM.exists():
        pytest.skip(f"Debian chromium is not installed at {CHROMIUM} (scripts/setup installs it as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1200, "height": 900}, timeout=15_000,
        )
        requests: list[str] = []
        context.on("request", lambda request: requests.append(request.url))
        try:
            page = context.new_page()
            page.goto(html.as_uri(), wait_until="load")
            yield page, requests
        finally:
            context.close()
