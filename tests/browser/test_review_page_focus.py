"""After a refused verdict (400 naming fields) the review page puts the message next to the
field, moves the focus to the first field in error, scrolled into view, and clears the
message once the field is changed."""

from __future__ import annotations

import json

import pytest
from playwright.sync_api import expect

from annotations.models import Review
from tests.annotations.review_fixtures import (
    add_explanation,
    build_world,
    make_round_with_saliency,
)
from tests.browser.test_review_page import open_review, quadrant_map

pytestmark = pytest.mark.django_db(transaction=True)

IN_VIEW = """(el) => {
  const r = el.getBoundingClientRect();
  return r.top >= 0 && r.bottom <= window.innerHeight && r.left >= 0
    && r.right <= window.innerWidth;
}"""


@pytest.fixture
def revealed(page, login, media_root):
    world = build_world(n=1, experts=1, with_files=True)
    review_round = make_round_with_saliency(world)
    add_explanation(world, world.instances[0], quadrant_map())
    open_review(page, login, world.experts[0], review_round)
    page.keyboard.press("1")
    page.keyboard.press("Shift+Digit3")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("prediction")).to_be_visible()
    return world


def test_a_refused_verdict_focuses_the_first_field_in_error(page, revealed):
    page.keyboard.press("i")  # incorrect: acceptability, severity and reason are asked
    page.keyboard.press("x")
    page.evaluate("window.scrollTo(0, 0)")
    page.keyboard.press("Enter")  # none of the three answered: the server says 400

    message = page.locator("#field-error-acceptable")
    expect(message).to_contain_text("say whether it is acceptable")
    expect(page.locator("#error")).to_contain_text("see the message next to Acceptable")
    first = page.locator('input[name="acceptable"]').first
    expect(first).to_be_focused()
    assert first.evaluate(IN_VIEW)
    assert message.evaluate(IN_VIEW)
    expect(first).to_have_attribute("aria-invalid", "true")
    assert "field-error-acceptable" in first.get_attribute("aria-describedby")
    assert not Review.objects.filter(submitted_at__isnull=False).exists()

    page.keyboard.press("y")  # fixing the field clears its message and the summary
    expect(message).to_have_count(0)
    expect(page.locator("#error")).to_be_hidden()
    expect(first).not_to_have_attribute("aria-invalid", "true")

    page.keyboard.press("Enter")  # the next missing answer
    expect(page.locator("#field-error-severity")).to_contain_text("severity")
    expect(page.locator('input[name="severity"]').first).to_be_focused()
    page.keyboard.press("2")
    expect(page.locator("#field-error-severity")).to_have_count(0)
    page.keyboard.press("Shift+Digit1")
    page.keyboard.press("Enter")
    expect(page.locator("#done")).to_be_visible()
    review = Review.objects.get()
    assert (review.acceptable, review.severity, review.reason) == (True, 2, "ambiguous_case")


def test_the_servers_comment_message_is_shown_next_to_the_comment(page, revealed):
    """The server refuses text over its limit with a 400 naming the field (the page's own
    check uses the same limit, so here the answer is made up: a stricter server)."""
    body = {"comment": ["At most 10 characters; this has 12. Nothing was saved."]}
    page.route(
        "**/verdict",
        lambda route: route.fulfill(
            status=400, content_type="application/json", body=json.dumps(body)
        ),
    )
    page.keyboard.press("c")
    page.keyboard.press("r")
    page.keyboard.press("t")
    page.keyboard.type("twelve chars")
    page.keyboard.press("Escape")
    page.evaluate("window.scrollTo(0, 0)")
    page.keyboard.press("Enter")

    message = page.locator("#field-error-comment")
    expect(message).to_have_text(body["comment"][0])
    expect(page.locator("#comment")).to_be_focused()
    assert page.locator("#comment").evaluate(IN_VIEW)
    expect(page.locator("#comment")).to_have_value("twelve chars")
    page.unroute("**/verdict")

    page.keyboard.press("Backspace")  # any change to the field clears the server's message
    expect(message).to_have_count(0)
    page.keyboard.press("Control+Enter")
    expect(page.locator("#done")).to_be_visible()
    assert Review.objects.get().comment == "twelve char"
