"""My reviews in Chromium: from the navigation to the list, Edit, change the verdict with the
keyboard alone, Enter saves and leads back to the list with the new version; a save the
service refuses shows the message next to the field and keeps what was typed."""

from __future__ import annotations

import re

import pytest

from annotations.models import Review
from annotations.services import reviews
from tests.annotations.review_fixtures import EXPECTATION, VERDICT, build_world, make_round

pytestmark = pytest.mark.django_db(transaction=True)


def test_edit_a_review_with_the_keyboard(page, login):
    world = build_world(n=2, experts=1, with_files=True)
    [expert] = world.experts
    review_round = make_round(world)
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
    reviews.verdict_submit(task=task, expert=expert, data=VERDICT)
    review = Review.objects.get(task=task)

    login(page, expert.username)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="My reviews").click()
    page.wait_for_url("**/reviews/mine/")
    row = page.locator(f'tr[data-review="{review.pk}"]')
    assert row.get_by_text("Prediction incorrect").is_visible()
    # The thumbnail comes through the task image API and loads.
    thumb = row.locator("img.thumb")
    thumb.scroll_into_view_if_needed()
    loaded = "img => img.complete && img.naturalWidth > 0"
    page.wait_for_function(loaded, arg=thumb.element_handle())

    row.get_by_role("link", name="Edit").click()
    page.wait_for_url(re.compile(rf".*/reviews/{review.pk}/edit/\?next=.*"))
    # Blind-first: the expectation is shown, not editable.
    assert page.get_by_label("Expected label").count() == 0
    assert page.locator('dd[data-field="expected_label"]').inner_text() == "cat"

    # A refused save: the error sits next to its field, the typed comment stays.
    page.get_by_label("Severity").focus()
    page.keyboard.press("Home")  # the blank choice
    page.get_by_label("Comment").fill("typed before the error")
    page.get_by_label("Severity").focus()
    with page.expect_navigation():
        page.keyboard.press("Enter")
    alert = page.locator(".form-alert")
    assert alert.evaluate("el => el === document.activeElement")
    severity_group = page.locator("div", has=page.get_by_label("Severity")).last
    assert "Give the severity" in severity_group.inner_text()
    assert page.get_by_label("Comment").input_value() == "typed before the error"

    # Now with the keyboard alone: tab to the verdict, choose, Enter saves.
    page.get_by_label("Severity").focus()
    page.keyboard.press("End")  # severity 4
    page.get_by_label("Verdict on the prediction").focus()
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.name") == "prediction_verdict"
    with page.expect_navigation(url=re.compile(r".*/reviews/mine/$")):
        page.keyboard.press("Enter")
    assert page.get_by_text("Review saved (version 2).").is_visible()
    review.refresh_from_db()
    assert (review.version, review.severity, review.comment) == (2, 4, "typed before the error")
    assert review.expected_label == "cat"
