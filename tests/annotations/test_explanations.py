"""Explanation requests: validation, on-demand caching, idempotent jobs, stored files."""

import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image
from rest_framework.test import APIClient

from annotations.models import Explanation, Job, JobStatus, ModelVersion, Role
from explain_worker import rendering
from explain_worker import tasks as worker_tasks
from tests.factories import (
    LABELS,
    add_member,
    imagefolder_files,
    import_images,
    make_project,
    register_rooms_cnn_here,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(media_root, image_zip, settings):
    settings.EXPLAIN_BATCH_SIZE = 4
    project = make_project()
    import_images(project, image_zip(imagefolder_files(3)))
    mv, predict_job = register_rooms_cnn_here(project)
    worker_tasks.run_job_here(predict_job.pk)
    client = APIClient()
    client.force_authenticate(project.memberships.get().user)
    return project, mv, client


def run(job_id: int) -> Job:
    worker_tasks.run_job_here(job_id)
    return Job.objects.get(pk=job_id)


def test_registration_records_gradcam_layers(setup):
    _, mv, _ = setup
    assert mv.default_layer == "features.block4"
    assert "features.block3" in mv.layer_names


def test_on_demand_202_then_cached_200(setup):
    project, mv, client = setup
    instance = project.instances.first()
    url = f"/api/model-versions/{mv.pk}/explanations/"
    first = client.post(url, {"instance": instance.pk, "method": "saliency"}, format="json")
    assert first.status_code == 202, first.content
    assert first["Location"] == first.json()["url"]
    again = client.post(url, {"instance": instance.pk, "method": "saliency"}, format="json")
    assert again.status_code == 202
    assert again.json()["id"] == first.json()["id"]  # the same job, not a second one
    job = run(first.json()["id"])
    assert job.status == JobStatus.SUCCEEDED, job.error
    cached = client.post(url, {"instance": instance.pk, "method": "saliency"}, format="json")
    assert cached.status_code == 200
    body = cached.json()
    predicted = mv.predictions.get(instance=instance).label
    assert (body["instance"], body["method"], body["target"]) == (
        instance.pk,
        "saliency",
        predicted,
    )
    assert Job.objects.filter(kind="explain").count() == 1

    raw = client.get(body["raw_url"])
    data = b"".join(raw.streaming_content)
    assert rendering.decode_raw(data).shape == (32, 32)
    overlay = client.get(body["overlay_url"])
    png = Image.open(io.BytesIO(b"".join(overlay.streaming_content)))
    assert png.format == "PNG"
    assert png.height > png.width / 2  # the image plus its legend strip
    assert Explanation.objects.get(pk=body["id"]).overlay  # kept for the next view
    thumb = client.get(body["thumbnail_url"])
    assert thumb.status_code == 200


def test_why_p_and_not_q(setup):
    project, mv, client = setup
    instance = project.instances.first()
    url = f"/api/model-versions/{mv.pk}/explanations/"
    for target in LABELS:
        response = client.post(
            url,
            {"instance": instance.pk, "method": "ig", "target": target, "n_steps": 4},
            format="json",
        )
        assert response.status_code == 202
        run(response.json()["id"])
    rows = Explanation.objects.filter(instance=instance, method="integrated_gradients")
    assert sorted(rows.values_list("target", flat=True)) == sorted(LABELS)
    assert rows.first().params["n_steps"] == 4
    assert rows.first().signed is True


def test_bulk_job_twice_leaves_one_row_per_key(setup):
    _, mv, client = setup
    url = f"/api/model-versions/{mv.pk}/explain/"
    first = client.post(url, {"method": "gradcam", "split": "train"}, format="json")
    assert first.status_code == 202, first.content
    assert first.json()["total"] == 9
    job = run(first.json()["id"])
    assert job.done == job.total == 9
    # The same task body again (a redelivered message) and a second identical job.
    worker_tasks.compute_explanations(job.pk)
    second = run(client.post(url, {"method": "gradcam"}, format="json").json()["id"])
    assert second.status == JobStatus.SUCCEEDED
    rows = Explanation.objects.filter(model_version=mv, method="gradcam")
    assert rows.count() == 9
    assert rows.values("instance", "target").distinct().count() == 9
    assert rows.first().params["layer"] == "features.block4"


def test_custom_layer_is_used(setup):
    project, mv, client = setup
    url = f"/api/model-versions/{mv.pk}/explain/"
    response = client.post(
        url,
        {
            "method": "gradcam",
            "layer": "features.block2",
            "instance_ids": [project.instances.first().pk],
        },
        format="json",
    )
    run(response.json()["id"])
    assert Explanation.objects.get(method="gradcam").params["layer"] == "features.block2"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"method": "lime"}, "method"),
        ({"method": "saliency", "target": "horse"}, "target"),
        ({"method": "gradcam", "layer": "features.block9"}, "layer"),
        ({"method": "ig", "n_steps": 0}, "n_steps"),
        ({"method": "occlusion", "window": 2, "stride": 5}, "stride"),
    ],
)
def test_bad_input_names_the_field_and_queues_nothing(setup, body, field):
    project, mv, client = setup
    instance = project.instances.first()
    for url, extra in (
        (f"/api/model-versions/{mv.pk}/explanations/", {"instance": instance.pk}),
        (f"/api/model-versions/{mv.pk}/explain/", {}),
    ):
        response = client.post(url, body | extra, format="json")
        assert response.status_code == 400, response.content
        assert field in response.json(), response.json()
    assert Job.objects.filter(kind="explain").count() == 0


def test_instance_of_another_project(setup, image_zip):
    _, mv, client = setup
    other = make_project(slug="other")
    import_images(other, image_zip(imagefolder_files(1)))
    foreign = other.instances.first()
    response = client.post(
        f"/api/model-versions/{mv.pk}/explanations/",
        {"instance": foreign.pk, "method": "saliency"},
        format="json",
    )
    assert response.status_code == 400
    assert "instance" in response.json()
    response = client.post(
        f"/api/model-versions/{mv.pk}/explain/",
        {"method": "saliency", "instance_ids": [foreign.pk]},
        format="json",
    )
    assert response.status_code == 400
    assert "instance_ids" in response.json()
    assert Job.objects.filter(kind="explain").count() == 0


def test_predictions_only_model_cannot_be_explained(setup):
    project, _, client = setup
    mv = ModelVersion.objects.create(
        project=project,
        version=9,
        name="external",
        kind="predictions_only",
        label_order=LABELS,
    )
    response = client.post(
        f"/api/model-versions/{mv.pk}/explain/", {"method": "saliency"}, format="json"
    )
    assert response.status_code == 400
    assert "predictions only" in response.json()["method"][0]


def test_experts_and_strangers_cannot_request(setup):
    project, mv, _ = setup
    expert = APIClient()
    expert.force_authenticate(add_member(project, "eve", Role.EXPERT))
    url = f"/api/model-versions/{mv.pk}/explain/"
    assert expert.post(url, {"method": "saliency"}, format="json").status_code == 403
    approver = APIClient()
    approver.force_authenticate(add_member(project, "ann", Role.APPROVER))
    assert approver.post(url, {"method": "saliency"}, format="json").status_code == 403
    # One instance on demand too (issue 16, defect 13): approvers read maps, they do not
    # queue computation; nothing is queued.
    one = f"/api/model-versions/{mv.pk}/explanations/"
    instance = project.instances.first()
    body = {"instance": instance.pk, "method": "saliency"}
    jobs_before = Job.objects.count()
    assert approver.post(one, body, format="json").status_code == 403
    assert expert.post(one, body, format="json").status_code == 403
    assert Job.objects.count() == jobs_before
    assert approver.get(one).status_code == 200
    from tests.factories import make_user

    stranger = APIClient()
    stranger.force_authenticate(make_user("zed"))
    assert stranger.post(url, {"method": "saliency"}, format="json").status_code == 404


def test_progress_rate_and_eta_fields(setup):
    _, mv, client = setup
    response = client.post(
        f"/api/model-versions/{mv.pk}/explain/", {"method": "saliency"}, format="json"
    )
    job = run(response.json()["id"])
    body = client.get(f"/api/jobs/{job.pk}/").json()
    assert body["done"] == body["total"] == 9
    assert body["rate_per_s"] > 0
    assert body["eta_seconds"] is None  # finished
    assert np.isfinite(body["rate_per_s"])


def test_maps_with_other_settings_are_kept_beside_the_default_one(setup):
    """Integrated Gradients with 8 steps is not the map of the default 32, so it is computed
    and kept beside it; the default map (which rounds show) is never replaced. Another
    internal batch size (memory only) is the same map."""
    project, mv, client = setup
    instance = project.instances.first()
    url = f"/api/model-versions/{mv.pk}/explanations/"

    def ask(**settings):
        body = {"instance": instance.pk, "method": "ig", **settings}
        return client.post(url, body, format="json")

    run(ask().json()["id"])
    default = ask()
    assert default.status_code == 200
    assert default.json()["settings_key"] == ""
    assert ask(n_steps=32, internal_batch_size=2).json()["id"] == default.json()["id"]
    default_raw = Explanation.objects.get(pk=default.json()["id"]).raw.name

    eight = ask(n_steps=8)
    assert eight.status_code == 202, "the 32-step map stood in for 8 steps"
    assert run(eight.json()["id"]).status == JobStatus.SUCCEEDED
    again = ask(n_steps=8)
    assert again.status_code == 200
    assert again.json()["params"]["n_steps"] == 8
    assert again.json()["settings_key"] not in ("", default.json()["settings_key"])
    # The default map is untouched: same row, same file.
    kept = ask()
    assert kept.json()["id"] == default.json()["id"]
    assert kept.json()["params"]["n_steps"] == 32
    assert default_storage.exists(default_raw)
    assert Explanation.objects.filter(instance=instance, method="integrated_gradients").count() == 2


def test_bulk_jobs_with_other_settings_do_not_undo_each_other(setup):
    _, mv, client = setup
    url = f"/api/model-versions/{mv.pk}/explain/"

    def job(**settings):
        body = {"method": "gradcam", "split": "train", **settings}
        return run(client.post(url, body, format="json").json()["id"])

    job()
    other = job(layer="features.block3")
    assert other.status == JobStatus.SUCCEEDED, other.error
    rows = Explanation.objects.filter(model_version=mv, method="gradcam")
    assert rows.count() == 18  # 9 of each
    assert sorted(set(rows.values_list("params__layer", flat=True))) == [
        "features.block3",
        "features.block4",
    ]
    # Each job again finds its own maps done and computes nothing.
    for settings in ({}, {"layer": "features.block3"}):
        again = job(**settings)
        assert again.done == again.total == 9
    assert rows.count() == 18
