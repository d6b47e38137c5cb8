"""The confusion-matrix cell's "compute saliency" in a real browser: a real explanation job
(an untrained RoomsCNN registered and predicted in this process) is queued through the bulk
API, its progress is shown while it waits and runs, and the thumbnails are filled in
without reloading the page."""

from __future__ import annotations

import re
import time

import pytest
from playwright.sync_api import expect

from annotations.models import Explanation, Job, JobStatus, Prediction
from explain_worker import tasks as worker_tasks
from tests.factories import imagefolder_files, import_images, make_project, register_rooms_cnn_here

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def queued(monkeypatch) -> list[int]:
    """Jobs the web process sends to the broker, caught instead of sent: the test runs each
    one itself, in this process, when it chooses (no worker, no broker messages left)."""
    from feedback_service.celery import app

    sent: list[int] = []
    monkeypatch.setattr(app, "send_task", lambda name, args=None, **kw: sent.append(args[0]))
    return sent


def wait_for(condition, seconds: float = 10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


def test_compute_saliency_fills_the_cells_thumbnails(
    page, login, media_root, image_zip, queued, settings
):
    settings.EXPLAIN_BATCH_SIZE = 2  # several chunks, so progress moves
    project = make_project()
    scientist = project.memberships.get().user
    import_images(project, image_zip(imagefolder_files(2, split="test")))
    mv, predict_job = register_rooms_cnn_here(project)
    worker_tasks.run_job_here(predict_job.pk)
    queued.clear()  # registration's own prediction job was run above
    # The largest cell of the untrained model's matrix.
    cells: dict[tuple[str, str], int] = {}
    for p in Prediction.objects.filter(model_version=mv).select_related("instance"):
        key = (p.instance.label, p.label)
        cells[key] = cells.get(key, 0) + 1
    (true_label, predicted), count = max(cells.items(), key=lambda kv: kv[1])

    login(page, scientist.username)
    page.goto(f"/model-versions/{mv.pk}/matrix/?split=test&true={true_label}&pred={predicted}")
    section = page.locator("#cell")
    thumbs = section.locator(".thumbs li")
    expect(thumbs).to_have_count(count)
    expect(section.locator(".no-map")).to_have_count(count)
    page.evaluate("window.__notReloaded = true")

    form = page.locator("[data-saliency-compute]")
    expect(
        form.get_by_role("heading", name=re.compile("Compute saliency for th(ese|is)"))
    ).to_be_visible()
    # Keyboard: choose the method and press the button without the mouse.
    form.get_by_label("Method").select_option("saliency")
    form.get_by_role("button", name="Compute saliency").focus()
    page.keyboard.press("Enter")

    status = form.locator("[data-job-status]")
    expect(status).to_contain_text(f"Queued: 0 of {count}")
    job_id = wait_for(lambda: queued and queued[0])
    job = Job.objects.get(pk=job_id)
    assert job.params["method"] == "saliency"
    assert sorted(job.params["instance_ids"]) == sorted(
        Prediction.objects.filter(
            model_version=mv, instance__label=true_label, label=predicted
        ).values_list("instance_id", flat=True)
    )
    # A real explanation job, run by the worker's own code in this process.
    worker_tasks.run_job_here(job_id)
    assert Job.objects.get(pk=job_id).status == JobStatus.SUCCEEDED
    assert Explanation.objects.filter(model_version=mv, method="saliency").count() == count

    expect(status).to_contain_text(f"Done: {count} of {count} maps computed", timeout=15_000)
    expect(status).to_contain_text("Thumbnails updated")
    expect(section.locator(".no-map")).to_have_count(0)
    maps = section.get_by_role("img", name=f"saliency for {predicted}")
    expect(maps).to_have_count(count)
    for k in range(count):
        # Served for real: the browser decoded each thumbnail.
        page.wait_for_function(
            "img => img.complete && img.naturalWidth > 0", arg=maps.nth(k).element_handle()
        )
    assert page.evaluate("window.__notReloaded") is True  # filled in place
    assert "method=saliency" in page.url  # a reload shows the same maps
    progress = form.locator("progress")
    assert progress.evaluate("p => p.value === p.max")
    # Each thumbnail opens the instance inside this cell's list.
    href = thumbs.first.get_by_role("link").get_attribute("href")
    assert "from=cell" in href
