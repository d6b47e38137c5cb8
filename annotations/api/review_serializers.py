"""Serializers of review rounds, tasks and reviews. The task payload is blind-first aware:
the model's view of an instance is only included once the expert has given theirs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.urls import reverse
from rest_framework import serializers

from annotations import limits
from annotations.api.strict import StrictInput
from annotations.models import Explanation, Prediction, Question, Review, ReviewRound, ReviewTask
from annotations.services import explanations
from explain_worker import rendering


class RoundOutput(serializers.ModelSerializer):
    """A round. For a user who is only an expert in the project (context ``expert_only``),
    how the sample was drawn and who else reviews are left out: the sampling parts (say,
    "confident errors") would tell them what to expect before their blind judgement."""

    HIDDEN_FROM_EXPERTS = ("sampling", "sampling_counts", "experts")

    experts = serializers.SlugRelatedField(many=True, read_only=True, slug_field="username")

    def to_representation(self, instance: ReviewRound) -> dict[str, Any]:
        data = super().to_representation(instance)
        user_id = self.context.get("user_id")
        # Hidden from the round's own experts whatever other roles they hold (a viewer who
        # reviews would otherwise see how the sample was drawn), and from expert-only users.
        of_the_round = user_id is not None and any(u.pk == user_id for u in instance.experts.all())
        if self.context.get("expert_only") or of_the_round:
            for name in self.HIDDEN_FROM_EXPERTS:
                data.pop(name, None)
            # A name or description can say what the sample is ("test-split errors").
            data["name"] = instance.title_for(as_expert=True)
            if data["name"] != instance.name:
                data["description"] = ""
        return data

    class Meta:
        model = ReviewRound
        fields = [
            "id",
            "project",
            "model_version",
            "name",
            "description",
            "show_name_to_experts",
            "status",
            "sampling",
            "sampling_counts",
            "overlap",
            "experts",
            "due_at",
            "blind_first",
            "explanation_method",
            "questions",
            "lease_seconds",
            "created_at",
            "closed_at",
        ]


class RoundInput(StrictInput):
    model_version = serializers.IntegerField()
    name = serializers.CharField(max_length=limits.NAME)
    description = serializers.CharField(
        required=False, allow_blank=True, default="", max_length=limits.ROUND_DESCRIPTION
    )
    show_name_to_experts = serializers.BooleanField(
        default=False,
        help_text="In a blind-first round experts see a neutral title unless this is on: a "
        "name like 'test-split errors' tells them what to expect.",
    )
    sampling = serializers.JSONField(help_text="The sampling strategy (see the README).")
    experts = serializers.ListField(
        child=serializers.CharField(max_length=150),
        required=False,
        default=list,
        help_text="usernames",
    )
    overlap = serializers.IntegerField(default=1)
    due_at = serializers.DateTimeField(required=False, allow_null=True)
    blind_first = serializers.BooleanField(default=True)
    explanation_method = serializers.CharField(required=False, allow_blank=True, default="gradcam")
    questions = serializers.ListField(child=serializers.CharField(), required=False)
    lease_seconds = serializers.IntegerField(required=False)


class PreviewInput(StrictInput):
    model_version = serializers.IntegerField()
    sampling = serializers.JSONField()


class ExpertsInput(StrictInput):
    experts = serializers.ListField(child=serializers.CharField(max_length=150), min_length=1)


class SkipInput(StrictInput):
    reason = serializers.CharField(max_length=limits.SKIP_REASON)


class ReviewOutput(serializers.ModelSerializer):
    class Meta:
        model = Review
        fields = [
            "id",
            "task",
            "round",
            "instance",
            "expert",
            "expected_label",
            "expected_confidence",
            "evidence",
            "concepts",
            "free_tags",
            "expectation_at",
            "prediction_verdict",
            "feature_verdict",
            "acceptable",
            "severity",
            "reason",
            "comment",
            "server_seconds",
            "client_seconds",
            "submitted_at",
            "version",
        ]


_DATETIME = serializers.DateTimeField()


def review_data(review: Review) -> dict[str, Any]:
    """``ReviewOutput(review).data``, without building a serializer: DRF makes a
    ModelSerializer's fields anew for every instance, which was a fifth of the CPU of an
    expert's submit. Same keys, same values (``tests/annotations/test_reviews.py`` compares
    the two)."""
    data: dict[str, Any] = {}
    for name in ReviewOutput.Meta.fields:
        field = Review._meta.get_field(name)
        value = getattr(review, field.attname)
        if isinstance(value, datetime):
            value = _DATETIME.to_representation(value)
        data[name] = value
    return data


def prediction_summary(task: ReviewTask) -> dict[str, Any] | None:
    """The model's prediction for the task's instance: label, confidence and top classes.
    A task from ``selectors.task_in_context`` brings it along."""
    if hasattr(task, "loaded_prediction"):
        prediction = task.loaded_prediction
    else:
        prediction = (
            Prediction.objects.filter(
                instance_id=task.instance_id, model_version_id=task.round.model_version_id
            )
            .only("label", "confidence", "probabilities")
            .first()
        )
    if prediction is None:
        return None
    labels = task.round.model_version.label_order
    ranked = sorted(zip(labels, prediction.probabilities, strict=False), key=lambda p: -p[1])
    return {
        "label": prediction.label,
        "confidence": prediction.confidence,
        "top": [{"label": label, "probability": p} for label, p in ranked[:5]],
    }


def saliency_explanation(task: ReviewTask, predicted: str | None) -> Explanation | None:
    """The round's saliency map of the task's instance for the predicted class, if computed."""
    method = task.round.explanation_method
    if not method or predicted is None:
        return None
    loaded = getattr(task, "loaded_prediction", None)
    if loaded is not None and loaded.label == predicted:  # from selectors.task_in_context
        return task.loaded_saliency
    return (
        Explanation.objects.filter(
            instance_id=task.instance_id,
            model_version_id=task.round.model_version_id,
            method=method,
            target=predicted,
            settings_key="",  # the method's default settings, as rounds show
        )
        .order_by()
        .first()
    )


def _saliency(task: ReviewTask, predicted: str | None, exp: Explanation | None) -> dict | None:
    method = task.round.explanation_method
    if not method or predicted is None:
        return None
    if exp is None:
        body: dict[str, Any] = {"method": method, "ready": False}
        failed = explanations.saliency_failure(
            model_version=task.round.model_version,
            instance_id=task.instance_id,
            split=task.instance.split,
            method=method,
        )
        if failed:
            # The page stops polling and says the map is unavailable; the verdict goes on.
            body["failed"] = failed
        return body
    return {
        "method": method,
        "ready": True,
        "target": exp.target,
        "signed": exp.signed,
        "overlay_url": reverse("api-task-saliency", args=[task.pk, "overlay"]),
        "raw_url": reverse("api-task-saliency", args=[task.pk, "raw"]),
    }


def revealed(task: ReviewTask) -> bool:
    """Whether the expert may see the model's side of this task."""
    asked = set(task.round.questions)
    needs_expectation = task.round.blind_first and any(
        q in asked
        for q in (
            Question.EXPECTED_LABEL,
            Question.EXPECTED_CONFIDENCE,
            Question.EVIDENCE,
            Question.CONCEPTS,
        )
    )
    return not needs_expectation or task.expectation_at is not None


def task_payload(task: ReviewTask, *, draft: dict[str, Any], review: Review | None) -> dict:
    review_round = task.round
    project = review_round.project
    phase = (
        "done"
        if task.status == "submitted"
        else ("verdict" if revealed(task) and task.expectation_at else "expectation")
    )
    body: dict[str, Any] = {
        "id": task.pk,
        "round": review_round.pk,
        "status": task.status,
        "phase": phase,
        "lease_expires_at": task.lease_expires_at,
        "blind_first": review_round.blind_first,
        "questions": review_round.questions,
        "label_set": project.labels,
        "concept_vocabulary": project.concept_vocabulary,
        "instance": {
            "id": task.instance_id,
            "width": task.instance.width,
            "height": task.instance.height,
            "image_url": reverse("api-task-image", args=[task.pk]),
        },
        "draft": draft,
        "review": review_data(review) if review else None,
        "revealed": revealed(task),
    }
    if body["revealed"]:
        prediction = prediction_summary(task)
        body["prediction"] = prediction
        body["ground_truth"] = task.instance.label or None
        predicted = prediction["label"] if prediction else None
        exp = saliency_explanation(task, predicted)
        body["saliency"] = _saliency(task, predicted, exp)
        body["alignment"] = None
        if body["saliency"] and body["saliency"]["ready"]:
            # The overlay PNG carries a legend strip below the picture; the review page
            # crops it off to lay the picture over the image.
            body["saliency"]["legend_height"] = rendering.LEGEND_HEIGHT
            if exp is not None and review is not None and review.evidence:
                body["alignment"] = explanations.evidence_alignment(
                    explanation=exp,
                    regions=review.evidence,
                    width=task.instance.width,
                    height=task.instance.height,
                )
    return body
