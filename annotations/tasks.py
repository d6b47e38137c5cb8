"""Celery adapters for dataset and predictions imports: ids in, a service call, nothing else."""

from __future__ import annotations

from collections.abc import Callable

from celery import shared_task

from annotations import services
from annotations.models import Job
from annotations.services.jobs import job_fail_unexpected


def _run(job_id: int, service: Callable[..., object]) -> None:
    job = Job.objects.select_related("dataset__project", "model_version__project").get(pk=job_id)
    if job.is_finished:
        return  # a repeated message
    try:
        service(job=job)
    except Exception as exc:
        # The exception's text (SQL and values of a database error, server paths) is for the
        # log only: the job is read by every member of the project.
        job_fail_unexpected(job=job, exc=exc)
        raise


@shared_task(name="annotations.tasks.import_dataset")
def import_dataset(job_id: int) -> None:
    _run(job_id, services.dataset_import_run)


@shared_task(name="annotations.tasks.import_predictions")
def import_predictions(job_id: int) -> None:
    _run(job_id, services.predictions_import_run)


@shared_task(name="annotations.tasks.expire_leases")
def expire_leases() -> int:
    """Beat, every minute: leases past their expiry go back to the pool."""
    from annotations.services import reviews

    return reviews.leases_expire()


@shared_task(name="annotations.tasks.send_digests")
def send_digests() -> int:
    """Beat, daily: each expert gets a summary of the tasks waiting for them."""
    from annotations.services import reviews

    return reviews.digests_send()
