"""The Content-Security-Policy in Chromium (issue 16, defect 10): the app's pages and the
Swagger page do all they do without one violation of the policy the server sends."""

from __future__ import annotations

import numpy as np
import pytest
from playwright.sync_api import expect

from tests.annotations.review_fixtures import add_explanation, build_world, make_round_with_saliency

pytestmark = pytest.mark.django_db(transaction=True)

# Runs in every document before the page's own scripts; the exposed function outlives
# navigations, so a violation on any page of the walk is kept.
REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolation(
    `${e.effectiveDirective} blocked ${e.blockedURI || "inline"} at ` +
    `${e.sourceFile || document.location.pathname}:${e.lineNumber} ${e.sample || ""}`
  );
});
"""


@pytest.fixture
def violations(page) -> list[str]:
    """Every CSP violation of ``page``: the DOM event and Chromium's console error both."""
    found: list[str] = []
    page.expose_function("__cspViolation", lambda text: found.append(text))
    page.add_init_script(REPORT_VIOLATIONS)
    page.on(
        "console",
        lambda msg: (
            found.append(f"console: {msg.text}") if "Content Security Policy" in msg.text else None
        ),
    )
    return found


def visit(page, path: str) -> None:
    response = page.goto(path)
    assert response is not None, path
    assert response.status == 200, path
    assert "default-src 'self'" in response.headers["content-security-policy"], path
    settle(page)


def settle(page) -> None:
    """Let requests started by the page's scripts finish and queued violation events fire."""
    page.wait_for_load_state("networkidle")
    page.evaluate("new Promise((resolve) => setTimeout(resolve, 100))")


def test_the_detector_reports_an_inline_script(page, login, violations):
    """What the walk below relies on: an inline script the policy refuses is reported."""
    visit(page, "/accounts/login/")
    assert violations == []
    page.evaluate(
        """() => {
          const s = document.createElement("script");
          s.textContent = "window.ranInline = true";
          document.body.append(s);
        }"""
    )
    settle(page)
    assert page.evaluate("window.ranInline === undefined")
    assert any("script-src" in v for v in violations), violations
    assert any(v.startswith("console: ") for v in violations), violations


def test_the_main_pages_keep_to_the_policy(page, login, violations, media_root):
    world = build_world(n=2, experts=1, with_files=True)
    review_round = make_round_with_saliency(world)
    for instance in world.instances:
        values = np.zeros((32, 32))
        values[:16, :16] = 1.0
        add_explanation(world, instance, values)
    expert = world.experts[0]

    visit(page, "/accounts/login/")

    # The expert: inbox, then the review page through the reveal (bars, saliency overlay).
    login(page, expert.username)
    settle(page)
    expect(page.get_by_role("link", name="Start reviewing")).to_be_visible()
    visit(page, f"/rounds/{review_round.pk}/review/")
    expect(page.locator("#status")).to_have_text("Ready.")
    page.keyboard.press("2")
    page.keyboard.press("Shift+Digit4")
    page.keyboard.press("Enter")  # the expectation; the model's view appears
    expect(page.get_by_test_id("top-classes").locator("li")).to_have_count(3)
    expect(page.locator("#saliency-tools")).to_be_visible()
    settle(page)

    # The scientist: home, project, round, confusion matrix, an instance, the API docs.
    page.context.clear_cookies()
    login(page, world.scientist.username)
    settle(page)
    for path in (
        f"/projects/{world.project.pk}/",
        f"/rounds/{review_round.pk}/",
        f"/model-versions/{world.mv.pk}/matrix/",
        f"/instances/{world.instances[0].pk}/",
    ):
        visit(page, path)
    visit(page, "/api/docs/")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Expert feedback")
    expect(page.locator(".opblock").first).to_be_visible()
    page.locator(".opblock-summary").first.click()  # an operation opens (React, styles)
    settle(page)

    # The approver: readiness.
    page.context.clear_cookies()
    login(page, world.approver.username)
    visit(page, f"/projects/{world.project.pk}/readiness/")

    assert violations == []
