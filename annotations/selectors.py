"""Reads. Views and commands call these instead of building querysets themselves."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from annotations.models import Dataset, Instance, Job, ModelVersion, Prediction, Project


def dataset_list(*, project: Project) -> QuerySet[Dataset]:
    return project.datasets.annotate(instance_count=Count("instances")).order_by("name")


def instance_list(*, dataset: Dataset) -> QuerySet[Instance]:
    return dataset.instances.order_by("id")


def model_version_list(*, project: Project) -> QuerySet[ModelVersion]:
    return project.model_versions.annotate(prediction_count=Count("predictions")).order_by(
        "version"
    )


def prediction_list(*, model_version: ModelVersion) -> QuerySet[Prediction]:
    # The embedding is large and only the compute side reads it.
    return (
        model_version.predictions.select_related("instance")
        .defer("embedding")
        .order_by("instance_id")
    )


def job_list(*, project: Project) -> QuerySet[Job]:
    return project.jobs.order_by("-created_at")


def instances_missing_predictions(*, model_version: ModelVersion) -> QuerySet[Instance]:
    """Instances of the model's project that have no prediction by it yet, oldest first.

    Selecting by state (not by a cursor kept in the job) is what makes a re-run or a second
    worker after a crash pick up exactly the remaining work.
    """
    return (
        Instance.objects.filter(project_id=model_version.project_id)
        .exclude(predictions__model_version=model_version)
        .order_by("id")
    )


def project_known_hashes(*, dataset: Dataset) -> set[str]:
    return set(dataset.instances.values_list("content_hash", flat=True))


def instance_count(*, project: Project) -> int:
    return Instance.objects.filter(project=project).count()


def model_version_summary(*, model_version: ModelVersion) -> dict[str, dict[str, float | int]]:
    """Per split: instances with a prediction, correct ones, accuracy and mean confidence."""
    from django.db.models import Avg, F, Q

    rows = (
        model_version.predictions.exclude(instance__label="")
        .values("instance__split")
        .annotate(
            n=Count("id"),
            correct=Count("id", filter=Q(label=F("instance__label"))),
            mean_confidence=Avg("confidence"),
        )
        .order_by("instance__split")
    )
    return {
        r["instance__split"]: {
            "predictions": r["n"],
            "correct": r["correct"],
            "accuracy": round(r["correct"] / r["n"], 4) if r["n"] else 0.0,
            "mean_confidence": round(r["mean_confidence"] or 0.0, 4),
        }
        for r in rows
    }


def dataset_split_counts(*, project: Project) -> list[dict]:
    return list(
        Instance.objects.filter(project=project)
        .values("dataset__name", "split")
        .annotate(n=Count("id"))
        .order_by("dataset__name", "split")
    )
