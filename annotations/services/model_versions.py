"""Model registration (validated by a time-limited forward pass) and stored predictions."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import File
from django.db import transaction
from django.db.models import Max
from PIL import Image

from annotations.models import (
    Instance,
    Job,
    JobKind,
    ModelKind,
    ModelVersion,
    Prediction,
    Project,
)
from annotations.services._errors import field_error
from annotations.services.jobs import enqueue_on_commit, job_create

if TYPE_CHECKING:
    from explain_worker import model_loading

# explain_worker.attribution and .model_loading import torch (about 700 MB): they are
# imported inside the functions that load a model, so web processes that never register
# one stay small.

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpecInput:
    name: str
    kind: str
    input_size: int
    mean: Sequence[float]
    std: Sequence[float]
    label_order: Sequence[str] = ()
    architecture: str = ""
    notes: str = ""


def validate_preprocessing(project: Project, spec: ModelSpecInput) -> list[str]:
    if not spec.name.strip():
        raise field_error("name", "Give the model version a name.")
    if spec.kind not in ModelKind.values:
        raise field_error("kind", f"Unknown kind '{spec.kind}'; use one of {ModelKind.values}.")
    if not 8 <= spec.input_size <= 1024:
        raise field_error("input_size", "The input size must be between 8 and 1024 pixels.")
    for field, values in (("mean", spec.mean), ("std", spec.std)):
        if len(values) != 3 or not all(isinstance(v, int | float) for v in values):
            raise field_error(field, f"Give three numbers for {field}, one per RGB channel.")
    if any(v <= 0 for v in spec.std):
        raise field_error("std", "Every std value must be positive.")
    label_order = list(spec.label_order) or list(project.labels)
    unknown = [label for label in label_order if label not in project.labels]
    if unknown:
        raise field_error(
            "label_order", f"Not in the project's label set: {', '.join(map(str, unknown))}."
        )
    if len(set(label_order)) != len(label_order):
        raise field_error("label_order", "A class appears twice in the label order.")
    return label_order


def _sample_image(project: Project) -> Image.Image:
    instance = Instance.objects.filter(project=project).order_by("id").first()
    if instance is None:
        raise field_error(
            "project", "Import a dataset first: the model is validated on one of its images."
        )
    with instance.image.open("rb") as fh:
        image = Image.open(fh)
        image.load()
    return image.convert("RGB")


def model_validation_seconds() -> float:
    """The time limit of a model's validating forward pass: the setting, else the environment
    variable ``MODEL_VALIDATION_SECONDS``, else 20 seconds."""
    value = getattr(settings, "MODEL_VALIDATION_SECONDS", None)
    if value is None:
        value = os.environ.get("MODEL_VALIDATION_SECONDS") or 20
    seconds = float(value)
    if not seconds > 0:
        raise ImproperlyConfigured("MODEL_VALIDATION_SECONDS must be a positive number.")
    return seconds


def next_version(project: Project) -> int:
    # Callers hold a lock on the project row, so two registrations cannot take one number.
    return (project.model_versions.aggregate(v=Max("version"))["v"] or 0) + 1


def model_version_register(
    *, project: Project, spec: ModelSpecInput, weights_file: File, created_by: Any
) -> tuple[ModelVersion, Job]:
    """Validate a PyTorch model by a forward pass on one instance, save it and queue its
    predictions. Raises ValidationError naming the field when the model does not fit."""
    from explain_worker import model_loading, model_validation

    if spec.kind == ModelKind.PREDICTIONS_ONLY:
        raise field_error("kind", "Use the predictions import for predictions-only models.")
    label_order = validate_preprocessing(project, spec)
    if spec.kind == ModelKind.ARCHITECTURE and not spec.architecture:
        raise field_error("architecture", "Name the architecture, e.g. resnet18.")
    if spec.kind == ModelKind.ARCHITECTURE and spec.architecture not in (
        model_loading.list_architectures()
    ):
        raise field_error(
            "architecture",
            f"Unknown architecture '{spec.architecture}'. Use a torchvision classification "
            "model name (GET /api/architectures/ lists them) or export TorchScript.",
        )
    sample = _sample_image(project)
    with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
        for chunk in weights_file.chunks():
            tmp.write(chunk)
        tmp.flush()
        loaded_spec = _spec_for(spec.kind, spec.architecture, tmp.name, label_order, spec)
        # The uploaded model runs in a child process that is killed after the time limit: a
        # TorchScript forward pass can loop forever, and this is a web request.
        try:
            checked = model_validation.validate_in_subprocess(
                loaded_spec, sample, labels=label_order, timeout=model_validation_seconds()
            )
        except model_loading.ModelLoadError as exc:
            raise field_error("weights", str(exc)) from exc
        layer_names = checked.layer_names
        default_layer = checked.default_layer
        with transaction.atomic():
            Project.objects.select_for_update().get(pk=project.pk)
            mv = ModelVersion(
                project=project,
                version=next_version(project),
                name=spec.name,
                kind=spec.kind,
                architecture=spec.architecture if spec.kind == ModelKind.ARCHITECTURE else "",
                input_size=spec.input_size,
                mean=list(spec.mean),
                std=list(spec.std),
                label_order=label_order,
                layer_names=layer_names,
                default_layer=default_layer,
                notes=spec.notes,
                created_by=created_by,
            )
            tmp.seek(0)
            mv.weights.save(Path(weights_file.name or "weights.pt").name, File(tmp), save=False)
            mv.save()
            job = predictions_compute_start(model_version=mv, created_by=created_by)
    return mv, job


def _spec_for(
    kind: str, architecture: str, path: str, label_order: Sequence[str], spec: Any
) -> model_loading.ModelSpec:
    from explain_worker import model_loading

    return model_loading.ModelSpec(
        kind=kind,
        weights_path=path,
        num_classes=len(label_order),
        input_size=spec.input_size,
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        architecture=architecture or None,
    )


def local_weights_path(model_version: ModelVersion) -> str:
    """A local file holding the model version's weights, for the worker (PyTorch loads from
    a path). On a filesystem storage, the stored file itself. On object storage (S3), which
    has no local paths, a copy in ``MODEL_CACHE_DIR`` fetched on first use and kept: a
    stored file never changes (a new upload gets a new name, so a new copy)."""
    weights = model_version.weights
    try:
        return weights.path
    except NotImplementedError:
        pass
    digest = hashlib.sha256(weights.name.encode()).hexdigest()[:16]
    cache_dir = Path(settings.MODEL_CACHE_DIR)
    target = cache_dir / f"{model_version.pk}-{digest}{Path(weights.name).suffix}"
    if not target.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Written beside it and renamed: a worker never reads a half-fetched file.
        with tempfile.NamedTemporaryFile(dir=cache_dir, delete=False) as tmp:
            try:
                with weights.open("rb") as source:
                    shutil.copyfileobj(source, tmp)
                tmp.flush()
                os.fchmod(tmp.fileno(), 0o644)  # not the temporary file's 0600
            except BaseException:
                os.unlink(tmp.name)
                raise
        os.replace(tmp.name, target)
    return str(target)


def model_spec(model_version: ModelVersion) -> model_loading.ModelSpec:
    """The Django-free description of a stored model version, for the worker."""
    return _spec_for(
        model_version.kind,
        model_version.architecture,
        local_weights_path(model_version),
        model_version.label_order,
        model_version,
    )


def predictions_compute_start(*, model_version: ModelVersion, created_by: Any = None) -> Job:
    """Queue the model's predictions on every instance of the project."""
    if model_version.kind == ModelKind.PREDICTIONS_ONLY:
        raise field_error(
            "model_version",
            "This model version has no model to run; import its predictions instead.",
        )
    job = job_create(
        project=model_version.project,
        kind=JobKind.PREDICT,
        model_version=model_version,
        created_by=created_by,
        total=Instance.objects.filter(project_id=model_version.project_id).count(),
    )
    enqueue_on_commit("explain_worker.tasks.compute_predictions", job.pk)
    return job


def predictions_write(
    *,
    model_version: ModelVersion,
    instance_ids: Sequence[int],
    probabilities: np.ndarray,
    embeddings: np.ndarray | None,
) -> int:
    """Store one batch of predictions. Existing (instance, model version) rows are kept, so a
    batch repeated after a crash adds nothing. Returns the number of rows in the batch."""
    labels = model_version.label_order
    probs = np.asarray(probabilities, dtype=np.float64)
    top = probs.argmax(axis=1)
    rows = [
        Prediction(
            instance_id=iid,
            model_version=model_version,
            probabilities=[round(float(p), 6) for p in probs[i]],
            label=labels[int(top[i])],
            confidence=float(probs[i, top[i]]),
            embedding=(
                None if embeddings is None else np.asarray(embeddings[i], dtype="<f4").tobytes()
            ),
        )
        for i, iid in enumerate(instance_ids)
    ]
    Prediction.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)
