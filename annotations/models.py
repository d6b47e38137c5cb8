"""Domain models. Names follow the glossary in PRODUCT.md.

Writes go through ``services.py`` and reads through ``selectors.py``; models hold fields,
constraints and small derived properties only.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path

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
    # A random name: a timestamp matched the prediction job's created_at, which experts and
    # viewers can read, so the weights' name could be derived from the API.
    suffix = Path(filename).suffix[-10:]
    return f"models/{model_version.project_id}/{secrets.token_hex(16)}{suffix}"


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
    """An attribution map for (instance, model version, method, target class, settings).

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
    # "" for the method's default settings (the map review rounds show); else a digest of
    # the settings that define the map (explain_worker.methods.settings_key), so a map
    # with other settings is kept beside the default one, not in its place.
    settings_key = models.CharField(max_length=32, blank=True, default="")
    raw = models.FileField(upload_to="explanations/", max_length=300)
    # True when negative values mean evidence against the target (IG, Occlusion).
    signed = models.BooleanField(default=False)
    overlay = models.FileField(upload_to="explanations/", blank=True, max_length=300)
    thumbnail = models.FileField(upload_to="explanations/", blank=True, max_length=300)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["instance", "model_version", "method", "target", "settings_key"],
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


# --- Review rounds ------------------------------------------------------------------------


class RoundStatus(models.TextChoices):
    OPEN = "open", "Open"
    CLOSED = "closed", "Closed"


class Question(models.TextChoices):
    """The parts of a review a round may ask for. Expectation questions come first."""

    EXPECTED_LABEL = "expected_label", "Expected label"
    EXPECTED_CONFIDENCE = "expected_confidence", "Confidence in the expected label"
    EVIDENCE = "evidence", "Expected evidence (regions)"
    CONCEPTS = "concepts", "Concept tags"
    PREDICTION_VERDICT = "prediction_verdict", "Verdict on the prediction"
    FEATURE_VERDICT = "feature_verdict", "Verdict on the saliency"
    ACCEPTABILITY = "acceptability", "Acceptable error, severity and reason"
    COMMENT = "comment", "Comment"


EXPECTATION_QUESTIONS = (
    Question.EXPECTED_LABEL,
    Question.EXPECTED_CONFIDENCE,
    Question.EVIDENCE,
    Question.CONCEPTS,
)


class ReviewRound(models.Model):
    """A campaign for one model version: which instances, how many reviews each, by whom."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="rounds")
    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="rounds")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    # Names are free text a scientist writes ("test-split errors") and can tell an expert what
    # to expect; in a blind-first round experts see a neutral title unless this is on.
    show_name_to_experts = models.BooleanField(default=False)
    status = models.CharField(max_length=20, choices=RoundStatus.choices, default=RoundStatus.OPEN)
    # The sampling strategy as given (see annotations/sampling.py) and what each part yielded.
    sampling = models.JSONField(default=dict)
    sampling_counts = models.JSONField(default=dict, blank=True)
    overlap = models.PositiveSmallIntegerField(default=1)
    experts = models.ManyToManyField(settings.AUTH_USER_MODEL, related_name="review_rounds")
    due_at = models.DateTimeField(null=True, blank=True)
    blind_first = models.BooleanField(default=True)
    explanation_method = models.CharField(max_length=40, default="gradcam", blank=True)
    questions = models.JSONField(default=list)
    lease_seconds = models.PositiveIntegerField(default=30 * 60)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    # Set when the scientist was told the round is complete, so it is said once.
    completed_notified_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.model_version})"

    def title_for(self, *, as_expert: bool) -> str:
        """What to call the round for a viewer: experts of a blind-first round see a neutral
        title ("Review round 12") unless the scientist chose to show the name."""
        if as_expert and self.blind_first and not self.show_name_to_experts:
            return f"Review round {self.pk}"
        return self.name


class TaskStatus(models.TextChoices):
    OPEN = "open", "Open"
    LEASED = "leased", "Leased"
    SUBMITTED = "submitted", "Submitted"


class ReviewTask(models.Model):
    """One review slot: ``round.overlap`` slots per sampled instance, numbered by ``slot``.

    Slots are handed out lowest ``slot`` first, so instances with fewer reviews come before
    any instance gets a second one; within a slot number, lower ``priority`` first (the
    sampler's order). A slot is claimed with a conditional UPDATE (see
    ``services.reviews.task_next``), so two experts can never hold it at once.
    """

    # No index of its own: task_unique_slot leads with the round.
    round = models.ForeignKey(
        ReviewRound, on_delete=models.CASCADE, related_name="tasks", db_index=False
    )
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="+")
    slot = models.PositiveSmallIntegerField(default=0)
    priority = models.FloatField(default=0)
    status = models.CharField(max_length=20, choices=TaskStatus.choices, default=TaskStatus.OPEN)
    expert = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="review_tasks",
    )
    leased_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    expectation_at = models.DateTimeField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    expired_count = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["round_id", "slot", "priority", "id"]
        constraints = [
            models.UniqueConstraint(fields=["round", "instance", "slot"], name="task_unique_slot"),
            # Never the same instance twice to one expert within a round.
            models.UniqueConstraint(
                fields=["round", "instance", "expert"],
                condition=Q(expert__isnull=False),
                name="task_unique_expert_instance",
            ),
            # One live lease per expert and round: two "next" calls at once (a double click,
            # a retry) give the expert one task, not two. It also serves the lease checks
            # (expiry, "any slot still leased"), as the leases of a round are few.
            models.UniqueConstraint(
                fields=["round", "expert"],
                condition=Q(status=TaskStatus.LEASED),
                name="task_one_lease_per_expert",
            ),
        ]
        # The claim reads the open slots in hand-out order and stops at the first one; a
        # partial index holds only open slots, so a claim or a submit (a task leaving
        # "open") adds no entry to it, and it does not grow with the work done. Statements
        # that should use a partial index or constraint name the status as a literal
        # (annotations.prepared.literal): a partial index cannot serve a parameter.
        indexes = [
            models.Index(
                fields=["round", "slot", "priority", "id"],
                condition=Q(status=TaskStatus.OPEN),
                name="task_open_idx",
            ),
            models.Index(fields=["round", "expert", "status"], name="task_expert_idx"),
        ]

    def __str__(self) -> str:
        return f"task {self.pk} ({self.status})"


class TaskSkip(models.Model):
    """An expert passed on an instance; they are not offered it again in this round."""

    round = models.ForeignKey(ReviewRound, on_delete=models.CASCADE, related_name="skips")
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="+")
    expert = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField(max_length=500)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["round", "instance", "expert"], name="skip_unique_expert_instance"
            )
        ]

    def __str__(self) -> str:
        return f"skip of instance {self.instance_id} by {self.expert_id}"


class LeaseExpiry(models.Model):
    """A lease that ran out: who held it, for the round's progress per expert."""

    task = models.ForeignKey(ReviewTask, on_delete=models.CASCADE, related_name="expiries")
    expert = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    expired_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"lease of task {self.task_id} expired at {self.expired_at}"


class PredictionVerdict(models.TextChoices):
    CORRECT = "correct", "Prediction correct"
    INCORRECT = "incorrect", "Prediction incorrect"
    GROUND_TRUTH_WRONG = "ground_truth_wrong", "Ground truth wrong"
    AMBIGUOUS = "ambiguous", "Ambiguous"


class FeatureVerdict(models.TextChoices):
    RELEVANT = "relevant", "Relevant"
    IRRELEVANT = "irrelevant", "Irrelevant"
    INCOMPLETE = "incomplete", "Incomplete"
    OVER_EMPHASISED = "over_emphasised", "Over-emphasised"
    CANT_TELL = "cant_tell", "Can't tell"


class ErrorReason(models.TextChoices):
    AMBIGUOUS_CASE = "ambiguous_case", "Ambiguous case"
    HUMAN_WOULD_ERR = "human_would_err", "A human would err too"
    RARE_CASE = "rare_case", "Rare case"
    LOW_CONFIDENCE = "low_confidence", "Low confidence"
    LABEL_WRONG = "label_wrong", "Label wrong"
    OTHER = "other", "Other"


class Review(models.Model):
    """An expert's judgement of one task: the expectation, then the verdict.

    Written by ``services.reviews``; every edit after submission keeps the previous state as
    a ReviewVersion.
    """

    task = models.OneToOneField(ReviewTask, on_delete=models.CASCADE, related_name="review")
    round = models.ForeignKey(ReviewRound, on_delete=models.CASCADE, related_name="reviews")
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="reviews")
    expert = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reviews"
    )
    # Phase 1: expectation.
    expected_label = models.CharField(max_length=200, blank=True)
    expected_confidence = models.PositiveSmallIntegerField(null=True, blank=True)
    # [{"type": "box", "points": [[x0, y0], [x1, y1]]} | {"type": "polygon", "points": [...]}]
    evidence = models.JSONField(default=list, blank=True)
    concepts = models.JSONField(default=list, blank=True)
    free_tags = models.JSONField(default=list, blank=True)
    expectation_at = models.DateTimeField(null=True, blank=True)
    # Phase 2: verdict.
    prediction_verdict = models.CharField(
        max_length=30, choices=PredictionVerdict.choices, blank=True
    )
    feature_verdict = models.CharField(max_length=30, choices=FeatureVerdict.choices, blank=True)
    acceptable = models.BooleanField(null=True, blank=True)
    severity = models.PositiveSmallIntegerField(null=True, blank=True)
    reason = models.CharField(max_length=30, choices=ErrorReason.choices, blank=True)
    comment = models.TextField(blank=True)
    # Seconds from lease to submit as the server saw it, and as the client reported it.
    server_seconds = models.FloatField(null=True, blank=True)
    client_seconds = models.FloatField(null=True, blank=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    version = models.PositiveIntegerField(default=1)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(severity__isnull=True) | Q(severity__gte=1, severity__lte=4),
                name="review_severity_range",
            ),
            models.CheckConstraint(
                condition=Q(expected_confidence__isnull=True)
                | Q(expected_confidence__gte=1, expected_confidence__lte=5),
                name="review_confidence_range",
            ),
        ]

    def __str__(self) -> str:
        return f"review {self.pk} of instance {self.instance_id} by {self.expert_id}"


class ReviewVersion(models.Model):
    """The state of a review before an edit; append-only."""

    review = models.ForeignKey(Review, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["review_id", "version"]
        constraints = [
            models.UniqueConstraint(fields=["review", "version"], name="review_version_unique")
        ]

    def __str__(self) -> str:
        return f"review {self.review_id} v{self.version}"


class ReviewDraft(models.Model):
    """What an expert has typed so far for an instance of a round. Kept apart from the task,
    so a draft survives an expired lease and comes back if the expert gets the slot again."""

    round = models.ForeignKey(ReviewRound, on_delete=models.CASCADE, related_name="drafts")
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="+")
    expert = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    data = models.JSONField(default=dict)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["round", "instance", "expert"], name="draft_unique_expert_instance"
            )
        ]

    def __str__(self) -> str:
        return f"draft of instance {self.instance_id} by {self.expert_id}"


class IdempotencyRecord(models.Model):
    """The response to a request sent with an ``Idempotency-Key`` header, replayed when the
    same user sends the same key again (a client retrying after a dropped connection)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=200)
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=500)
    status_code = models.PositiveSmallIntegerField()
    body = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_unique_key")
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.path} ({self.key})"


# --- Instance discussion ------------------------------------------------------------------


class InstanceComment(models.Model):
    """A note in the discussion of one instance (the instance page's thread).

    Kept apart from reviews on purpose: a review is one expert's structured judgement inside
    a round, a comment is free discussion among scientists and approvers about the instance
    across rounds and model versions.
    """

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="comments")
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["instance_id", "created_at", "id"]
        indexes = [models.Index(fields=["instance", "created_at"], name="comment_instance_idx")]

    def __str__(self) -> str:
        return f"comment {self.pk} on instance {self.instance_id}"
