"""A worker killed with SIGKILL in the middle of an explanation job leaves a job that
another worker completes with the exact count and no duplicate rows."""

import pytest
from rest_framework.test import APIClient

from annotations.models import Explanation, Job, JobStatus
from tests.factories import imagefolder_files, make_project, register_rooms_cnn
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def crash_settings(settings):
    # Small chunks, so the job spans many messages and the kill lands in the middle.
    settings.EXPLAIN_BATCH_SIZE = 2
    settings.EXPLAIN_BATCHES_PER_TASK = 1
    return settings


def test_killed_worker_job_is_finished_by_another(
    start_worker, media_root, image_zip, crash_settings
):
    first = start_worker()
    project = make_project()
    client = APIClient()
    client.force_authenticate(project.memberships.get().user)
    response = client.post(
        f"/api/projects/{project.pk}/datasets/import/",
        {"name": "pets", "archive": image_zip(imagefolder_files(14))},
        format="multipart",
    )
    wait_for(lambda: Job.objects.get(pk=response.json()["id"]).is_finished, what="import")
    mv = register_rooms_cnn(client, project).json()
    wait_for(lambda: Job.objects.get(pk=mv["job"]["id"]).is_finished, what="predictions")

    # Occlusion with a 1-px stride is slow enough per batch to be caught mid-job.
    response = client.post(
        f"/api/model-versions/{mv['id']}/explain/",
        {"method": "occlusion", "window": 3, "stride": 1},
        format="json",
    )
    assert response.status_code == 202, response.content
    job_id = response.json()["id"]
    total = response.json()["total"]
    assert total == 42
    wait_for(lambda: Job.objects.get(pk=job_id).done >= 4, what="some progress")
    first.kill()  # SIGKILL to the whole worker process group
    job = Job.objects.get(pk=job_id)
    assert job.status == JobStatus.RUNNING
    assert 0 < job.done < total, job.done

    second = start_worker()
    try:
        wait_for(lambda: Job.objects.get(pk=job_id).is_finished, timeout=120, what="the rest")
    except AssertionError:
        job = Job.objects.get(pk=job_id)
        raise AssertionError(
            f"job {job.status} {job.done}/{job.total} worker={job.worker!r}\n"
            f"{second.output()[-5000:]}"
        ) from None
    job = Job.objects.get(pk=job_id)
    assert job.status == JobStatus.SUCCEEDED, (job.error, second.output()[-3000:])
    assert job.done == job.total == total
    rows = Explanation.objects.filter(model_version_id=mv["id"], method="occlusion")
    assert rows.count() == total
    assert rows.values("instance").distinct().count() == total
    assert job.worker == second.hostname
