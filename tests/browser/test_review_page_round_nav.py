"""Where the expert stands in the round, on the review page: "n of m left" from the progress
API, updated after each submit and skip, and "Previous" (link or ``l``) to the edit page of
the expert's last submitted review of the round, disabled until there is one."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from playwright.sync_api import expect

from annotations.models import Review, ReviewDraft
from tests.annotations.review_fixtures import build_world, make_round
from tests.browser.test_review_page import open_review

pytestmark = pytest.mark.django_db(transaction=True)


def review_by_keyboard(page) -> None:
    """Expectation and verdict of the task shown (no saliency in this round)."""
    task = page.locator("#workspace").get_attribute("data-task-id")
    for key in ["1", "Shift+Digit3", "Enter"]:
        page.keyboard.press(key)
    expect(page.get_by_test_id("prediction")).to_be_visible()
    for key in ["c", "r", "Enter"]:
        page.keyboard.press(key)
    expect(page.locator("#workspace")).not_to_have_attribute("data-task-id", task)
    expect(page.locator("#status")).to_have_text("Submitted. Next image loaded.")


def test_images_left_and_previous_review(page, login, media_root):
    world = build_world(n=3, experts=2, with_files=True)
    review_round = make_round(world, overlap=1)
    expert = world.experts[0]
    open_review(page, login, expert, review_round)
    left = page.get_by_test_id("left")
    previous = page.locator("#previous")
    expect(left).to_have_text("3 of 3 images left for you")
    expect(previous).to_have_attribute("aria-disabled", "true")
    assert previous.get_attribute("href") is None  # not a link, not a Tab stop
    page.keyboard.press("l")
    expect(page.locator("#status")).to_contain_text("No previous review")
    assert page.url.endswith(f"/rounds/{review_round.pk}/review/")

    review_by_keyboard(page)
    expect(left).to_have_text("2 of 3 images left for you")
    first = Review.objects.get(expert=expert)
    back = quote(f"/rounds/{review_round.pk}/review/", safe="")
    expect(previous).to_have_attribute("href", f"/reviews/{first.pk}/edit/?next={back}")
    expect(previous).not_to_have_attribute("aria-disabled", "true")

    # Another expert takes the last image meanwhile: it is no longer left for this one.
    other = world.client(world.experts[1])
    assert other.post(f"/api/rounds/{review_round.pk}/tasks/next").status_code == 200
    page.keyboard.press("s")
    page.keyboard.press("Enter")  # skip, first reason
    expect(left).to_have_text("0 of 3 images left for you")
    expect(page.locator("#done")).to_be_visible()
    # Done, and "Previous" still leads back to the last review.
    expect(previous).to_have_attribute("href", re.compile(rf"/reviews/{first.pk}/edit/"))


def test_previous_by_keyboard_saves_the_draft_first(page, login, media_root):
    world = build_world(n=3, experts=1, with_files=True)
    review_round = make_round(world)
    expert = world.experts[0]
    open_review(page, login, expert, review_round)
    review_by_keyboard(page)
    review_by_keyboard(page)
    latest = Review.objects.filter(expert=expert).latest("submitted_at")
    expect(page.get_by_test_id("left")).to_have_text("1 of 3 images left for you")
    expect(page.locator("#previous")).to_have_attribute(
        "href", re.compile(rf"/reviews/{latest.pk}/edit/\?next=")
    )

    page.keyboard.press("2")  # typed on the current task, not yet saved (debounced)
    page.keyboard.press("l")
    page.wait_for_url(re.compile(rf"/reviews/{latest.pk}/edit/\?next="))
    task_instance = Review.objects.filter(expert=expert).values_list("instance", flat=True)
    draft = ReviewDraft.objects.exclude(instance__in=list(task_instance)).get(expert=expert)
    assert draft.data["expected_label"] == "dog"  # saved before leaving


def test_previous_is_reachable_with_tab(page, login, media_root):
    world = build_world(n=2, experts=1, with_files=True)
    review_round = make_round(world)
    open_review(page, login, world.experts[0], review_round)
    review_by_keyboard(page)
    previous = page.locator("#previous")
    expect(previous).to_have_attribute("href", re.compile("/edit/"))
    # The first Tab stop after the main content's start (the status row's only control).
    page.locator("#main").focus()
    page.keyboard.press("Tab")
    expect(previous).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/reviews/\d+/edit/\?next="))
