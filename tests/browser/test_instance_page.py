"""The instance page in a real browser: the saliency overlay laid over the image and toggled
and faded by keyboard, its legend drawn at its own size, the experts' regions on top,
previous / next with j / k inside a matrix cell, and "why P and not Q" computed for one
instance by a real explanation job."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
from playwright.sync_api import expect

from annotations.models import Instance, Job, JobStatus, Prediction
from annotations.services import reviews
from explain_worker import rendering
from explain_worker import tasks as worker_tasks
from tests.annotations.review_fixtures import EXPECTATION, add_explanation, build_world
from tests.factories import (
    LABELS,
    imagefolder_files,
    import_images,
    make_project,
    register_rooms_cnn_here,
)

pytestmark = pytest.mark.django_db(transaction=True)


def quadrant_map(size: int = 32) -> np.ndarray:
    values = np.zeros((size, size))
    values[: size // 2, : size // 2] = 1.0
    return values


def add_dog_as_bird(world, confidence: float) -> Instance:
    instance = Instance.objects.create(
        project=world.project,
        dataset=world.instances[0].dataset,
        image=world.instances[0].image.name,
        width=32,
        height=32,
        label="dog",
        split="test",
        content_hash=f"dog-bird-{confidence}",
    )
    probs = [0.05, 0.05, 0.05]
    probs[LABELS.index("bird")] = confidence
    Prediction.objects.create(
        instance=instance,
        model_version=world.mv,
        probabilities=probs,
        label="bird",
        confidence=confidence,
    )
    return instance


def test_overlay_toggle_opacity_regions_and_walking_a_cell(page, login, media_root):
    world = build_world(n=6, experts=1, with_files=True)
    middle = world.instances[1]  # dog predicted bird at 0.8
    first = add_dog_as_bird(world, 0.95)
    last = add_dog_as_bird(world, 0.5)
    add_explanation(world, middle, quadrant_map())
    expert = world.experts[0]
    review_round = reviews.round_create(
        model_version=world.mv,
        name="one",
        sampling_strategy={"parts": [{"kind": "ids", "ids": [middle.pk]}]},
        created_by=world.scientist,
        experts=[expert],
        explanation_method="",
    )
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
    reviews.verdict_submit(
        task=task,
        expert=expert,
        data={"prediction_verdict": "correct", "feature_verdict": "relevant"},
    )

    login(page, world.approver.username)
    # Open the cell and its second instance from the thumbnails, as a scientist would.
    page.goto(f"/model-versions/{world.mv.pk}/matrix/?true=dog&pred=bird")
    page.locator(f'.thumbs a[href^="/instances/{middle.pk}/"]').click()
    expect(page.get_by_role("heading", name=f"Instance {middle.pk}")).to_be_visible()
    expect(page.locator(".nav-where")).to_contain_text("2 of 3 in")

    overlay = page.locator("[data-overlay]")
    page.wait_for_function(
        "() => document.querySelector('[data-overlay]').dataset.fitted === 'true'"
    )
    # The picture part covers the image exactly; the legend strip hangs below, clipped.
    stage = page.locator("[data-stage]").bounding_box()
    box = overlay.bounding_box()
    natural = overlay.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    picture_height = box["height"] * (natural[1] - rendering.LEGEND_HEIGHT) / natural[1]
    assert abs(box["width"] - stage["width"]) < 1
    assert abs(picture_height - stage["height"]) < 1.5
    # The legend is drawn at the PNG's own size: 14 px text stays 14 px.
    legend = page.locator("[data-overlay-legend]")
    expect(legend).to_be_visible()
    assert legend.evaluate("c => [c.width, c.height]") == [natural[0], rendering.LEGEND_HEIGHT]
    assert abs(legend.bounding_box()["height"] - rendering.LEGEND_HEIGHT) < 1
    # The expert's region is drawn over the overlay, in the expert's colour, named.
    region = page.locator("[data-stage] svg rect")
    expect(region).to_have_count(1)
    colour = region.get_attribute("stroke")
    expect(page.locator("[data-region-legend]")).to_contain_text(expert.username)
    assert page.locator("[data-region-legend] .swatch rect").get_attribute("fill") == colour

    toggle = page.get_by_role("button", name=re.compile("Saliency shown"))
    page.keyboard.press("v")
    expect(page.locator("[data-overlay-toggle]")).to_have_attribute("aria-pressed", "false")
    expect(overlay).to_be_hidden()
    page.keyboard.press("v")
    expect(toggle).to_have_attribute("aria-pressed", "true")
    expect(overlay).to_be_visible()
    page.keyboard.press("[")
    page.keyboard.press("[")
    assert overlay.evaluate("img => img.style.opacity") == "0.8"
    assert page.locator("[data-overlay-opacity]").input_value() == "80"
    page.keyboard.press("]")
    assert overlay.evaluate("img => img.style.opacity") == "0.9"

    # j / k walk the cell, most confident first.
    page.keyboard.press("j")
    expect(page.get_by_role("heading", name=f"Instance {last.pk}")).to_be_visible()
    expect(page.locator(".nav-where")).to_contain_text("3 of 3 in")
    page.keyboard.press("k")
    expect(page.get_by_role("heading", name=f"Instance {middle.pk}")).to_be_visible()
    page.keyboard.press("k")
    expect(page.get_by_role("heading", name=f"Instance {first.pk}")).to_be_visible()
    expect(page.locator(".nav-where")).to_contain_text("1 of 3 in")
    # Keys do nothing while typing.
    url = page.url
    page.get_by_label("Add a comment").press("j")
    page.wait_for_timeout(300)
    assert page.url == url
    expect(page.get_by_label("Add a comment")).to_have_value("j")


def test_why_p_and_not_q_for_one_instance(page, login, media_root, image_zip, monkeypatch):
    from feedback_service.celery import app

    sent: list[int] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **kw: sent.append(args[0]))
    project = make_project()
    scientist = project.memberships.get().user
    import_images(project, image_zip(imagefolder_files(1, split="test")))
    mv, predict_job = register_rooms_cnn_here(project)
    worker_tasks.run_job_here(predict_job.pk)
    sent.clear()
    prediction = Prediction.objects.filter(model_version=mv).select_related("instance").first()
    instance = prediction.instance
    other = next(label for label in mv.label_order if label != prediction.label)

    login(page, scientist.username)
    page.goto(f"/instances/{instance.pk}/")
    expect(page.get_by_text("No saliency map of this instance yet")).to_be_visible()
    form = page.locator("[data-saliency-compute]")
    form.get_by_label("Method").select_option("saliency")
    form.get_by_label("Other class (Q)").select_option(other)
    expect(form.get_by_role("radio", name=re.compile("and not"))).to_be_checked()
    form.get_by_role("button", name="Compute saliency").click()
    status = form.locator("[data-job-status]")
    expect(status).to_contain_text("Queued")
    deadline = time.monotonic() + 10
    while not sent and time.monotonic() < deadline:
        time.sleep(0.1)
    job = Job.objects.get(pk=sent[0])
    assert job.params["target"] == other
    worker_tasks.run_job_here(job.pk)
    assert Job.objects.get(pk=job.pk).status == JobStatus.SUCCEEDED
    # The page shows the new map over the image.
    expect(page.locator("[data-overlay-label]")).to_have_text(
        re.compile(rf"v{mv.version} · Saliency \(input gradient\) · for {other}"), timeout=15_000
    )
    page.wait_for_function(
        "() => document.querySelector('[data-overlay]').dataset.fitted === 'true'"
    )
