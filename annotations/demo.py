"""The demo: the generated "rooms" dataset with planted failures, a small CNN trained on it,
and one user per role. Used by ``manage.py seed_demo`` (and so by ``make run``).

Every step checks what exists first, so a second run changes nothing.
"""

from __future__ import annotations

import io
import json
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from django.contrib.auth import get_user_model
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from annotations import services
from annotations.models import Job, ModelVersion, Project, ReviewRound, Role
from annotations.services import reviews as review_services
from explain_worker import rooms, rooms_cnn

PROJECT_SLUG = "rooms"
DATASET_NAME = "rooms"
MODEL_NAME = "rooms-cnn"
# Neutral on purpose: a name like "test-split errors" told experts the images were the
# model's mistakes before their blind judgement. What the round samples goes in its
# description, which experts of a blind-first round do not see.
ROUND_NAME = "Demo review round: rooms, test split"
ROUND_DESCRIPTION = (
    "Errors first (a quota per confused pair of classes and the confident errors), then a "
    "control sample of correct predictions."
)
# What the demo round samples: the errors an expert should judge first, a quota per confused
# pair, and correct predictions as a control (see annotations/sampling.py).
ROUND_SAMPLING = {
    "split": "test",
    "seed": 0,
    "parts": [
        {"kind": "confident_errors", "threshold": 0.8, "n": 15},
        {"kind": "confusion_quota", "per_cell": 2},
        {"kind": "control", "n": 10},
    ],
}
DEMO_PASSWORD = "demo-pass"
DEMO_USERS = {
    "scientist": Role.SCIENTIST,
    "expert": Role.EXPERT,
    "approver": Role.APPROVER,
    "viewer": Role.VIEWER,
}


@dataclass(frozen=True)
class DemoSize:
    n_train: int = 2000
    n_test: int = 500
    n_deployment: int = 300
    epochs: int | None = None  # None: the trainer's default
    seed: int = 0

    @property
    def total(self) -> int:
        return self.n_train + self.n_test + self.n_deployment


@dataclass
class DemoResult:
    project: Project
    created: list[str] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    model_version: ModelVersion | None = None
    prediction_job: Job | None = None
    review_round: ReviewRound | None = None


def seed_demo(*, size: DemoSize = DemoSize(), log: Callable[[str], None] = print) -> DemoResult:
    """Seed what is missing. The review round needs the predictions a worker computes:
    ``ensure_round`` creates it later (``seed_demo --wait`` does so once they are in)."""
    started = timezone.now()
    users = _ensure_users(log)
    project, created = _ensure_project(users["scientist"])
    result = DemoResult(project=project, created=["project"] if created else [])
    for username, role in DEMO_USERS.items():
        services.membership_add(project=project, user=users[username], role=role)

    dataset = project.datasets.filter(name=DATASET_NAME).first()
    if dataset is None or dataset.instances.count() < size.total:
        log(f"Generating {size.total} room images and importing them ...")
        _import_rooms(project, size, log)
        result.created.append("dataset")
    else:
        log(f"Dataset '{DATASET_NAME}' is there ({dataset.instances.count()} instances).")

    mv = project.model_versions.filter(name=MODEL_NAME).first()
    if mv is None:
        log("Training the demo CNN on the train split (CPU) ...")
        mv, job, metrics = _train_and_register(project, users["scientist"], size)
        result.created.append("model_version")
        result.metrics = metrics
        result.prediction_job = job
        log(
            f"Trained in {metrics['seconds']:.0f} s, train accuracy "
            f"{metrics['train_accuracy']:.2f}; registered {mv}; prediction job {job.pk} "
            "queued for the worker."
        )
    else:
        log(f"Model version {mv} is there ({mv.predictions.count()} predictions).")
    result.model_version = mv
    result.review_round = ensure_round(project, log)
    if result.review_round is not None and result.review_round.created_at >= started:
        result.created.append("review_round")
    return result


def ensure_round(project: Project, log: Callable[[str], None] = print) -> ReviewRound | None:
    """The demo review round for the expert, once the model's predictions are in (the round
    samples from them); None, with a message, before that."""
    existing = project.rounds.filter(name=ROUND_NAME).first()
    if existing is not None:
        return existing
    mv = project.model_versions.filter(name=MODEL_NAME).first()
    if mv is None or mv.predictions.count() < project.instances.count():
        log("The demo review round is created once the predictions are in (seed_demo --wait).")
        return None
    review_round = review_services.round_create(
        model_version=mv,
        name=ROUND_NAME,
        description=ROUND_DESCRIPTION,
        sampling_strategy=ROUND_SAMPLING,
        created_by=project.created_by,
        experts=list(get_user_model().objects.filter(username="expert")),
        overlap=1,
        blind_first=True,
        explanation_method="gradcam",
    )
    log(f"Review round '{review_round.name}': {review_round.tasks.count()} tasks for 'expert'.")
    return review_round


def _ensure_users(log: Callable[[str], None]) -> dict:
    User = get_user_model()
    users = {}
    for username in DEMO_USERS:
        user, created = User.objects.get_or_create(username=username)
        if created:
            user.set_password(DEMO_PASSWORD)
            # The scientist may use the admin to look at raw rows.
            user.is_staff = username == "scientist"
            user.save()
        users[username] = user
    return users


def _ensure_project(owner) -> tuple[Project, bool]:
    project = Project.objects.filter(slug=PROJECT_SLUG).first()
    if project is not None:
        return project, False
    project = services.project_create(
        name="Rooms (demo)",
        slug=PROJECT_SLUG,
        description=(
            "Generated room scenes with planted failures: "
            + "; ".join(rooms.PLANTED_FAILURES.values())
        ),
        labels=list(rooms.CLASSES),
        concept_vocabulary=list(rooms.CONCEPTS),
        created_by=owner,
    )
    return project, True


def _import_rooms(project: Project, size: DemoSize, log: Callable[[str], None]) -> None:
    """Write the generated images into a manifest zip and import it through the same service
    a user's upload goes through, in this process."""
    manifest = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rooms.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
            for sample in rooms.generate_rooms(
                n_train=size.n_train,
                n_test=size.n_test,
                n_deployment=size.n_deployment,
                seed=size.seed,
            ):
                name = f"{sample.split}/{sample.index:05d}.png"
                buffer = io.BytesIO()
                sample.image.save(buffer, format="PNG", compress_level=1)
                zf.writestr(name, buffer.getvalue())
                manifest.append(
                    {
                        "path": name,
                        "label": sample.label,
                        "split": sample.split,
                        "metadata": {
                            "generator_index": sample.index,
                            "true_label": sample.true_label,
                            "objects": [dict(o) for o in sample.objects],
                            "planted": list(sample.planted),
                        },
                    }
                )
            zf.writestr("manifest.json", json.dumps(manifest))
        with path.open("rb") as fh:
            job = services.dataset_import_start(
                project=project,
                archive_file=File(fh, name="rooms.zip"),
                options=services.ImportOptions(dataset_name=DATASET_NAME),
                created_by=None,
                run_now=True,
            )
        report = services.dataset_import_run(job=job)
    log(f"Imported {report.get('written', 0)} images ({len(report.get('errors', []))} rejected).")


def _train_and_register(project: Project, owner, size: DemoSize) -> tuple[ModelVersion, Job, dict]:
    train = [
        s
        for s in rooms.generate_rooms(
            n_train=size.n_train, n_test=0, n_deployment=0, seed=size.seed
        )
        if s.split == "train"
    ]
    images = np.stack([np.asarray(s.image, dtype=np.uint8) for s in train])
    label_index = {label: i for i, label in enumerate(rooms.CLASSES)}
    labels = np.array([label_index[s.label] for s in train], dtype=np.int64)
    started = time.perf_counter()
    kwargs = {"epochs": size.epochs} if size.epochs else {}
    model, metrics = rooms_cnn.train_rooms_cnn(
        images, labels, num_classes=len(rooms.CLASSES), seed=size.seed, **kwargs
    )
    metrics = dict(metrics) | {"seconds": time.perf_counter() - started}
    spec = services.ModelSpecInput(
        name=MODEL_NAME,
        kind="architecture",
        architecture="rooms_cnn",
        input_size=rooms_cnn.ROOMS_INPUT_SIZE,
        mean=list(rooms_cnn.ROOMS_MEAN),
        std=list(rooms_cnn.ROOMS_STD),
        label_order=list(rooms.CLASSES),
        notes=f"Demo CNN trained by seed_demo: {json.dumps(metrics, default=float)}",
    )
    with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
        torch.save(model.state_dict(), tmp.name)
        with open(tmp.name, "rb") as fh, transaction.atomic():
            mv, job = services.model_version_register(
                project=project,
                spec=spec,
                weights_file=File(fh, name="rooms_cnn.pt"),
                created_by=owner,
            )
    return mv, job, metrics
