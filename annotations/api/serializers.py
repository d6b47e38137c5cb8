"""Input serializers parse requests; output serializers shape responses. Domain rules live in
services, not here."""

from __future__ import annotations

from django.urls import reverse
from rest_framework import serializers

from annotations import limits
from annotations.api.strict import StrictInput
from annotations.models import (
    Dataset,
    Explanation,
    Instance,
    Job,
    ModelKind,
    ModelVersion,
    Prediction,
    Project,
    Role,
    Split,
)


class ProjectOutput(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = ["id", "name", "slug", "description", "labels", "concept_vocabulary", "created_at"]


class ProjectInput(StrictInput):
    name = serializers.CharField(max_length=limits.NAME)
    slug = serializers.SlugField(max_length=100, required=False, allow_blank=True)
    description = serializers.CharField(
        required=False, allow_blank=True, max_length=limits.DESCRIPTION
    )
    labels = serializers.ListField(
        child=serializers.CharField(max_length=limits.NAME), min_length=2
    )
    concept_vocabulary = serializers.ListField(
        child=serializers.CharField(max_length=limits.NAME), required=False
    )


class MembershipInput(StrictInput):
    username = serializers.CharField(max_length=150)
    role = serializers.ChoiceField(choices=Role.choices)


class MemberOutput(serializers.Serializer):
    username = serializers.CharField(source="user.username")
    role = serializers.ChoiceField(choices=Role.choices)


class MemberRemovedOutput(serializers.Serializer):
    username = serializers.CharField()
    removed_roles = serializers.ListField(child=serializers.CharField())


class DatasetOutput(serializers.ModelSerializer):
    instance_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Dataset
        fields = ["id", "project", "name", "description", "instance_count", "created_at"]


class DatasetImportInput(StrictInput):
    name = serializers.CharField(max_length=limits.NAME)
    archive = serializers.FileField(help_text="A zip: ImageFolder layout, or images + manifest.")
    manifest = serializers.FileField(
        required=False, help_text="CSV or JSON manifest, if not inside the zip."
    )
    default_split = serializers.ChoiceField(choices=Split.choices, default=Split.TRAIN)
    on_error = serializers.ChoiceField(
        choices=[("skip", "skip bad files"), ("reject", "reject the whole import")],
        default="skip",
    )


class InstanceOutput(serializers.ModelSerializer):
    image_url = serializers.SerializerMethodField()

    class Meta:
        model = Instance
        fields = [
            "id",
            "project",
            "dataset",
            "label",
            "split",
            "metadata",
            "width",
            "height",
            "content_hash",
            "original_name",
            "image_url",
        ]

    def get_image_url(self, obj: Instance) -> str:
        return reverse("api-instance-image", args=[obj.pk])


class ModelVersionOutput(serializers.ModelSerializer):
    # Always present: lists annotate it (selectors.model_version_list, no query per row);
    # a single version (detail, registration) counts it.
    prediction_count = serializers.SerializerMethodField()

    def get_prediction_count(self, obj: ModelVersion) -> int:
        count = getattr(obj, "prediction_count", None)
        return obj.predictions.count() if count is None else count

    class Meta:
        model = ModelVersion
        fields = [
            "id",
            "project",
            "version",
            "name",
            "kind",
            "architecture",
            "input_size",
            "mean",
            "std",
            "label_order",
            "status",
            "notes",
            "created_at",
            "prediction_count",
        ]


class _ModelSpecFields(StrictInput):
    name = serializers.CharField(max_length=limits.NAME)
    input_size = serializers.IntegerField(min_value=8, max_value=1024, default=224)
    mean = serializers.ListField(child=serializers.FloatField(), default=[0.485, 0.456, 0.406])
    std = serializers.ListField(child=serializers.FloatField(), default=[0.229, 0.224, 0.225])
    label_order = serializers.ListField(
        child=serializers.CharField(max_length=limits.NAME), required=False
    )
    notes = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=limits.DESCRIPTION
    )


class ModelRegisterInput(_ModelSpecFields):
    kind = serializers.ChoiceField(
        choices=[(ModelKind.ARCHITECTURE, "architecture"), (ModelKind.TORCHSCRIPT, "torchscript")]
    )
    architecture = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=100
    )
    weights = serializers.FileField(help_text="A state dict (.pt/.pth) or a TorchScript file.")


class PredictionsImportInput(_ModelSpecFields):
    predictions = serializers.FileField(help_text="CSV or JSON of per-instance probabilities.")
    saliency = serializers.FileField(
        required=False, help_text="Zip of maps named <instance id>.png or <instance id>.npy."
    )


class PredictionOutput(serializers.ModelSerializer):
    class Meta:
        model = Prediction
        fields = ["id", "instance", "model_version", "label", "confidence", "probabilities"]


class JobOutput(serializers.ModelSerializer):
    rate_per_s = serializers.FloatField(read_only=True, allow_null=True)
    eta_seconds = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "url",
            "project",
            "kind",
            "status",
            "model_version",
            "dataset",
            "done",
            "total",
            "rate_per_s",
            "eta_seconds",
            "error",
            "result",
            "created_at",
            "started_at",
            "finished_at",
        ]

    def get_eta_seconds(self, obj: Job) -> float | None:
        return None if obj.eta is None else round(obj.eta.total_seconds(), 1)

    def get_url(self, obj: Job) -> str:
        return reverse("api-job-detail", args=[obj.pk])


class ExplainSettings(StrictInput):
    """Method settings; which apply depends on the method (see the README)."""

    n_steps = serializers.IntegerField(required=False, help_text="IntegratedGradients steps")
    internal_batch_size = serializers.IntegerField(
        required=False, help_text="IntegratedGradients: scaled inputs per forward pass"
    )
    layer = serializers.CharField(
        required=False, max_length=limits.NAME, help_text="GradCAM target layer"
    )
    window = serializers.IntegerField(required=False, help_text="Occlusion window (px)")
    stride = serializers.IntegerField(required=False, help_text="Occlusion stride (px)")


class ExplanationRequestInput(ExplainSettings):
    instance = serializers.IntegerField()
    method = serializers.CharField(
        help_text="saliency, integrated_gradients (ig), gradcam, occlusion"
    )
    target = serializers.CharField(
        required=False, allow_null=True, help_text="a class name; default: the predicted class"
    )


class ExplainBulkInput(ExplainSettings):
    method = serializers.CharField()
    target = serializers.CharField(required=False, allow_null=True)
    split = serializers.CharField(required=False, allow_null=True)
    instance_ids = serializers.ListField(child=serializers.IntegerField(), required=False)


class ExplanationOutput(serializers.ModelSerializer):
    raw_url = serializers.SerializerMethodField()
    overlay_url = serializers.SerializerMethodField()
    thumbnail_url = serializers.SerializerMethodField()

    class Meta:
        model = Explanation
        fields = [
            "id",
            "instance",
            "model_version",
            "method",
            "target",
            "params",
            "settings_key",
            "signed",
            "created_at",
            "raw_url",
            "overlay_url",
            "thumbnail_url",
        ]

    def get_raw_url(self, obj: Explanation) -> str:
        return reverse("api-explanation-file", args=[obj.pk, "raw"])

    def get_overlay_url(self, obj: Explanation) -> str:
        return reverse("api-explanation-file", args=[obj.pk, "overlay"])

    def get_thumbnail_url(self, obj: Explanation) -> str:
        return reverse("api-explanation-file", args=[obj.pk, "thumbnail"])
