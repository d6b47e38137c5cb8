"""What a failed compute job tells its readers (issue 16, defect 8): every member reads
``job.error``, and experts see it as the reason a map is missing, so it never holds SQL or
server paths; a model's own failure keeps its first line for the scientist."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.db import DataError

from annotations.models import Job, JobKind, JobStatus
from tests.annotations.review_fixtures import build_world

pytestmark = pytest.mark.django_db


def _fail_with(exc: BaseException) -> Job:
    from explain_worker import tasks

    world = build_world()
    job = Job.objects.create(project=world.project, kind=JobKind.EXPLAIN, model_version=world.mv)

    def chunk(**kwargs):
        raise exc

    task = SimpleNamespace(request=SimpleNamespace(hostname="w1"), apply_async=None)
    tasks._run_chunked(task, job.pk, chunk, 1)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    return job


def test_a_database_error_stays_in_the_log(media_root, caplog):
    job = _fail_with(DataError('value too long for type character varying(200) in "SELECT secret"'))
    assert "SELECT" not in job.error
    assert (
        job.error
        == f"The job failed on the server; the error is in the worker's log (job {job.pk})."
    )
    assert "SELECT secret" in caplog.text  # the traceback is logged for the operator


def test_an_os_error_does_not_show_server_paths(media_root):
    job = _fail_with(FileNotFoundError(2, "No such file", "/srv/media/models/1/weights.pt"))
    assert "/srv" not in job.error


def test_a_models_own_failure_keeps_its_first_line(media_root):
    job = _fail_with(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB\nmore detail"))
    assert job.error == "RuntimeError: CUDA out of memory. Tried to allocate 2 GiB"
