"""Fixtures of the browser tests: a live Vigil API on the test Redis, seeded data, and Debian's
Chromium driven headless by Playwright.

The tests skip (with the reason) where Playwright or a system Chromium is missing; CI installs
both (`.ci/run`: `apt-get install chromium`; the `test` extra: `playwright`). Playwright's own
browser download (`playwright install`) is never used.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
VIEWPORT = {"width": 1366, "height": 820}


def chromium_path() -> str | None:
    """The system Chromium (``VIGIL_CHROMIUM`` overrides), or None."""
    candidates = (
        os.environ.get("VIGIL_CHROMIUM"), "/usr/bin/chromium",
        shutil.which("chromium"), shutil.which("chromium-browser"),
    )
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@dataclass
class LiveServer:
    """A running API and what was seeded into it."""

    base_url: str
    keys: dict[str, str]
    seeded: object
    store: object

    def api(self, role: str) -> httpx.Client:
        """An HTTP client with the key of ``role``."""
        headers = {"Authorization": f"Bearer {self.keys[role]}"}
        return httpx.Client(base_url=self.base_url, headers=headers)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of the system Chromium; skips the browser tests where there is none."""
    pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
    )
    path = chromium_path()
    if path is None:
        pytest.skip("no system Chromium: apt-get install chromium (or set VIGIL_CHROMIUM)")
    return path


@pytest.fixture(scope="module")
def live_server(
    chromium: str, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """``create_app`` served by uvicorn in a thread, on a Redis prefix of its own, seeded."""
    import uvicorn

    from service.config import Settings
    from service.main import create_app
    from service.store import Store
    from tests.browser.seed import seed

    prefix = f"vigiltest:{uuid.uuid4().hex[:12]}:"
    data_dir = tmp_path_factory.mktemp("vigil-data")
    store = Store.from_url(redis_url, prefix=prefix)
    seeded = seed(store, data_dir)
    settings = Settings(redis_url=redis_url, redis_prefix=prefix, data_dir=data_dir)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="vigil-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", seeded.keys, seeded, store)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        store.close()


@pytest.fixture(scope="module")
def browser(chromium: str):
    """One headless Chromium per test module."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        yield instance
        instance.close()


@pytest.fixture
def page(browser, live_server: LiveServer):
    """A fresh tab (own sessionStorage); it must request nothing outside Vigil and throw nothing."""
    context = browser.new_context(viewport=VIEWPORT, timezone_id="UTC", locale="en-GB")
    context.set_default_timeout(15000)
    tab = context.new_page()
    foreign: list[str] = []
    errors: list[str] = []
    allowed = (live_server.base_url + "/", "blob:", "data:")
    tab.on("request", lambda req: None if req.url.startswith(allowed) else foreign.append(req.url))
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert not foreign, f"requests outside Vigil: {foreign}"
    assert not errors, f"uncaught errors in the page: {errors}"


def sign_in(page, base_url: str, key: str) -> None:
    """Open the viewer and sign in with ``key``."""
    page.goto(base_url + "/")
    page.fill("#api-key", key)
    page.click("form.signin button[type=submit]")
    page.wait_for_selector("#nav:not([hidden])")


def screenshot(page, name: str, *, full_page: bool = False) -> Path:
    """Save a screenshot artifact (artifacts/screenshots/<name>.png, ignored by git)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path
