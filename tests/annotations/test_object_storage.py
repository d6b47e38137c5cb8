"""The whole file path on a storage without local paths, as S3 through django-storages is:
images, model weights, maps and their renderings go through the storage API only. Django's
``InMemoryStorage``, with ``path()`` raising as S3Storage's does, stands in for S3."""

from __future__ import annotations

import io
import os

import pytest
from django.core.files.storage import InMemoryStorage, default_storage
from PIL import Image
from rest_framework.test import APIClient

from annotations.models import Explanation, JobStatus
from explain_worker import tasks as worker_tasks
from tests.factories import imagefolder_files, import_images, make_project, register_rooms_cnn_here

pytestmark = pytest.mark.django_db


class ObjectStorage(InMemoryStorage):
    """No local paths, like django-storages' S3Storage (InMemoryStorage keys its files by
    the path it would have; only callers outside it are refused one)."""

    def _relative_path(self, name: str) -> str:
        return os.path.relpath(super().path(name), self.location)

    def path(self, name: str) -> str:
        raise NotImplementedError("This backend doesn't support absolute paths.")


@pytest.fixture
def object_storage(settings, media_root, tmp_path):
    settings.STORAGES = settings.STORAGES | {"default": {"BACKEND": f"{__name__}.ObjectStorage"}}
    settings.MODEL_CACHE_DIR = tmp_path / "model-cache"
    with pytest.raises(NotImplementedError):
        default_storage.path("anything")
    return settings.MODEL_CACHE_DIR


def test_predictions_maps_and_overlays_work_without_local_paths(object_storage, image_zip):
    project = make_project()
    import_images(project, image_zip(imagefolder_files(2)))
    mv, predict_job = register_rooms_cnn_here(project)
    worker_tasks.run_job_here(predict_job.pk)
    predict_job.refresh_from_db()
    assert predict_job.status == JobStatus.SUCCEEDED, predict_job.error
    assert mv.predictions.count() == project.instances.count()
    # The worker loaded the weights from a local copy fetched from the storage.
    copies = list(object_storage.iterdir())
    assert len(copies) == 1
    assert copies[0].stat().st_mode & 0o777 == 0o644  # readable by workers of other users
    with default_storage.open(mv.weights.name, "rb") as stored:
        assert copies[0].read_bytes() == stored.read()

    client = APIClient()
    client.force_authenticate(project.memberships.get().user)
    instance = project.instances.first()
    url = f"/api/model-versions/{mv.pk}/explanations/"
    queued = client.post(url, {"instance": instance.pk, "method": "gradcam"}, format="json")
    assert queued.status_code == 202, queued.content
    worker_tasks.run_job_here(queued.json()["id"])
    done = client.post(url, {"instance": instance.pk, "method": "gradcam"}, format="json")
    assert done.status_code == 200, done.content
    overlay = client.get(done.json()["overlay_url"])
    assert overlay.status_code == 200
    assert Image.open(io.BytesIO(b"".join(overlay.streaming_content))).format == "PNG"
    explanation = Explanation.objects.get(pk=done.json()["id"])
    assert default_storage.exists(explanation.raw.name)
    assert default_storage.exists(explanation.overlay.name)
