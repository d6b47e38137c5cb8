"""Builders for review-round tests: a project with predicted instances, without images on
disk unless asked (tasks only need sizes and labels)."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from rest_framework.test import APIClient

from annotations.models import (
    Dataset,
    Explanation,
    Instance,
    ModelVersion,
    Prediction,
    Project,
    Role,
)
from annotations.services import reviews
from explain_worker import rendering
from tests.factories import LABELS, add_member, make_image_bytes, make_project


@dataclass
class World:
    project: Project
    mv: ModelVersion
    instances: list[Instance]
    scientist: object
    experts: list
    approver: object
    viewer: object

    def client(self, user) -> APIClient:
        client = APIClient()
        client.force_authenticate(user)
        return client


def build_world(
    n: int = 6, experts: int = 3, slug: str = "pets", with_files: bool = False
) -> World:
    project = make_project(slug=slug)
    scientist = project.memberships.get().user
    scientist.email = f"{slug}-scientist@example.org"
    scientist.save()
    dataset = Dataset.objects.create(project=project, name="d")
    instances = []
    for i in range(n):
        name = f"instances/{slug}-{i}.png"
        if with_files:
            default_storage.save(name, ContentFile(make_image_bytes(size=32)))
        instances.append(
            Instance.objects.create(
                project=project,
                dataset=dataset,
                image=name,
                width=32,
                height=32,
                label=LABELS[i % 3],
                split="test",
                content_hash=f"{slug}-{i}",
                metadata={"true_label": LABELS[i % 3]},
            )
        )
    mv = ModelVersion.objects.create(
        project=project,
        version=1,
        name="m",
        kind="architecture",
        architecture="rooms_cnn",
        input_size=32,
        mean=[0.5] * 3,
        std=[0.25] * 3,
        label_order=LABELS,
        layer_names=["features.block4"],
        default_layer="features.block4",
    )
    for i, instance in enumerate(instances):
        probs = [0.1, 0.1, 0.1]
        probs[(i + (i % 2)) % 3] = 0.8  # every other prediction is wrong
        Prediction.objects.create(
            instance=instance,
            model_version=mv,
            probabilities=probs,
            label=LABELS[probs.index(0.8)],
            confidence=0.8,
        )
    expert_users = []
    for k in range(experts):
        user = add_member(project, f"{slug}-expert{k}", Role.EXPERT)
        user.email = f"{slug}-expert{k}@example.org"
        user.save()
        expert_users.append(user)
    return World(
        project=project,
        mv=mv,
        instances=instances,
        scientist=scientist,
        experts=expert_users,
        approver=add_member(project, f"{slug}-approver", Role.APPROVER),
        viewer=add_member(project, f"{slug}-viewer", Role.VIEWER),
    )


def make_round(world: World, *, overlap: int = 1, blind_first: bool = True, **kwargs):
    kwargs.setdefault("explanation_method", "")
    return reviews.round_create(
        model_version=world.mv,
        name="r1",
        sampling_strategy={"parts": [{"kind": "ids", "ids": [i.pk for i in world.instances]}]},
        created_by=world.scientist,
        experts=world.experts,
        overlap=overlap,
        blind_first=blind_first,
        **kwargs,
    )


def add_saliency(world: World, method: str = "gradcam") -> None:
    import numpy as np

    for instance in world.instances:
        prediction = instance.predictions.get()
        exp = Explanation(
            instance=instance, model_version=world.mv, method=method, target=prediction.label
        )
        exp.raw.save(f"{instance.pk}.npz", ContentFile(rendering.encode_raw(np.ones((32, 32)))))


EXPECTATION = {
    "expected_label": "cat",
    "expected_confidence": 4,
    "evidence": [{"type": "box", "points": [[1, 1], [10, 12]]}],
    "concepts": ["fur"],
    "free_tags": ["whiskers"],
}
VERDICT = {
    "prediction_verdict": "incorrect",
    "feature_verdict": "irrelevant",
    "acceptable": False,
    "severity": 3,
    "reason": "rare_case",
    "comment": "odd",
}


def add_explanation(
    world: World,
    instance: Instance,
    values,
    *,
    method: str = "gradcam",
    signed: bool = False,
    settings_key: str = "",
) -> Explanation:
    """Store ``values`` (a 2-D array) as the map of ``instance`` for its predicted class,
    through the worker's own write path, so paths and rows are what a worker makes.
    ``settings_key``: "" for the method's default settings, else a map of other settings."""
    from annotations.services import explanations

    target = instance.predictions.get(model_version=world.mv).label
    explanations.explanations_write(
        model_version=world.mv,
        method=method,
        params={},
        signed=signed,
        items=[(instance.pk, target, rendering.encode_raw(values))],
        settings_key=settings_key,
    )
    return Explanation.objects.get(
        instance=instance,
        model_version=world.mv,
        method=method,
        target=target,
        settings_key=settings_key,
    )


def make_round_with_saliency(world: World, *, method: str = "gradcam", **kwargs):
    """A round that shows ``method``'s maps, without queueing their computation (tests add
    the maps themselves, and must not leave messages in a broker another test run reads)."""
    from annotations.models import ReviewRound

    review_round = make_round(world, explanation_method="", **kwargs)
    ReviewRound.objects.filter(pk=review_round.pk).update(explanation_method=method)
    review_round.refresh_from_db()
    return review_round
