"""Jobs: re-queueing of work left by dead workers, progress figures, and queue routing."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from annotations import services
from annotations.models import Job, JobStatus, WorkerHeartbeat
from feedback_service.celery import app
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def make_job(project, **fields) -> Job:
    job = services.job_create(project=project, kind="explain", total=10)
    Job.objects.filter(pk=job.pk).update(**fields)
    job.refresh_from_db()
    return job


def test_orphaned_running_job_is_requeued_once(django_capture_on_commit_callbacks):
    project = make_project()
    now = timezone.now()
    WorkerHeartbeat.objects.create(hostname="alive@x", last_seen=now)
    WorkerHeartbeat.objects.create(hostname="dead@x", last_seen=now - timedelta(minutes=5))
    orphan = make_job(project, status=JobStatus.RUNNING, worker="dead@x", done=4)
    healthy = make_job(project, status=JobStatus.RUNNING, worker="alive@x")
    finished = make_job(project, status=JobStatus.SUCCEEDED, worker="dead@x")
    in_process = make_job(project, status=JobStatus.RUNNING, worker="")
    sent = []
    with django_capture_on_commit_callbacks(execute=True):
        ids = services.jobs_requeue_orphaned(
            stale_seconds=30, send=lambda name, job_id: sent.append((name, job_id))
        )
    assert ids == [orphan.pk]
    assert sent == [("explain_worker.tasks.compute_explanations", orphan.pk)]
    orphan.refresh_from_db()
    assert (orphan.status, orphan.worker, orphan.done) == (JobStatus.QUEUED, "", 4)
    for job in (healthy, finished, in_process):
        before = job.status
        job.refresh_from_db()
        assert job.status == before
    # A second sweep (another worker) finds nothing left to claim.
    assert services.jobs_requeue_orphaned(stale_seconds=30, send=lambda *a: None) == []


def test_lost_queued_messages_only_when_asked():
    project = make_project()
    old = make_job(project, status=JobStatus.QUEUED)
    Job.objects.filter(pk=old.pk).update(updated_at=timezone.now() - timedelta(hours=1))
    assert services.jobs_requeue_orphaned(stale_seconds=30, send=lambda *a: None) == []
    assert services.jobs_requeue_orphaned(
        stale_seconds=30, queued_seconds=600, send=lambda *a: None
    ) == [old.pk]


def test_claim_is_conditional():
    """A job changed by someone else between read and claim is left alone."""
    project = make_project()
    job = make_job(project, status=JobStatus.RUNNING, worker="dead@x")
    real_filter = Job.objects.filter

    def racing_filter(*args, **kwargs):
        if "updated_at" in kwargs:  # the claim: someone else progressed the job meanwhile
            Job.objects.filter(pk=job.pk).update(done=5, updated_at=timezone.now())
        return real_filter(*args, **kwargs)

    with mock.patch.object(Job.objects, "filter", side_effect=racing_filter):
        assert services.jobs_requeue_orphaned(stale_seconds=30, send=lambda *a: None) == []


def test_rate_and_eta():
    project = make_project()
    job = make_job(
        project, status=JobStatus.RUNNING, done=5, started_at=timezone.now() - timedelta(seconds=10)
    )
    assert job.rate_per_s == pytest.approx(0.5, rel=0.05)
    assert job.eta.total_seconds() == pytest.approx(10, rel=0.05)


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("explain_worker.tasks.compute_explanations", "explain"),
        ("explain_worker.tasks.compute_predictions", "explain"),
        ("annotations.tasks.import_dataset", "default"),
    ],
)
def test_each_task_goes_to_exactly_one_queue(task, queue):
    route = app.amqp.router.route({}, task)
    assert route["queue"].name == queue
    # Queues bound with the same key on one exchange would each receive a copy.
    keys = [q.routing_key for q in app.amqp.queues.values()]
    assert len(keys) == len(set(keys))
    assert route["queue"].routing_key == queue
