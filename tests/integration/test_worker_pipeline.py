"""The whole path on real components: import a dataset through the API, register a model,
and see predictions written by a separate worker process (PostgreSQL + Redis in CI)."""

import pytest
from rest_framework.test import APIClient

from annotations.models import Instance, Job, JobStatus, Prediction
from tests.factories import imagefolder_files, make_project, register_rooms_cnn
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration


def job_status(job_id: int) -> str:
    return Job.objects.get(pk=job_id).status


def test_import_register_and_predict_with_a_real_worker(start_worker, media_root, image_zip):
    worker = start_worker()
    project = make_project()
    client = APIClient()
    client.force_authenticate(project.memberships.get().user)

    response = client.post(
        f"/api/projects/{project.pk}/datasets/import/",
        {"name": "pets", "archive": image_zip(imagefolder_files(5, split="test"))},
        format="multipart",
    )
    assert response.status_code == 202, response.content
    import_job = response.json()["id"]
    wait_for(lambda: Job.objects.get(pk=import_job).is_finished, what="the import job")
    assert job_status(import_job) == JobStatus.SUCCEEDED, worker.output()[-3000:]
    assert Instance.objects.filter(project=project).count() == 15

    response = register_rooms_cnn(client, project)
    assert response.status_code == 201, response.content
    predict_job = response.json()["job"]["id"]
    wait_for(lambda: Job.objects.get(pk=predict_job).is_finished, what="the prediction job")
    job = Job.objects.get(pk=predict_job)
    assert job.status == JobStatus.SUCCEEDED, (job.error, worker.output()[-3000:])
    assert job.done == job.total == 15
    assert Prediction.objects.filter(model_version_id=response.json()["id"]).count() == 15
    # The worker ran in another process: prove it by the log, not only by the rows.
    assert "compute_predictions" in worker.output()
    body = client.get(f"/api/jobs/{predict_job}/").json()
    assert body["status"] == "succeeded"
    assert body["rate_per_s"] > 0
