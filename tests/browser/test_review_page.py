"""The review page in a real browser: blind-first by keyboard alone, one task per expert,
submits that survive a dropped connection, an expired lease, drawing in image pixels, and
the tablet layout."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone
from playwright.sync_api import expect

from annotations.models import Review, ReviewTask, TaskSkip, TaskStatus
from annotations.services import reviews
from tests.annotations.review_fixtures import (
    add_explanation,
    build_world,
    make_round_with_saliency,
)

pytestmark = pytest.mark.django_db(transaction=True)


def quadrant_map(size: int = 32) -> np.ndarray:
    """High attribution on the top-left quarter of the image, none elsewhere."""
    values = np.zeros((size, size))
    values[: size // 2, : size // 2] = 1.0
    return values


@pytest.fixture
def one_task(media_root):
    """One expert, one image (predicted 'cat', labelled 'cat'), its saliency map computed."""
    world = build_world(n=1, experts=1, with_files=True)
    review_round = make_round_with_saliency(world)
    add_explanation(world, world.instances[0], quadrant_map())
    return world, review_round


def open_review(page, login, user, review_round) -> None:
    login(page, user.username)
    page.goto(f"/rounds/{review_round.pk}/review/")
    expect(page.locator("#workspace")).to_be_visible()
    expect(page.locator("#status")).to_have_text("Ready.")


def test_blind_first_review_by_keyboard_alone(page, login, one_task):
    world, review_round = one_task
    open_review(page, login, world.experts[0], review_round)

    # Blind-first: the model's view is nowhere in the page before the expectation.
    assert page.get_by_test_id("prediction").count() == 0
    assert page.get_by_test_id("top-classes").count() == 0
    assert page.locator("#reveal").inner_html() == ""
    assert "80%" not in page.content()

    kb = page.keyboard
    kb.press("2")  # dog: label by number key
    kb.press("Shift+Digit4")  # confidence 4
    kb.press("t")  # into the tag field
    # Typed text is not shortcuts: "whiskers" holds s (skip) and i, e, r, k (verdict keys),
    # the comment below holds o, k, s, e; the asserts at the end would catch any of them.
    kb.type("FUR")
    kb.press("Enter")  # a concept (matched to the vocabulary's "fur")
    kb.type("whiskers")
    kb.press("Enter")  # a free tag
    kb.press("Escape")  # out of the field, so keys are shortcuts again
    kb.press("Enter")  # submit the expectation

    expect(page.get_by_test_id("prediction")).to_contain_text("cat")
    bars = page.get_by_test_id("top-classes").locator("li")
    expect(bars).to_have_count(3)
    expect(bars.first).to_contain_text("80%")
    expect(page.get_by_test_id("ground-truth")).to_have_text("cat")
    expect(page.locator("#saliency-tools")).to_be_visible()

    for key in ["i", "x", "n", "3", "Shift+Digit3"]:
        kb.press(key)
    expect(page.locator('input[name="reason"][value="rare_case"]')).to_be_checked()
    kb.press("t")
    kb.type("looks like a dog")
    kb.press("Escape")
    kb.press("Enter")

    expect(page.locator("#done")).to_be_visible()
    review = Review.objects.get()
    assert review.submitted_at is not None
    assert (review.expected_label, review.expected_confidence) == ("dog", 4)
    assert (review.concepts, review.free_tags) == (["fur"], ["whiskers"])
    assert review.prediction_verdict == "incorrect"
    assert review.feature_verdict == "irrelevant"
    assert (review.acceptable, review.severity, review.reason) == (False, 3, "rare_case")
    assert review.comment == "looks like a dog"
    assert review.client_seconds is not None
    assert review.client_seconds > 0
    assert ReviewTask.objects.get().status == TaskStatus.SUBMITTED


def test_second_expert_gets_another_task(page, browser, live_server, login, media_root):
    world = build_world(n=2, experts=2, with_files=True)
    review_round = make_round_with_saliency(world, overlap=1)
    open_review(page, login, world.experts[0], review_round)
    first = page.locator("#workspace").get_attribute("data-task-id")

    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=live_server.url)
    try:
        other = context.new_page()
        open_review(other, login, world.experts[1], review_round)
        second = other.locator("#workspace").get_attribute("data-task-id")
    finally:
        context.close()

    assert first != second
    held = dict(ReviewTask.objects.filter(status=TaskStatus.LEASED).values_list("pk", "expert"))
    assert held == {int(first): world.experts[0].pk, int(second): world.experts[1].pk}


@pytest.mark.parametrize("lost", ["request", "response"])
def test_a_dropped_connection_loses_nothing_and_submits_once(page, login, one_task, lost):
    """``request``: the POST never reaches the server; ``response``: the server acts and the
    answer is lost on the way back. Either way the page retries with the same key."""
    world, review_round = one_task
    open_review(page, login, world.experts[0], review_round)
    page.keyboard.press("1")
    page.keyboard.press("Shift+Digit5")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("prediction")).to_be_visible()

    keys: list[str | None] = []
    page.on(
        "request",
        lambda r: (
            keys.append(r.headers.get("idempotency-key"))
            if r.method == "POST" and r.url.endswith("/verdict")
            else None
        ),
    )

    def drop(route):
        if lost == "response":
            route.fetch()  # the server handles it; the browser never hears back
        route.abort("connectionreset")

    page.route("**/verdict", drop)
    for key in ["c", "r"]:
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_contain_text("Offline — retrying")
    expect(page.locator("#done")).to_be_hidden()
    page.unroute("**/verdict")

    expect(page.locator("#done")).to_be_visible(timeout=20_000)
    assert Review.objects.filter(submitted_at__isnull=False).count() == 1
    review = Review.objects.get()
    assert (review.prediction_verdict, review.feature_verdict) == ("correct", "relevant")
    assert len(keys) >= 2
    assert len(set(keys)) == 1
    assert keys[0]


def test_an_expired_lease_keeps_the_draft_and_offers_the_next_task(page, login, one_task):
    world, review_round = one_task
    open_review(page, login, world.experts[0], review_round)
    page.keyboard.press("3")
    expect(page.locator("#status")).to_have_text("Saved")
    ReviewTask.objects.update(lease_expires_at=timezone.now() - timedelta(seconds=1))

    page.keyboard.press("Shift+Digit2")
    page.keyboard.press("Enter")
    expect(page.locator("#error")).to_contain_text("expired")
    expect(page.locator("#error")).to_contain_text("draft is kept")
    expect(page.locator("#next-after-expiry")).to_be_focused()

    page.keyboard.press("Enter")  # the button: the same image comes back, draft and all
    expect(page.locator("#status")).to_have_text("Ready.")
    expect(page.locator('input[name="expected_label"][value="bird"]')).to_be_checked()


def test_a_closed_round_says_so_and_saves_nothing(page, login, one_task):
    world, review_round = one_task
    open_review(page, login, world.experts[0], review_round)
    reviews.round_close(review_round=review_round)
    page.keyboard.press("1")
    page.keyboard.press("Shift+Digit3")
    page.keyboard.press("Enter")
    expect(page.locator("#status")).to_have_text("Round closed.")
    expect(page.locator("#error")).to_contain_text("Round: This round is closed")
    expect(page.locator("#next-after-expiry")).to_be_hidden()
    assert not Review.objects.exists()


def test_drawing_a_box_records_image_pixels_and_shows_the_alignment(page, login, one_task):
    world, review_round = one_task
    open_review(page, login, world.experts[0], review_round)
    box = page.locator("#canvas").bounding_box()
    # The page fits the 32 x 32 image into the canvas, centred (review.js, fit()).
    scale = min(box["width"], box["height"]) / 32 * 0.98
    left = box["x"] + (box["width"] - 32 * scale) / 2
    top = box["y"] + (box["height"] - 32 * scale) / 2

    def at(x: float, y: float) -> tuple[float, float]:
        return left + x * scale, top + y * scale

    page.mouse.move(*at(4, 4))
    page.mouse.down()
    page.mouse.move(*at(12, 8), steps=3)
    page.mouse.move(*at(20, 12), steps=3)
    page.mouse.up()
    expect(page.locator("#regions li")).to_have_count(1)
    # A polygon: click points, Enter closes it; u undoes it again.
    page.keyboard.press("p")
    for x, y in [(24, 24), (30, 24), (27, 30)]:
        page.mouse.click(*at(x, y))
    page.keyboard.press("Enter")
    expect(page.locator("#regions li")).to_have_count(2)
    expect(page.locator("#regions li").nth(1)).to_contain_text("Polygon of 3 points")
    page.keyboard.press("u")
    expect(page.locator("#regions li")).to_have_count(1)
    page.locator('input[name="expected_label"][value="cat"]').check()
    page.locator('input[name="expected_confidence"][value="3"]').check()
    page.get_by_role("button", name="Submit expectation").click()

    alignment = page.get_by_test_id("alignment")
    expect(alignment).to_be_visible()
    [(x0, y0), (x1, y1)] = Review.objects.get().evidence[0]["points"]
    assert (x0, y0, x1, y1) == pytest.approx((4, 4, 20, 12), abs=0.3)
    # E: 16 x 8 cells, S: the 16 x 16 quarter, shared 12 x 8 (explain_worker.alignment).
    expect(alignment).to_contain_text("0.33")
    expect(alignment).to_contain_text("75% lie in")
    expect(alignment).to_contain_text("38% of the model")


def test_tablet_width_stacks_the_panels(page, login, one_task):
    world, review_round = one_task
    page.set_viewport_size({"width": 800, "height": 1000})
    open_review(page, login, world.experts[0], review_round)
    for selector in ["#viewport", "#label-choices", "#status", ".shortcuts", "#expectation-submit"]:
        expect(page.locator(selector)).to_be_visible()
    stage = page.locator(".stage").bounding_box()
    panel = page.locator(".panel").bounding_box()
    assert panel["y"] >= stage["y"] + stage["height"] - 1  # stacked, image first
    assert stage["width"] <= 800
    assert panel["width"] <= 800
    assert page.evaluate("document.documentElement.scrollWidth") <= 800


def test_skip_with_a_reason_by_keyboard(page, login, media_root):
    world = build_world(n=2, experts=1, with_files=True)
    review_round = make_round_with_saliency(world)
    open_review(page, login, world.experts[0], review_round)
    first = int(page.locator("#workspace").get_attribute("data-task-id"))

    page.keyboard.press("s")
    expect(page.locator("#skip-dialog")).to_be_visible()
    page.keyboard.press("ArrowDown")  # the second reason
    page.keyboard.press("Enter")

    expect(page.locator("#workspace")).not_to_have_attribute("data-task-id", str(first))
    skip = TaskSkip.objects.get()
    assert skip.reason == "Image unclear or damaged"
    assert skip.instance_id == ReviewTask.objects.get(pk=first).instance_id


def test_saliency_still_computing_is_said_and_polled(page, login, media_root):
    world = build_world(n=1, experts=1, with_files=True)
    review_round = make_round_with_saliency(world)
    open_review(page, login, world.experts[0], review_round)
    page.keyboard.press("1")
    page.keyboard.press("Shift+Digit2")
    page.keyboard.press("Enter")
    expect(page.locator("#saliency-note")).to_contain_text("still being computed")
    expect(page.locator("#saliency-tools")).to_be_hidden()

    add_explanation(world, world.instances[0], quadrant_map())  # the worker finishes

    expect(page.locator("#saliency-tools")).to_be_visible(timeout=15_000)
    expect(page.locator("#saliency-note")).to_be_hidden()
    expect(page.locator("#saliency-legend")).to_be_visible()
