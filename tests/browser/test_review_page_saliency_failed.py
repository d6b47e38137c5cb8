"""A failed explanation job on the review page: the task payload says ``saliency.failed``
(annotations/api/review_serializers.py, from the newest explain job covering the instance),
and the page says the map is unavailable and why, stops polling, and takes the verdict
anyway ("can't tell" included)."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from annotations.models import Job, JobKind, Review
from annotations.services import explanations
from annotations.services.jobs import job_fail
from tests.annotations.review_fixtures import build_world, make_round_with_saliency
from tests.browser.test_review_page import open_review

pytestmark = pytest.mark.django_db(transaction=True)

REASON = "RuntimeError: CUDA out of memory"


def fail_the_map(world) -> None:
    """The round's explain job for the instance failed, as a worker records it."""
    spec = explanations.explain_spec(model_version=world.mv, method="gradcam")
    job = Job.objects.create(
        project=world.project,
        kind=JobKind.EXPLAIN,
        model_version=world.mv,
        params=spec.job_params() | {"instance_ids": [world.instances[0].pk], "split": None},
    )
    job_fail(job=job, error=REASON)


@pytest.mark.parametrize("when", ["before the reveal", "while the page polls"])
def test_a_failed_saliency_job_is_said_and_not_polled_for(page, login, media_root, when):
    world = build_world(n=1, experts=1, with_files=True)
    review_round = make_round_with_saliency(world)
    if when == "before the reveal":
        fail_the_map(world)
    open_review(page, login, world.experts[0], review_round)
    polls: list[str] = []
    page.on(
        "request",
        lambda r: polls.append(r.url) if r.method == "GET" and "/api/tasks/" in r.url else None,
    )
    page.keyboard.press("1")
    page.keyboard.press("Shift+Digit2")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("prediction")).to_be_visible()
    note = page.locator("#saliency-note")
    if when == "while the page polls":
        expect(note).to_contain_text("still being computed")
        fail_the_map(world)  # the worker gives up while the expert looks

    failed = page.get_by_test_id("saliency-failed")
    expect(failed).to_contain_text(f"The saliency map is unavailable: {REASON}.", timeout=15_000)
    expect(failed).to_contain_text("Give your verdict anyway")
    expect(note).to_have_text("Saliency map unavailable: its computation failed.")
    expect(page.locator("#saliency-tools")).to_be_hidden()
    expect(page.locator("#saliency-legend")).to_be_hidden()
    expect(page.locator("#reveal")).to_contain_text("No alignment")

    # No more polling: the page asked at most as often as it took to learn of the failure.
    asked = len(polls)
    page.wait_for_timeout(6_500)  # longer than the 5 s poll interval
    assert len(polls) == asked, polls

    # The verdict goes on without the map; "can't tell" is the honest feature verdict.
    page.keyboard.press("c")
    page.keyboard.press("k")
    page.keyboard.press("Enter")
    expect(page.locator("#done")).to_be_visible()
    review = Review.objects.get()
    assert (review.prediction_verdict, review.feature_verdict) == ("correct", "cant_tell")
