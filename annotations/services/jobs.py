"""Jobs: long work done by workers, with progress; re-queueing of orphaned jobs."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.utils import timezone

from annotations.models import Dataset, Job, JobKind, JobStatus, ModelVersion, Project

logger = logging.getLogger(__name__)


def job_create(
    *,
    project: Project,
    kind: str,
    created_by: Any = None,
    model_version: ModelVersion | None = None,
    dataset: Dataset | None = None,
    params: dict[str, Any] | None = None,
    total: int = 0,
) -> Job:
    return Job.objects.create(
        project=project,
        kind=kind,
        created_by=created_by,
        model_version=model_version,
        dataset=dataset,
        params=params or {},
        total=total,
    )


def job_start(*, job: Job, total: int | None = None, worker: str = "") -> None:
    """Mark a job running on ``worker`` (a Celery hostname; empty in-process). A job picked
    up again after a crash keeps its first start time."""
    fields = ["status", "worker", "updated_at"]
    job.status = JobStatus.RUNNING
    job.worker = worker
    if job.started_at is None:
        job.started_at = timezone.now()
        fields.append("started_at")
    if total is not None:
        job.total = total
        fields.append("total")
    job.save(update_fields=fields)


def job_progress(*, job: Job, done: int, total: int | None = None) -> None:
    if total is not None:
        job.total = total
    job.done = min(done, job.total) if job.total else done
    job.save(update_fields=["done", "total", "updated_at"])


def job_succeed(*, job: Job, result: dict[str, Any] | None = None) -> None:
    job.status = JobStatus.SUCCEEDED
    job.finished_at = timezone.now()
    fields = ["status", "finished_at", "updated_at"]
    if result is not None:
        job.result = result
        fields.append("result")
    job.save(update_fields=fields)


def job_fail(*, job: Job, error: str, result: dict[str, Any] | None = None) -> None:
    """Mark a job failed with ``error``, a message for the people who read the job (experts
    and viewers of the project among them): never an exception's text, which may hold SQL,
    paths or settings. For an unexpected exception use :func:`job_fail_unexpected`."""
    job.status = JobStatus.FAILED
    job.error = error[:5000]
    job.finished_at = timezone.now()
    fields = ["status", "error", "finished_at", "updated_at"]
    if result is not None:
        job.result = result
        fields.append("result")
    job.save(update_fields=fields)


def job_failure_message(*, job: Job, exc: BaseException) -> str:
    """What a job's readers are told about an exception that ended it.

    A ``ValidationError`` is worded for users already and is shown as it is; anything else
    (a database error quoting SQL and values, a path in an ``OSError``) stays in the worker's
    log, and the job points there by its id.
    """
    if isinstance(exc, ValidationError):
        return " ".join(exc.messages)
    if job.kind in (JobKind.PREDICT, JobKind.EXPLAIN) and not isinstance(
        exc, DatabaseError | OSError
    ):
        # A model's own failure ("RuntimeError: out of memory", a shape mismatch) tells the
        # scientist what to fix; its first line is kept. Database errors (SQL and values)
        # and OS errors (server paths) are not.
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    what = {
        JobKind.IMPORT_DATASET: "The import",
        JobKind.IMPORT_PREDICTIONS: "The predictions import",
    }.get(job.kind, "The job")
    return f"{what} failed on the server; the error is in the worker's log (job {job.pk})."


def job_fail_unexpected(*, job: Job, exc: BaseException) -> None:
    """Fail ``job`` for an exception nobody meant to show users: the traceback goes to the
    log, the job gets :func:`job_failure_message`. Call from an ``except`` block."""
    logger.error("job %s (%s) failed", job.pk, job.kind, exc_info=exc)
    job_fail(job=job, error=job_failure_message(job=job, exc=exc))


def enqueue_on_commit(task_path: str, job_id: int) -> None:
    # Imported here so that services stay importable without the Celery app configured
    # (management commands that run a job in-process never send a message).
    from feedback_service.celery import app

    transaction.on_commit(lambda: app.send_task(task_path, args=[job_id]))


# The task that runs each kind of job. Every one of them is safe to repeat: it selects its
# remaining work by state, so re-sending a job's task after a crash finishes it exactly.
JOB_TASKS: dict[str, str] = {
    JobKind.IMPORT_DATASET: "annotations.tasks.import_dataset",
    JobKind.IMPORT_PREDICTIONS: "annotations.tasks.import_predictions",
    JobKind.PREDICT: "explain_worker.tasks.compute_predictions",
    JobKind.EXPLAIN: "explain_worker.tasks.compute_explanations",
}


def jobs_requeue_orphaned(
    *,
    stale_seconds: int,
    queued_seconds: int | None = None,
    send: Callable[[str, int], None] | None = None,
) -> list[int]:
    """Send again the task of every job left behind by a worker that died.

    A running job whose worker has not written a heartbeat for ``stale_seconds`` is
    orphaned (the worker was killed, or its machine went away). A queued job untouched for
    ``queued_seconds`` (when given) lost its message: the embedded filesystem broker has no
    acknowledgements, so a message taken by a worker that dies is gone. (Redis redelivers
    unacknowledged messages itself, so there ``queued_seconds`` is None.)

    Several workers may sweep at once: the conditional UPDATE lets exactly one of them
    re-queue each job. ``send(task name, job id)`` sends the message (default: after commit
    through the app's producer pool). Returns the ids re-queued.
    """
    from annotations.models import WorkerHeartbeat

    now = timezone.now()
    alive = WorkerHeartbeat.objects.filter(
        last_seen__gte=now - timedelta(seconds=stale_seconds)
    ).values_list("hostname", flat=True)
    # worker="" is a job run in-process (a management command): no heartbeat to watch.
    orphaned = (
        Job.objects.filter(status=JobStatus.RUNNING)
        .exclude(worker="")
        .exclude(worker__in=list(alive))
    )
    lost = (
        Job.objects.filter(
            status=JobStatus.QUEUED, updated_at__lt=now - timedelta(seconds=queued_seconds)
        )
        if queued_seconds is not None
        else Job.objects.none()
    )
    requeued = []
    for job in list(orphaned) + list(lost):
        with transaction.atomic():
            claimed = Job.objects.filter(
                pk=job.pk, status=job.status, worker=job.worker, updated_at=job.updated_at
            ).update(status=JobStatus.QUEUED, worker="", updated_at=now)
            if claimed:
                if send is None:
                    enqueue_on_commit(JOB_TASKS[job.kind], job.pk)
                else:
                    transaction.on_commit(partial(send, JOB_TASKS[job.kind], job.pk))
                requeued.append(job.pk)
    if requeued:
        logger.warning("re-queued jobs left by dead workers or lost messages: %s", requeued)
    return requeued


# Jobs a retry may send again: compute that selects its remaining work by state, so a retry
# computes only what is missing. An import is retried by uploading again (its upload may be
# gone, and a file that failed the checks fails them again).
RETRYABLE_KINDS = frozenset({JobKind.EXPLAIN, JobKind.PREDICT})


def job_retry(*, job: Job, user: Any) -> Job:
    """Queue a failed job again: status back to queued, its error, worker and finish time
    cleared, and its task sent after commit through the same dispatch as the first time
    (``JOB_TASKS``), so the worker picks up only the work still missing (maps or predictions
    select their remaining instances by state).

    Raises ``Conflict`` (409, field ``status``) for a job that has not failed, or whose kind
    is not retried here. The state change is a conditional UPDATE, so two retries at once
    send the task exactly once. Who may retry is the caller's check (scientists of the
    project); ``user`` is logged. Returns the job as saved."""
    from annotations.services.reviews import Conflict

    if job.kind not in RETRYABLE_KINDS:
        raise Conflict(
            f"A {job.get_kind_display().lower()} job is not retried; upload the file again.",
            field="status",
        )
    if job.status != JobStatus.FAILED:
        raise Conflict(
            f"Only a failed job can be retried; this one is {job.status}.", field="status"
        )
    with transaction.atomic():
        claimed = Job.objects.filter(pk=job.pk, status=JobStatus.FAILED).update(
            status=JobStatus.QUEUED,
            error="",
            worker="",
            finished_at=None,
            updated_at=timezone.now(),
        )
        if not claimed:
            raise Conflict("This job was retried already.", field="status")
        enqueue_on_commit(JOB_TASKS[job.kind], job.pk)
    logger.info("job %s (%s) retried by %s", job.pk, job.kind, getattr(user, "pk", None))
    job.refresh_from_db()
    return job
