"""Domain models. Names follow the glossary in PRODUCT.md.

Writes go through ``services.py`` and reads through ``selectors.py``; models hold fields,
constraints and small derived properties only.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Role(models.TextChoices):
    SCIENTIST = "scientist", "Scientist"
    EXPERT = "expert", "Expert"
    APPROVER = "approver", "Approver"
    VIEWER = "viewer", "Viewer"


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    TEST = "test", "Test"
    DEPLOYMENT = "deployment", "Deployment sample"


class Project(models.Model):
    """One prediction task: its label set and the concept vocabulary experts tag with."""

    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    # Ordered class names; a ModelVersion's label order maps its outputs onto these.
    labels = models.JSONField(default=list)
    concept_vocabulary = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Membership(models.Model):
    """A user's role in a project. One person may hold several roles (one row each)."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["project", "user", "role"], name="membership_unique_role"
            )
        ]

    def __str__(self) -> str:
        return f"{self.user} as {self.role} in {self.project}"


class Dataset(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="datasets")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="dataset_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.project.slug}/{self.name}"


def instance_upload_to(instance: Instance, filename: str) -> str:
    # Content-addressed: the same bytes always land on the same path, and a user-supplied
    # file name never decides where we write.
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else "img"
    h = instance.content_hash
    return f"instances/{instance.dataset.project_id}/{h[:2]}/{h}.{ext}"


class Instance(models.Model):
    """An image with its ground truth. ``project`` is denormalised from the dataset so that
    access checks and per-project queries need no join."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="instances")
    dataset = models.ForeignKey(Dataset, on_delete=models.CASCADE, related_name="instances")
    image = models.ImageField(
        upload_to=instance_upload_to, width_field="width", height_field="height", max_length=300
    )
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    # Blank only for unlabelled deployment samples.
    label = models.CharField(max_length=200, blank=True)
    split = models.CharField(max_length=20, choices=Split.choices, default=Split.TRAIN)
    metadata = models.JSONField(default=dict, blank=True)
    content_hash = models.CharField(max_length=64)
    original_name = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["dataset", "content_hash"], name="instance_unique_content"
            )
        ]
        indexes = [models.Index(fields=["project", "split", "label"])]

    def __str__(self) -> str:
        return f"instance {self.pk} ({self.label or 'unlabelled'})"


class ModelKind(models.TextChoices):
    ARCHITECTURE = "architecture", "Architecture + state dict"
    TORCHSCRIPT = "torchscript", "TorchScript file"
    PREDICTIONS_ONLY = "predictions_only", "Imported predictions only"


class ModelStatus(models.TextChoices):
    READY = "ready", "Ready"
    ARCHIVED = "archived", "Archived"


def model_upload_to(model_version: ModelVersion, filename: str) -> str:
    return f"models/{model_version.project_id}/{timezone.now():%Y%m%d%H%M%S}-{filename[-80:]}"


class ModelVersion(models.Model):
    """A classifier of a project. Validated by a forward pass before it is saved."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="model_versions")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=20, choices=ModelKind.choices)
    # A torchvision classification builder name, or a built-in such as "rooms_cnn".
    architecture = models.CharField(max_length=100, blank=True)
    weights = models.FileField(upload_to=model_upload_to, blank=True, max_length=300)
    input_size = models.PositiveIntegerField(default=224)
    mean = models.JSONField(default=list)
    std = models.JSONField(default=list)
    # Class names in the order of the model's outputs; every name is in project.labels.
    label_order = models.JSONField(default=list)
    status = models.CharField(max_length=20, choices=ModelStatus.choices, default=ModelStatus.READY)
    # Module names that produce feature maps (valid Grad-CAM layers) and the default one,
    # read from the model at registration so requests can validate a layer without loading it.
    layer_names = models.JSONField(default=list, blank=True)
    default_layer = models.CharField(max_length=200, blank=True)
    notes = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project_id", "version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="model_unique_version")
        ]

    def __str__(self) -> str:
        return f"{self.project.slug} v{self.version} ({self.name})"


class Prediction(models.Model):
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="predictions")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="predictions"
    )
    # In the order of model_version.label_order.
    probabilities = models.JSONField()
    label = models.CharField(max_length=200)
    confidence = models.FloatField()
    # Penultimate-layer activations as little-endian float32 bytes: compact, and the
    # clustering and similarity search read them straight into NumPy.
    embedding = models.BinaryField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["instance_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["instance", "model_version"], name="prediction_unique_instance_model"
            )
        ]
        indexes = [models.Index(fields=["model_version", "label"])]

    def __str__(self) -> str:
        return f"{self.model_version} on instance {self.instance_id}: {self.label}"

    @property
    def embedding_array(self) -> np.ndarray | None:
        if self.embedding is None:
            return None
        return np.frombuffer(bytes(self.embedding), dtype="<f4")


class Explanation(models.Model):
    """An attribution map for (instance, model version, method, target class).

    The raw map is stored as compressed float16 by the worker; the colour overlay and the
    thumbnail are rendered on first view and cached (rendering costs more than attributing,
    see PERFORMANCE.md). ``method="imported"`` holds maps a team uploaded with its
    predictions. ``params`` records the settings it was computed with (steps, layer, ...).
    """

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="explanations")
    model_version = models.ForeignKey(
        ModelVersion, on_delete=models.CASCADE, related_name="explanations"
    )
    method = models.CharField(max_length=40)
    target = models.CharField(max_length=200)
    params = models.JSONField(default=dict, blank=True)
    raw = models.FileField(upload_to="explanations/", max_length=300)
    # True when negative values mean evidence against the target (IG, Occlusion).
    signed = models.BooleanField(default=False)
    overlay = models.FileField(upload_to="explanations/", blank=True, max_length=300)
    thumbnail = models.FileField(upload_to="explanations/", blank=True, max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["instance", "model_version", "method", "target"],
                name="explanation_unique_key",
            )
        ]

    def __str__(self) -> str:
        return f"{self.method} for {self.target} on instance {self.instance_id}"


class JobKind(models.TextChoices):
    IMPORT_DATASET = "import_dataset", "Dataset import"
    IMPORT_PREDICTIONS = "import_predictions", "Predictions import"
    PREDICT = "predict", "Predictions"
    EXPLAIN = "explain", "Explanations"


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Job(models.Model):
    """Long work done by a worker, with progress the API, CLI and pages read."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="jobs")
    kind = models.CharField(max_length=30, choices=JobKind.choices)
    status = models.CharField(max_length=20, choices=JobStatus.choices, default=JobStatus.QUEUED)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    dataset = models.ForeignKey(
        Dataset, null=True, blank=True, on_delete=models.CASCADE, related_name="jobs"
    )
    params = models.JSONField(default=dict, blank=True)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    # Hostname of the worker running the job; a job whose worker stops sending heartbeats
    # is re-queued (see services.jobs_requeue_orphaned).
    worker = models.CharField(max_length=255, blank=True)
    # Outcome details, e.g. the per-file report of a dataset import.
    result = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["project", "status"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(done__lte=models.F("total")) | Q(total=0), name="job_done_le_total"
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} job {self.pk} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)

    @property
    def rate_per_s(self) -> float | None:
        """Items per second since the job started; None before it has done anything."""
        if not self.started_at or self.done == 0:
            return None
        end = self.finished_at or timezone.now()
        seconds = (end - self.started_at).total_seconds()
        return self.done / seconds if seconds > 0 else None

    @property
    def eta(self) -> timedelta | None:
        rate = self.rate_per_s
        if rate is None or self.is_finished:
            return None
        return timedelta(seconds=max(self.total - self.done, 0) / rate)


class WorkerHeartbeat(models.Model):
    """Written by every Celery worker every few seconds; /healthz reads it.

    Stored in the database rather than asked over the broker so it works on every
    transport, including the embedded filesystem one, which has no broadcast replies.
    """

    hostname = models.CharField(max_length=255, unique=True)
    queues = models.JSONField(default=list)
    pid = models.PositiveIntegerField(default=0)
    last_seen = models.DateTimeField()

    def __str__(self) -> str:
        return self.hostname
