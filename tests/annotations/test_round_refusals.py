"""A round that cannot work is refused, or repaired (issue 15, item 2): saliency methods a
model version cannot show are refused at round creation and on both explain endpoints; a
failed explanation job reaches the experts' task payload instead of endless "not ready"."""

from __future__ import annotations

import numpy as np
import pytest
from django.core.files.base import ContentFile

from annotations.models import Explanation, Job, JobKind, JobStatus, ModelVersion, ReviewRound
from annotations.services import explanations
from annotations.services.jobs import job_fail
from explain_worker import rendering
from tests.annotations.review_fixtures import EXPECTATION, LABELS, build_world, make_round

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(media_root):
    return build_world()


def _version(world, kind: str, **fields) -> ModelVersion:
    return ModelVersion.objects.create(
        project=world.project,
        version=ModelVersion.objects.count() + 1,
        name=kind,
        kind=kind,
        label_order=LABELS,
        **fields,
    )


def _create_round(world, mv, **body):
    base = {
        "model_version": mv.pk,
        "name": "r",
        "sampling": {"parts": [{"kind": "control", "n": 2}]},
        "experts": [world.experts[0].username],
    }
    return world.client(world.scientist).post(
        f"/api/projects/{world.project.pk}/rounds/", base | body, format="json"
    )


def test_available_methods_per_kind_of_version(world):
    torchscript = _version(world, "torchscript", layer_names=["conv"], default_layer="conv")
    predictions_only = _version(world, "predictions_only")
    assert explanations.available_methods(world.mv)[0] == "gradcam"
    assert "gradcam" not in explanations.available_methods(torchscript)
    assert set(explanations.available_methods(torchscript)) == {
        "saliency",
        "integrated_gradients",
        "occlusion",
    }
    assert explanations.available_methods(predictions_only) == []


def test_gradcam_on_torchscript_is_refused_everywhere_naming_method(world):
    torchscript = _version(world, "torchscript", layer_names=["conv"], default_layer="conv")
    client = world.client(world.scientist)
    instance = world.instances[0]
    one = client.post(
        f"/api/model-versions/{torchscript.pk}/explanations/",
        {"instance": instance.pk, "method": "gradcam"},
        format="json",
    )
    bulk = client.post(
        f"/api/model-versions/{torchscript.pk}/explain/", {"method": "grad-cam"}, format="json"
    )
    for response in (one, bulk):
        assert response.status_code == 400, response.content
        assert "TorchScript" in response.json()["method"][0]
    created = _create_round(world, torchscript, explanation_method="gradcam")
    assert created.status_code == 400
    assert "TorchScript" in created.json()["explanation_method"][0]
    assert not Job.objects.filter(kind=JobKind.EXPLAIN).exists()
    assert not ReviewRound.objects.exists()


def test_a_predictions_only_version_shows_only_imported_maps(world):
    mv = _version(world, "predictions_only")
    refused = _create_round(world, mv, explanation_method="gradcam")
    assert refused.status_code == 400
    assert "predictions only" in refused.json()["explanation_method"][0]
    no_maps = _create_round(world, mv, explanation_method="imported")
    assert no_maps.status_code == 400
    assert "imported" in no_maps.json()["explanation_method"][0]
    exp = Explanation(instance=world.instances[0], model_version=mv, method="imported", target="a")
    exp.raw.save("m.npz", ContentFile(rendering.encode_raw(np.ones((4, 4)))))
    assert explanations.available_methods(mv) == ["imported"]
    # Without predictions the sample is empty; that refusal names the sampling.
    assert "sampling" in _create_round(world, mv, explanation_method="imported").json()


def _reveal(world, review_round):
    alice = world.client(world.experts[0])
    task = alice.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
    alice.post(f"/api/tasks/{task['id']}/expectation", EXPECTATION, format="json")
    return alice, task


def test_a_failed_explanation_job_is_said_in_the_task_payload(world):
    review_round = make_round(world, explanation_method="gradcam")  # queues the round's job
    job = Job.objects.get(kind=JobKind.EXPLAIN, model_version=world.mv)
    alice, task = _reveal(world, review_round)
    waiting = alice.get(f"/api/tasks/{task['id']}/").json()["saliency"]
    assert waiting == {"method": "gradcam", "ready": False}  # queued: still coming
    job_fail(job=job, error="RuntimeError: out of memory")
    failed = alice.get(f"/api/tasks/{task['id']}/").json()["saliency"]
    assert failed == {"method": "gradcam", "ready": False, "failed": "RuntimeError: out of memory"}
    # A retry (a newer job covering the instance) takes the failure back.
    job.status = JobStatus.QUEUED
    job.save(update_fields=["status"])
    assert "failed" not in alice.get(f"/api/tasks/{task['id']}/").json()["saliency"]


def test_a_failed_job_of_other_settings_or_instances_does_not_count(world):
    review_round = make_round(world, explanation_method="gradcam")
    alice, task = _reveal(world, review_round)
    instance = task["instance"]["id"]
    others = [i.pk for i in world.instances if i.pk != instance]
    for params in (
        {"instance_ids": others},  # another instance
        {"instance_ids": [instance], "target": LABELS[0]},  # "why P and not Q", other target
    ):
        spec = explanations.explain_spec(
            model_version=world.mv, method="gradcam", target=params.get("target")
        )
        job = Job.objects.create(
            project=world.project,
            kind=JobKind.EXPLAIN,
            model_version=world.mv,
            params=spec.job_params() | {"instance_ids": params["instance_ids"], "split": None},
        )
        job_fail(job=job, error="boom")
    assert "failed" not in alice.get(f"/api/tasks/{task['id']}/").json()["saliency"]


def test_experts_see_a_neutral_title_in_a_blind_first_round(world):
    hidden = make_round(world, blind_first=True)
    ReviewRound.objects.filter(pk=hidden.pk).update(name="test-split errors", description="errs")
    alice = world.client(world.experts[0])
    body = alice.get(f"/api/rounds/{hidden.pk}/").json()
    assert body["name"] == f"Review round {hidden.pk}"
    assert body["description"] == ""
    assert world.client(world.scientist).get(f"/api/rounds/{hidden.pk}/").json()["name"] == (
        "test-split errors"
    )
    ReviewRound.objects.filter(pk=hidden.pk).update(show_name_to_experts=True)
    assert alice.get(f"/api/rounds/{hidden.pk}/").json()["name"] == "test-split errors"


@pytest.mark.parametrize("other_role", ["viewer", "approver", "scientist"])
def test_a_blind_first_round_refuses_experts_who_can_see_predictions(world, other_role):
    """Issue 16, defect 11: an expert who is also a viewer or approver of the project could
    read the predictions and the round's sampling, so their "blind" judgement was not."""
    from annotations.models import Membership

    user = world.experts[0]
    Membership.objects.create(project=world.project, user=user, role=other_role)
    refused = _create_round(world, world.mv, experts=[user.username])
    assert refused.status_code == 400
    assert "would not be blind" in refused.json()["experts"][0]
    allowed = _create_round(world, world.mv, experts=[user.username], blind_first=False)
    assert allowed.status_code == 201, allowed.content
    # Adding them to an existing blind-first round is refused the same way.
    blind = _create_round(world, world.mv, experts=[world.experts[1].username]).json()["id"]
    added = world.client(world.scientist).post(
        f"/api/rounds/{blind}/experts/", {"experts": [user.username]}, format="json"
    )
    assert added.status_code == 400
    assert not ReviewRound.objects.get(pk=blind).experts.filter(pk=user.pk).exists()


def test_the_rounds_own_experts_never_see_its_sampling_whatever_their_roles(world):
    from annotations.models import Membership

    review_round = make_round(world, blind_first=False)
    user = world.experts[0]
    Membership.objects.create(project=world.project, user=user, role="viewer")
    client = world.client(user)
    for body in (
        client.get(f"/api/rounds/{review_round.pk}/").json(),
        client.get(f"/api/projects/{world.project.pk}/rounds/").json()["results"][0],
    ):
        assert "sampling" not in body
        assert "experts" not in body
    assert "sampling" in world.client(world.viewer).get(f"/api/rounds/{review_round.pk}/").json()


def test_progress_tells_an_expert_how_many_images_they_can_still_get(world):
    """The review page's "n of m left": images the expert has neither had nor skipped with
    an open slot, counted once each whatever the overlap."""
    review_round = make_round(world, overlap=2)
    alice = world.client(world.experts[0])
    url = f"/api/rounds/{review_round.pk}/progress/"
    assert alice.get(url).json()["available_to_you"] == len(world.instances)
    task = alice.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
    assert alice.get(url).json()["available_to_you"] == len(world.instances) - 1  # one held
    alice.post(f"/api/tasks/{task['id']}/skip", {"reason": "blurry"}, format="json")
    # Skipped: its slot is open again, but not for her.
    assert alice.get(url).json()["available_to_you"] == len(world.instances) - 1
    assert "available_to_you" not in world.client(world.scientist).get(url).json()
