"""Storage names say nothing about the model's view (issue 16, defect 1): a map's name
carried the predicted class, so probing five names per instance revealed the prediction
before an expert's blind judgement, and model weights were named by a timestamp the API
shows."""

from __future__ import annotations

import re

import numpy as np
import pytest
from django.core.files.base import ContentFile

from annotations.models import ModelVersion, model_upload_to
from explain_worker import rendering
from tests.annotations.review_fixtures import LABELS, add_explanation, build_world

pytestmark = pytest.mark.django_db


def test_a_maps_name_carries_no_label_method_or_instance(media_root, settings):
    world = build_world()
    instance = world.instances[0]
    exp = add_explanation(world, instance, np.ones((4, 4)))
    name = exp.raw.name
    assert exp.target in LABELS
    for leak in (*LABELS, "gradcam", f"/{instance.pk}.", f"/{instance.pk}-"):
        assert leak not in name, (leak, name)
    assert re.fullmatch(rf"explanations/{world.project.pk}/{world.mv.pk}/[0-9a-f]{{40}}\.npz", name)
    # Deterministic for the same map (a redone batch overwrites its own file) ...
    again = add_explanation(world, instance, np.zeros((4, 4)))
    assert again.raw.name == name
    # ... but derived with the secret key: another key, another name.
    from annotations.services.explanations import _raw_name

    settings.SECRET_KEY = "another-key"
    assert _raw_name(world.mv, "gradcam", exp.target, instance.pk) != name


def test_rendered_overlays_follow_the_maps_name(media_root):
    world = build_world(with_files=True)
    from annotations.services.explanations import explanation_rendering

    exp = add_explanation(world, world.instances[0], np.ones((32, 32)))
    overlay = explanation_rendering(explanation=exp, kind="overlay")
    assert exp.target not in overlay
    assert overlay.startswith(exp.raw.name.rsplit(".", 1)[0])


def test_model_weights_get_a_random_name(media_root):
    world = build_world()
    mv = ModelVersion(project=world.project, version=5, name="m", kind="architecture")
    first = model_upload_to(mv, "resnet18-weights.pt")
    second = model_upload_to(mv, "resnet18-weights.pt")
    assert first != second
    assert re.fullmatch(rf"models/{world.project.pk}/[0-9a-f]{{32}}\.pt", first)
    mv.weights.save("w.pt", ContentFile(rendering.encode_raw(np.ones((2, 2)))), save=False)
    assert re.fullmatch(rf"models/{world.project.pk}/[0-9a-f]{{32}}\.pt", mv.weights.name)
