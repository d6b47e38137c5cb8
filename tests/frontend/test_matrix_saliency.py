"""Saliency on the confusion-matrix cell page through Django's test client: the compute form
(scientists only, methods the version can compute, "why P and not Q" defaulting to the
cell's true class), the whole cell's instances queued, and which maps the thumbnails show."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from django.test import Client

from annotations.models import Explanation, Instance, Job, ModelVersion, Prediction
from tests.annotations.review_fixtures import add_explanation, build_world
from tests.factories import LABELS

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(media_root):
    return build_world(n=6, experts=1, with_files=True)


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def add_dog_as_bird(world, n: int) -> list[Instance]:
    """``n`` more test instances of true dog predicted bird (the fixture has one)."""
    made = []
    for k in range(n):
        instance = Instance.objects.create(
            project=world.project,
            dataset=world.instances[0].dataset,
            image=world.instances[0].image.name,
            width=32,
            height=32,
            label="dog",
            split="test",
            content_hash=f"dog-bird-{k}",
        )
        probs = [0.1, 0.1, 0.1]
        probs[LABELS.index("bird")] = 0.5 + k / 200
        Prediction.objects.create(
            instance=instance,
            model_version=world.mv,
            probabilities=probs,
            label="bird",
            confidence=probs[LABELS.index("bird")],
        )
        made.append(instance)
    return made


def cell_url(world, **extra) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"true": "dog", "pred": "bird", **extra}.items())
    return f"/model-versions/{world.mv.pk}/matrix/?{query}"


def test_scientists_get_the_compute_form_for_the_whole_cell(world):
    extra = add_dog_as_bird(world, 50)  # 51 in the cell: more than one page
    html = client_for(world.scientist).get(cell_url(world)).content.decode()
    form = html[
        html.index("data-saliency-compute") : html.index(
            "</form>", html.index("data-saliency-compute")
        )
    ]
    assert "Compute saliency for these 51 instances" in form
    assert f'data-explain-url="/api/model-versions/{world.mv.pk}/explain/"' in form
    methods = re.findall(r'<option value="([a-z_]+)"[^>]*>', form[: form.index("</select>")])
    assert methods == ["gradcam", "integrated_gradients", "saliency", "occlusion"]
    # Why bird and not dog: Q defaults to the cell's true class; the prediction is no Q.
    assert re.search(r'<option value="dog" selected>dog \(true class\)</option>', form)
    assert 'value="bird"' not in form[form.index('id="target-q"') :]
    ids = json.loads(re.search(r'id="cell-instance-ids"[^>]*>(.*?)</script>', html).group(1))
    assert sorted(ids) == sorted([world.instances[1].pk] + [i.pk for i in extra])
    # Approvers read the cell but do not compute (the bulk API is the scientists').
    approver = client_for(world.approver).get(cell_url(world)).content.decode()
    assert "data-saliency-compute" not in approver
    assert "cell-instance-ids" not in approver


def test_torchscript_offers_no_gradcam_and_predictions_only_nothing(world):
    ModelVersion.objects.filter(pk=world.mv.pk).update(kind="torchscript")
    html = client_for(world.scientist).get(cell_url(world)).content.decode()
    form = html[html.index("data-saliency-compute") :]
    methods = re.findall(r'<option value="([a-z_]+)"[^>]*>', form[: form.index("</select>")])
    assert methods == ["integrated_gradients", "saliency", "occlusion"]
    ModelVersion.objects.filter(pk=world.mv.pk).update(kind="predictions_only")
    html = client_for(world.scientist).get(cell_url(world)).content.decode()
    assert "data-saliency-compute" not in html
    assert "cannot compute saliency maps" in html


def test_the_form_without_script_queues_the_cell_and_names_a_bad_method(world):
    extra = add_dog_as_bird(world, 3)
    client = client_for(world.scientist)
    response = client.post(
        cell_url(world),
        {"action": "explain", "method": "gradcam", "explain": "other", "target": "dog"},
    )
    assert response.status_code == 302
    job = Job.objects.get(kind="explain")
    assert sorted(job.params["instance_ids"]) == sorted(
        [world.instances[1].pk] + [i.pk for i in extra]
    )
    assert job.params["target"] == "dog"
    assert job.total == 4
    response = client.post(cell_url(world), {"action": "explain", "method": "nonsense"})
    assert response.status_code == 400
    assert "method:" in response.content.decode()
    assert Job.objects.count() == 1
    # The prediction (no "other"): no target.
    client.post(cell_url(world), {"action": "explain", "method": "saliency", "target": "dog"})
    assert Job.objects.order_by("-id").first().params["target"] is None
    assert (
        client_for(world.approver)
        .post(cell_url(world), {"action": "explain", "method": "saliency"})
        .status_code
        == 403
    )
    assert Job.objects.count() == 2


def test_thumbnails_show_the_chosen_method_and_target(world):
    instance = world.instances[1]  # dog, predicted bird
    of_prediction = add_explanation(world, instance, np.ones((32, 32)), method="gradcam")
    other = add_explanation(world, instance, np.ones((32, 32)), method="saliency")
    Explanation.objects.filter(pk=other.pk).update(target="dog")
    client = client_for(world.scientist)
    html = client.get(cell_url(world)).content.decode()
    assert f"/api/explanations/{of_prediction.pk}/thumbnail/" in html
    assert 'alt="saliency for bird"' in html
    html = client.get(cell_url(world, method="saliency", target="dog")).content.decode()
    assert f"/api/explanations/{other.pk}/thumbnail/" in html
    assert 'alt="saliency for dog"' in html
    assert "why bird and not dog" in html
    # No map of that method for the prediction yet.
    html = client.get(cell_url(world, method="saliency")).content.decode()
    assert "no saliency yet" in html
    # Unknown values fall back to showing any map of the prediction.
    html = client.get(cell_url(world, method="bogus", target="zebra")).content.decode()
    assert f"/api/explanations/{of_prediction.pk}/thumbnail/" in html
