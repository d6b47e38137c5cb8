"""Retrying a failed job: the service (only failed compute jobs, re-queued exactly once after
commit through the kind's own task, only the missing maps computed) and
``POST /api/jobs/{id}/retry/`` (scientists of the project only)."""

from __future__ import annotations

import pytest

from annotations.models import Explanation, Job, JobKind, JobStatus
from annotations.services import explanations, job_fail
from annotations.services.jobs import job_retry
from annotations.services.reviews import Conflict
from explain_worker import attribution
from explain_worker import tasks as worker_tasks
from feedback_service.celery import app
from tests.annotations.review_fixtures import build_world
from tests.factories import imagefolder_files, import_images, make_project, register_rooms_cnn_here

pytestmark = pytest.mark.django_db

EXPLAIN_TASK = "explain_worker.tasks.compute_explanations"


@pytest.fixture
def sent(monkeypatch):
    """The Celery messages sent, as (task name, args), instead of reaching a broker."""
    messages: list[tuple[str, list]] = []
    monkeypatch.setattr(
        app, "send_task", lambda name, args=None, **kw: messages.append((name, list(args or [])))
    )
    return messages


def failed_job(world, kind=JobKind.EXPLAIN, status=JobStatus.FAILED) -> Job:
    return Job.objects.create(
        project=world.project,
        kind=kind,
        model_version=world.mv,
        status=status,
        error="RuntimeError: CUDA out of memory" if status == JobStatus.FAILED else "",
        params={"method": "saliency", "target": None, "instance_ids": None, "split": None},
        worker="host-1",
        total=6,
        done=2,
    )


def test_retry_requeues_a_failed_job_once_after_commit(sent, django_capture_on_commit_callbacks):
    world = build_world(n=2, experts=0)
    job = failed_job(world)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        retried = job_retry(job=job, user=world.scientist)
        assert sent == []  # nothing leaves before the commit
    for callback in callbacks:
        callback()
    assert sent == [(EXPLAIN_TASK, [job.pk])]
    assert (retried.status, retried.error, retried.worker, retried.finished_at) == (
        JobStatus.QUEUED,
        "",
        "",
        None,
    )
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    # A second retry (a double click, or a stale page) neither succeeds nor sends again.
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(Conflict) as caught:
        job_retry(job=job, user=world.scientist)
    assert caught.value.field == "status"
    assert len(sent) == 1


def test_a_stale_copy_of_the_job_cannot_retry_twice(sent, django_capture_on_commit_callbacks):
    world = build_world(n=2, experts=0)
    job = failed_job(world)
    stale = Job.objects.get(pk=job.pk)  # both still say "failed"
    with django_capture_on_commit_callbacks(execute=True):
        job_retry(job=job, user=world.scientist)
        with pytest.raises(Conflict):
            job_retry(job=stale, user=world.scientist)
    assert sent == [(EXPLAIN_TASK, [job.pk])]


@pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.SUCCEEDED])
def test_only_failed_jobs_are_retried(sent, status, django_capture_on_commit_callbacks):
    world = build_world(n=2, experts=0)
    job = failed_job(world, status=status)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(Conflict):
        job_retry(job=job, user=world.scientist)
    job.refresh_from_db()
    assert job.status == status
    assert sent == []


def test_an_import_is_not_retried(sent, django_capture_on_commit_callbacks):
    world = build_world(n=2, experts=0)
    job = failed_job(world, kind=JobKind.IMPORT_DATASET)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(Conflict):
        job_retry(job=job, user=world.scientist)
    assert sent == []


def test_a_prediction_job_goes_to_its_own_task(sent, django_capture_on_commit_callbacks):
    world = build_world(n=2, experts=0)
    job = failed_job(world, kind=JobKind.PREDICT)
    with django_capture_on_commit_callbacks(execute=True):
        job_retry(job=job, user=world.scientist)
    assert sent == [("explain_worker.tasks.compute_predictions", [job.pk])]


def test_a_retry_computes_only_the_missing_maps(
    media_root, image_zip, settings, sent, monkeypatch, django_capture_on_commit_callbacks
):
    settings.EXPLAIN_BATCH_SIZE = 4
    project = make_project()
    import_images(project, image_zip(imagefolder_files(3)))  # 9 instances
    mv, predict_job = register_rooms_cnn_here(project)
    worker_tasks.run_job_here(predict_job.pk)
    spec = explanations.explain_spec(model_version=mv, method="saliency")
    job = explanations.explanations_start(
        model_version=mv, spec=spec, created_by=None, enqueue=False
    )
    assert job.total == 9
    # One batch of four maps, then the worker dies of an error.
    worker_tasks.explanations_compute_chunk(job=job, max_batches=1)
    job_fail(job=job, error="RuntimeError: out of memory")
    first = {e.pk: e.instance_id for e in Explanation.objects.filter(model_version=mv)}
    assert len(first) == 4

    computed: list[int] = []
    real = attribution.attribute_batch

    def counting(model, inputs, targets, config):
        computed.append(int(inputs.shape[0]))
        return real(model, inputs, targets, config)

    monkeypatch.setattr(worker_tasks.attribution, "attribute_batch", counting)
    with django_capture_on_commit_callbacks(execute=True):
        job_retry(job=job, user=project.memberships.get().user)
    assert sent == [(EXPLAIN_TASK, [job.pk])]
    # Deliver the message to the task it names, as a worker would.
    name, args = sent[0]
    app.tasks[name].apply(args=args)

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert (job.done, job.total, job.error) == (9, 9, "")
    assert sum(computed) == 5  # only the maps still missing
    rows = Explanation.objects.filter(model_version=mv)
    assert rows.count() == 9
    assert rows.values("instance").distinct().count() == 9
    # The four maps of the first attempt are the same rows as before.
    assert {pk: iid for pk, iid in rows.values_list("pk", "instance_id") if pk in first} == first


# --- API ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "status"),
    [("approver", 403), ("expert", 403), ("viewer", 403), ("outsider", 404)],
)
def test_api_only_scientists_retry(sent, role, status, django_capture_on_commit_callbacks):
    world = build_world(n=2, experts=1)
    job = failed_job(world)
    user = {
        "approver": world.approver,
        "expert": world.experts[0],
        "viewer": world.viewer,
        "outsider": build_world(n=1, experts=0, slug="cars").scientist,
    }[role]
    with django_capture_on_commit_callbacks(execute=True):
        response = world.client(user).post(f"/api/jobs/{job.pk}/retry/")
    assert response.status_code == status
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert sent == []


def test_api_retry_answers_202_with_the_job(sent, django_capture_on_commit_callbacks):
    world = build_world(n=2, experts=0)
    job = failed_job(world)
    client = world.client(world.scientist)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"/api/jobs/{job.pk}/retry/")
    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["id"], body["status"], body["error"]) == (job.pk, "queued", "")
    assert sent == [(EXPLAIN_TASK, [job.pk])]
    with django_capture_on_commit_callbacks(execute=True):
        again = client.post(f"/api/jobs/{job.pk}/retry/")
    assert again.status_code == 409
    assert "status" in again.json()
    assert len(sent) == 1
