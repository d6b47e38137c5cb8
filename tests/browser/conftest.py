"""Browser tests: the Python ``playwright`` package drives Debian's Chromium
(``/usr/bin/chromium``; ``playwright install`` cannot download browsers here) against
pytest-django's live server. A failing test leaves a screenshot in
``var/test-artifacts/screenshots/``. A missing browser fails the run; it never skips."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.signals import request_finished, request_started

from scripts.chromium import CHROMIUM, CHROMIUM_FLAGS

# Playwright's sync API keeps an asyncio loop in the main thread; Django would refuse ORM
# calls from test code in that thread although nothing runs concurrently there.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

SCREENSHOTS = Path(
    os.environ.get(
        "BROWSER_SCREENSHOTS_DIR",
        Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "screenshots",
    )
)
PASSWORD = "pw-123456"  # tests.factories.make_user's default


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/browser/" in str(item.fspath):
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield browser
        browser.close()


class _InFlight:
    """Requests the live server is handling (Django's request signals; its threads run in
    this process). A page's timers (draft saves, heartbeats, polling) can leave one running
    when a test ends; the transactional test's flush (TRUNCATE) would then deadlock with it
    on PostgreSQL, so the page is stopped and these are awaited first."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()
        request_started.connect(self.started, weak=False)
        request_finished.connect(self.finished, weak=False)

    # Only the live server's threads count: the test client's requests run in the main
    # thread, and a streamed response a test never closes sends no request_finished.
    def started(self, **kwargs) -> None:
        if threading.current_thread() is not threading.main_thread():
            with self.lock:
                self.count += 1

    def finished(self, **kwargs) -> None:
        if threading.current_thread() is not threading.main_thread():
            with self.lock:
                self.count = max(0, self.count - 1)

    def reset(self) -> None:
        with self.lock:
            self.count = 0

    def wait_idle(self, seconds: float = 10.0) -> None:
        deadline = time.monotonic() + seconds
        while self.count and time.monotonic() < deadline:
            time.sleep(0.02)


_IN_FLIGHT = _InFlight()


def _screenshot_on_failure(browser, request: pytest.FixtureRequest, **context_options) -> Iterator:
    """A fresh browser context at 1280x800; a full-page screenshot if the test failed."""
    _IN_FLIGHT.reset()
    context = browser.new_context(viewport={"width": 1280, "height": 800}, **context_options)
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)[-150:]
        try:
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
        except Exception as exc:  # a crashed page must not hide the test's own failure
            print(f"screenshot failed: {exc}")
    try:
        page.goto("about:blank")  # stops the page's timers: no new request starts
    except Exception as exc:  # a crashed page has none left
        print(f"leaving the page failed: {exc}")
    _IN_FLIGHT.wait_idle()
    context.close()


@pytest.fixture
def page(browser, request: pytest.FixtureRequest, live_server) -> Iterator:
    """A page on the live server (relative URLs work)."""
    yield from _screenshot_on_failure(browser, request, base_url=live_server.url)


@pytest.fixture
def bare_page(browser, request: pytest.FixtureRequest) -> Iterator:
    """A page with no server and no database, for tests of the browser tooling itself."""
    yield from _screenshot_on_failure(browser, request)


@pytest.fixture
def login():
    """Log ``page`` in through the login form as ``username``."""

    def do(page, username: str, password: str = PASSWORD) -> None:
        page.goto("/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(re.compile(r".*/$"))

    return do
