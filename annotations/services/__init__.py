"""Writes. Every state change of the domain goes through a function of this package.

Functions are keyword-only and typed; those that write several rows are atomic. Work that
takes longer than a request is queued as a Job whose Celery task is sent inside
``transaction.on_commit``, so a worker never looks for a row that is not committed yet.
"""

from annotations.services import explanations
from annotations.services._errors import field_error
from annotations.services.datasets import (
    ImportOptions,
    archive_limits,
    dataset_import_run,
    dataset_import_start,
    save_upload,
)
from annotations.services.jobs import (
    enqueue_on_commit,
    job_create,
    job_fail,
    job_progress,
    job_start,
    job_succeed,
    jobs_requeue_orphaned,
)
from annotations.services.model_versions import (
    ModelSpecInput,
    model_spec,
    model_version_register,
    predictions_compute_start,
    predictions_write,
)
from annotations.services.predictions_import import (
    parse_predictions,
    predictions_import_run,
    predictions_import_start,
)
from annotations.services.projects import membership_add, membership_remove, project_create

__all__ = [
    "ImportOptions",
    "ModelSpecInput",
    "archive_limits",
    "dataset_import_run",
    "dataset_import_start",
    "enqueue_on_commit",
    "explanations",
    "field_error",
    "job_create",
    "job_fail",
    "job_progress",
    "job_start",
    "job_succeed",
    "jobs_requeue_orphaned",
    "membership_add",
    "membership_remove",
    "model_spec",
    "model_version_register",
    "parse_predictions",
    "predictions_compute_start",
    "predictions_import_run",
    "predictions_import_start",
    "predictions_write",
    "project_create",
    "save_upload",
]
