"""The review page's layout at 1280x800 (side by side) and 1024x768 (stacked): scrolled to
the bottom, the sticky image column covers none of the other boxes and the sticky action bar
none of the fields; at 1280x800 the verdict's submit button is in the window wherever the
page is scrolled. Screenshots go to var/test-artifacts/review-layout/."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.annotations.review_fixtures import (
    add_explanation,
    build_world,
    make_round_with_saliency,
)
from tests.browser.test_review_page import open_review, quadrant_map

pytestmark = pytest.mark.django_db(transaction=True)

ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts" / "review-layout"

# Boxes of the page in viewport coordinates, visible ones only.
RECTS = """() => {
  const box = (el) => {
    const r = el.getBoundingClientRect();
    const name = el.id || el.className || el.tagName;
    return {x: r.left, y: r.top, w: r.width, h: r.height, name};
  };
  const shown = (el) => el.getClientRects().length > 0 && !el.closest('[hidden]');
  const all = (sel) => [...document.querySelectorAll(sel)].filter(shown).map(box);
  const one = (sel) => {
    const el = document.querySelector(sel);
    return el && shown(el) ? box(el) : null;
  };
  return {
    stage: one('.stage'),
    panel: one('.panel'),
    actionBar: one('#action-bar') || one('#verdict-submit') || one('#expectation-submit'),
    // Everything outside the image column that it must never cover.
    others: all('.review-head, .panel, .shortcuts, .panel > *, .shortcuts > *'),
    // The answers the action bar must never cover (when the page is at its end).
    fields: all(
      '.panel fieldset, .panel [data-field], .panel .counter, #reveal, #expectation-summary'),
    submit: one('#verdict-submit') || one('#expectation-submit'),
    scrollY: window.scrollY,
    maxScroll: document.documentElement.scrollHeight - window.innerHeight,
    viewport: {w: window.innerWidth, h: window.innerHeight},
  };
}"""


def overlap(a: dict, b: dict) -> float:
    """The area two boxes share (0 when they only touch)."""
    w = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
    h = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
    return max(0.0, w) * max(0.0, h)


def check_bottom(page, name: str) -> dict:
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    page.wait_for_timeout(100)  # a frame for sticky positions
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    rects = page.evaluate(RECTS)
    assert rects["scrollY"] >= rects["maxScroll"] - 1, rects  # at the end of the page
    stage = rects["stage"]
    covered = [(o["name"], overlap(stage, o)) for o in rects["others"] if overlap(stage, o) > 1]
    assert covered == [], (name, stage, covered)
    bar = rects["actionBar"]
    hidden = [(f["name"], overlap(bar, f)) for f in rects["fields"] if overlap(bar, f) > 1]
    assert hidden == [], (name, bar, hidden)
    return rects


def in_window(rect: dict, viewport: dict) -> bool:
    return (
        rect["y"] >= 0
        and rect["y"] + rect["h"] <= viewport["h"]
        and rect["x"] >= 0
        and rect["x"] + rect["w"] <= viewport["w"]
    )


# The point at the button's centre hits the button: nothing is drawn over it.
ON_TOP = """(el) => {
  const r = el.getBoundingClientRect();
  const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return el === hit || el.contains(hit);
}"""


@pytest.fixture
def one_task(media_root):
    world = build_world(n=1, experts=1, with_files=True)
    review_round = make_round_with_saliency(world)
    add_explanation(world, world.instances[0], quadrant_map())
    return world, review_round


@pytest.mark.parametrize(("width", "height"), [(1280, 800), (1024, 768)])
def test_nothing_covers_anything_at_the_bottom_of_the_page(page, login, one_task, width, height):
    world, review_round = one_task
    page.set_viewport_size({"width": width, "height": height})
    open_review(page, login, world.experts[0], review_round)
    size = f"{width}x{height}"

    # Phase 1 with a few regions listed under the image.
    page.locator("#add-box summary").click()
    for n in range(4):
        for name, value in zip(["x0", "y0", "x1", "y1"], [n, n, 10 + n, 12 + n], strict=True):
            page.locator(f'#add-box-form input[name="{name}"]').fill(str(value))
        page.locator("#add-box-form button").click()
    expect(page.locator("#regions li")).to_have_count(4)
    check_bottom(page, f"review-expectation-{size}-bottom")

    # Phase 2: the reveal and the verdict's questions make the panel long.
    page.locator('input[name="expected_label"][value="cat"]').check()
    page.locator('input[name="expected_confidence"][value="3"]').check()
    page.locator("#expectation-submit").click()
    expect(page.get_by_test_id("alignment")).to_be_visible()
    page.locator('input[name="prediction_verdict"][value="incorrect"]').check()  # + acceptability
    rects = check_bottom(page, f"review-verdict-{size}-bottom")
    assert rects["submit"] is not None
    assert in_window(rects["submit"], rects["viewport"])

    if width >= 1025:
        # Side by side: the verdict's submit is in the window at the top of the page, half
        # way down and at the end, with nothing over it.
        submit = page.locator("#verdict-submit")
        for y in ["0", "document.documentElement.scrollHeight / 2"]:
            page.evaluate(f"window.scrollTo(0, {y})")
            page.wait_for_timeout(100)
            assert in_window(page.evaluate(RECTS)["submit"], {"w": width, "h": height}), y
            assert submit.evaluate(ON_TOP), y
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / f"review-verdict-{size}-top.png"))
