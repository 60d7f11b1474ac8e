"""A real headless Chromium for the dashboard and report tests (driven by Playwright).

Uses the system's Chromium (Debian package ``chromium``; ``make system-deps`` installs it),
never a browser downloaded by ``playwright install``. Tests skip, saying why, when Chromium
or the ``playwright`` package (``dev`` extra) is absent.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


def chromium_path() -> str:
    """The system Chromium's path, or skip the test."""
    env = os.environ.get("AUTOML_CHROMIUM")
    for cand in (env, "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    pytest.skip("Chromium is not installed (apt-get install chromium, or `make system-deps`)")


@contextmanager
def chromium(offline: bool = False) -> Iterator[Any]:
    """A Playwright browser context on headless Chromium; ``offline`` blocks every request
    that is not to a file, data or blob URL (proof that a page needs no network)."""
    path = chromium_path()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install 'automl[dev]')")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            blocked: list[str] = []
            if offline:
                def route(r: Any) -> None:
                    if r.request.url.startswith(("file:", "data:", "blob:", "about:")):
                        r.continue_()
                    else:
                        blocked.append(r.request.url)
                        r.abort()
                context.route("**/*", route)
            context.blocked = blocked
            yield context
        finally:
            browser.close()


def distinct_colours(page: Any, png: bytes) -> int:
    """How many distinct RGB colours a PNG screenshot has (decoded by the browser's canvas)."""
    data = base64.b64encode(png).decode()
    return page.evaluate("""async (b64) => {
        const img = new Image();
        img.src = 'data:image/png;base64,' + b64;
        await img.decode();
        const c = document.createElement('canvas');
        c.width = img.width; c.height = img.height;
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let i = 0; i < d.length; i += 4) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
        return seen.size;
    }""", data)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
