"""The review page's text limits in a real browser: the comment's counter, an over-limit
comment refused before the submit with nothing lost (field, draft, reload), a free tag over
its limit refused when added, and the skip reason's limit."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from annotations import limits
from annotations.models import Review, ReviewDraft, TaskSkip
from tests.annotations.review_fixtures import (
    add_explanation,
    build_world,
    make_round_with_saliency,
)
from tests.browser.test_review_page import open_review, quadrant_map

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def one_task(media_root):
    world = build_world(n=1, experts=1, with_files=True)
    review_round = make_round_with_saliency(world)
    add_explanation(world, world.instances[0], quadrant_map())
    return world, review_round


def reveal(page) -> None:
    page.keyboard.press("1")
    page.keyboard.press("Shift+Digit3")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("prediction")).to_be_visible()


def test_an_over_limit_comment_is_counted_refused_and_kept(page, login, one_task):
    world, review_round = one_task
    assert limits.text_limits_for_pages()["comment"] == 5000  # the figures below
    open_review(page, login, world.experts[0], review_round)
    reveal(page)
    page.keyboard.press("c")
    page.keyboard.press("r")

    counter = page.locator("#comment-count")
    expect(counter).to_have_text("0 / 5,000 characters")
    page.keyboard.press("t")
    expect(page.locator("#comment")).to_be_focused()
    page.locator("#comment").fill("x" * 4990)
    expect(counter).to_have_text("4,990 / 5,000 characters")
    expect(counter).not_to_have_class("counter over")
    page.keyboard.type("y" * 20)
    expect(counter).to_have_text("5,010 / 5,000 characters: 10 too many")
    expect(counter).to_have_class("counter over")
    text = "x" * 4990 + "y" * 20

    page.keyboard.press("Control+Enter")  # submit from the field
    message = page.locator("#field-error-comment")
    expect(message).to_contain_text("At most 5,000 characters; this has 5,010.")
    expect(page.locator("#comment")).to_be_focused()
    expect(page.locator("#comment")).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#comment")).to_have_value(text)
    # The draft has it all (saved by the debounce or by the refusal, whichever came first).
    for _ in range(50):
        draft = ReviewDraft.objects.first()
        if draft is not None and draft.data.get("comment") == text:
            break
        page.wait_for_timeout(100)
    assert ReviewDraft.objects.get().data["comment"] == text
    assert not Review.objects.filter(submitted_at__isnull=False).exists()

    # Nothing lost on a reload either: the draft brings the text and the count back.
    page.reload()
    expect(page.locator("#status")).to_have_text("Ready.")
    expect(page.locator("#comment")).to_have_value(text)
    expect(counter).to_have_text("5,010 / 5,000 characters: 10 too many")

    # Still too long after an edit: the message stays; once it fits, it goes.
    page.locator("#comment").focus()
    page.keyboard.press("End")
    page.keyboard.press("Backspace")
    expect(message).to_be_hidden()  # reloaded: the refusal has not been repeated
    page.keyboard.press("Control+Enter")
    expect(message).to_contain_text("this has 5,009")
    for _ in range(9):
        page.keyboard.press("Backspace")
    expect(counter).to_have_text("5,000 / 5,000 characters")
    expect(message).to_have_count(0)
    page.keyboard.press("Control+Enter")
    expect(page.locator("#done")).to_be_visible()
    review = Review.objects.get()
    assert review.comment == "x" * 4990 + "y" * 10


def test_a_free_tag_over_its_limit_is_refused_when_added(page, login, one_task):
    world, review_round = one_task
    open_review(page, login, world.experts[0], review_round)
    page.keyboard.press("t")
    long_tag = "w" * 101
    page.keyboard.insert_text(long_tag)
    page.keyboard.press("Enter")
    message = page.locator("#field-error-free_tags")
    expect(message).to_contain_text("at most 100 characters; this one has 101")
    expect(page.locator("#tags li")).to_have_count(0)
    expect(page.locator("#tag-input")).to_have_value(long_tag)  # kept for shortening
    expect(page.locator("#tag-input")).to_be_focused()

    # Submitting with the long tag still typed is refused too; the field keeps it.
    page.keyboard.press("Escape")
    page.keyboard.press("1")
    page.keyboard.press("Shift+Digit3")
    page.keyboard.press("Enter")
    expect(message).to_be_visible()
    expect(page.locator("#tag-input")).to_be_focused()
    expect(page.locator("#tag-input")).to_have_value(long_tag)
    assert not Review.objects.exists()

    page.keyboard.press("Backspace")  # 100 characters: accepted
    expect(message).to_have_count(0)
    page.keyboard.press("Enter")
    expect(page.locator("#tags li")).to_have_count(1)
    expect(page.locator("#tag-input")).to_have_value("")
    page.keyboard.press("Escape")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("prediction")).to_be_visible()
    assert Review.objects.get().free_tags == ["w" * 100]


def test_the_skip_reason_has_a_counter_and_its_limit(page, login, one_task):
    world, review_round = one_task
    open_review(page, login, world.experts[0], review_round)
    page.keyboard.press("s")
    other = page.locator("#skip-other")
    other.focus()
    page.keyboard.insert_text("z" * 501)  # no maxlength: nothing is cut off silently
    expect(page.locator("#skip-other-count")).to_have_text("501 / 500 characters: 1 too many")
    page.locator("#skip-confirm").click()
    expect(page.locator("#skip-dialog")).to_be_visible()
    expect(page.locator("#skip-error")).to_contain_text("At most 500 characters; this has 501.")
    expect(other).to_have_value("z" * 501)
    expect(other).to_be_focused()
    assert not TaskSkip.objects.exists()

    page.keyboard.press("Backspace")
    expect(page.locator("#skip-error")).to_have_count(0)
    page.locator("#skip-confirm").click()
    expect(page.locator("#done")).to_be_visible()
    assert TaskSkip.objects.get().reason == "z" * 500
