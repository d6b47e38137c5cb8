"""Scientist pages in a real browser: creating a round from the form with the live sampler
preview, following its progress, and opening a confusion-matrix cell's thumbnails."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from annotations.models import ReviewRound
from annotations.services import reviews
from tests.annotations.review_fixtures import EXPECTATION, VERDICT, add_saliency, build_world

pytestmark = pytest.mark.django_db(transaction=True)


def test_scientist_creates_a_round_and_follows_its_progress(page, login, media_root):
    # build_world: 6 test instances, 3 errors each in its own confusion cell, 3 correct.
    world = build_world(n=6, experts=2, with_files=True)
    login(page, world.scientist.username)
    page.goto(f"/projects/{world.project.pk}/")
    page.get_by_role("link", name="Start a new round").click()
    expect(page.get_by_role("heading", name="New review round")).to_be_visible()

    page.get_by_label("Round name").fill("errors and controls")
    # The default strategy: errors per cell (5), confident errors (>= 0.9), control (20).
    # Every confidence here is 0.8, so the live preview must say the second part adds none.
    part1 = page.locator("[data-part-row]").nth(0)
    part2 = page.locator("[data-part-row]").nth(1)
    part3 = page.locator("[data-part-row]").nth(2)
    expect(part1.locator("[data-part-output]")).to_have_text("Chooses 3, adds 3")
    expect(part2.locator("[data-part-output]")).to_have_text("Chooses 0, adds 0")
    expect(part3.locator("[data-part-output]")).to_have_text("Chooses 3, adds 3")
    expect(page.locator("[data-preview-total]")).to_have_text("The round would hold 6 instances.")

    # The builder: drop the confident errors, cap the control sample at one.
    part2.get_by_role("button", name=re.compile("Remove part")).click()
    expect(part2).to_be_hidden()
    part3.get_by_label("How many").fill("1")
    expect(part3.locator("[data-part-output]")).to_have_text("Chooses 1, adds 1")
    expect(page.locator("[data-preview-total]")).to_have_text("The round would hold 4 instances.")
    # A bad value is reported on its part as the form changes.
    part1.get_by_label("Per cell").fill("0")
    expect(part1.locator("[data-part-output]")).to_contain_text("per_cell")
    part1.get_by_label("Per cell").fill("2")
    expect(part1.locator("[data-part-output]")).to_have_text("Chooses 3, adds 3")

    page.get_by_label("Saliency shown").select_option("")
    page.get_by_role("button", name="Create round").click()

    expect(page.get_by_role("heading", name="errors and controls")).to_be_visible()
    review_round = ReviewRound.objects.get(name="errors and controls")
    assert page.url.endswith(f"/rounds/{review_round.pk}/")
    assert [p["kind"] for p in review_round.sampling["parts"]] == ["confusion_quota", "control"]
    assert review_round.sampling["parts"][1]["n"] == 1
    assert set(review_round.experts.all()) == set(world.experts)
    expect(page.locator("#progress-label")).to_have_text("0 of 4 reviews submitted")

    expert = world.experts[0]
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
    reviews.verdict_submit(task=task, expert=expert, data=VERDICT)
    page.reload()
    expect(page.locator("#progress-label")).to_have_text("1 of 4 reviews submitted")
    row = page.get_by_role("row", name=re.compile(expert.username))
    expect(row.get_by_role("cell").nth(2)).to_have_text("1")  # submitted


def test_a_confusion_matrix_cell_shows_its_thumbnails(page, login, media_root):
    world = build_world(n=6, experts=0, with_files=True)
    add_saliency(world)
    login(page, world.approver.username)
    page.goto(f"/model-versions/{world.mv.pk}/matrix/")
    heatmap = page.locator("table.heatmap")
    expect(heatmap).to_be_visible()

    # Keyboard reachable: the cell is a link with a name saying what it holds.
    cell = page.get_by_role("link", name=re.compile(r"true dog, predicted bird: 1"))
    cell.focus()
    page.keyboard.press("Enter")

    expect(page.get_by_role("heading", name=re.compile("True dog, predicted bird"))).to_be_visible()
    thumbs = page.locator(".thumbs li")
    expect(thumbs).to_have_count(1)
    dog_as_bird = world.instances[1]
    # The instance page, inside this cell's list (previous / next).
    expect(thumbs.get_by_role("link")).to_have_attribute(
        "href", re.compile(rf"^/instances/{dog_as_bird.pk}/\?from=cell&")
    )
    for alt in (f"instance {dog_as_bird.pk}", "saliency for bird"):
        image = thumbs.get_by_role("img", name=alt)
        expect(image).to_be_visible()
        # Served for real: the browser decoded an image.
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=image.element_handle()
        )
    assert "pred=bird" in page.url
    expect(heatmap.locator("a[aria-current=true]")).to_have_count(1)
