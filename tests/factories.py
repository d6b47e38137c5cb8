"""Small builders for test data: users with roles, projects, images and tiny models."""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import torch
from django.contrib.auth import get_user_model
from PIL import Image

from annotations import services
from annotations.models import Project, Role

LABELS = ["cat", "dog", "bird"]
_counter = itertools.count()


def make_image_bytes(
    color: tuple[int, int, int] | None = None, size: int = 24, fmt: str = "PNG"
) -> bytes:
    """A distinct small image each call unless a colour is given."""
    if color is None:
        n = next(_counter)
        color = (n * 37 % 256, n * 91 % 256, n * 53 % 256)
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buffer, format=fmt)
    return buffer.getvalue()


def make_user(username: str, password: str = "pw-123456"):
    return get_user_model().objects.create_user(username=username, password=password)


def make_project(owner=None, slug: str = "pets", labels: list[str] | None = None) -> Project:
    owner = owner or make_user(f"owner-{slug}")
    return services.project_create(
        name=slug.title(),
        slug=slug,
        labels=labels or LABELS,
        created_by=owner,
        concept_vocabulary=["fur", "beak"],
    )


def add_member(project: Project, username: str, role: str = Role.EXPERT):
    user = make_user(username)
    services.membership_add(project=project, user=user, role=role)
    return user


def imagefolder_files(
    per_class: int = 3, labels: list[str] | None = None, split: str | None = None
) -> dict[str, bytes]:
    prefix = f"{split}/" if split else ""
    return {
        f"{prefix}{label}/{i}.png": make_image_bytes()
        for label in (labels or LABELS)
        for i in range(per_class)
    }


def write_rooms_cnn_weights(path: Path, num_classes: int = len(LABELS), seed: int = 0) -> Path:
    from explain_worker.rooms_cnn import RoomsCNN

    torch.manual_seed(seed)
    torch.save(RoomsCNN(num_classes=num_classes).state_dict(), path)
    return path


def import_images(project: Project, archive, name: str = "d"):
    """Import a zip (file-like) into a dataset of ``project`` in this process."""
    job = services.dataset_import_start(
        project=project,
        archive_file=archive,
        options=services.ImportOptions(dataset_name=name),
        created_by=None,
        run_now=True,
    )
    services.dataset_import_run(job=job)
    return job


def rooms_cnn_upload(num_classes: int = len(LABELS), name: str = "cnn.pt") -> io.BytesIO:
    """An untrained RoomsCNN state dict as an upload."""
    from explain_worker.rooms_cnn import RoomsCNN

    buffer = io.BytesIO()
    torch.save(RoomsCNN(num_classes=num_classes).state_dict(), buffer)
    buffer.seek(0)
    buffer.name = name
    return buffer


def register_rooms_cnn_here(project: Project, input_size: int = 32):
    """Register an untrained RoomsCNN through the service (no HTTP); returns (model
    version, the queued prediction job)."""
    from django.core.files import File

    return services.model_version_register(
        project=project,
        spec=services.ModelSpecInput(
            name="cnn",
            kind="architecture",
            architecture="rooms_cnn",
            input_size=input_size,
            mean=[0.5] * 3,
            std=[0.25] * 3,
        ),
        weights_file=File(rooms_cnn_upload(), name="cnn.pt"),
        created_by=None,
    )


def register_rooms_cnn(client, project: Project, input_size: int = 24):
    """Register an untrained RoomsCNN through the API; returns the response."""
    return client.post(
        f"/api/projects/{project.pk}/model-versions/",
        {
            "name": "cnn",
            "kind": "architecture",
            "architecture": "rooms_cnn",
            "input_size": input_size,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
            "weights": rooms_cnn_upload(),
        },
        format="multipart",
    )
