"""Predictions-only model versions: probabilities from CSV/JSON, optional saliency maps."""

import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image
from rest_framework.test import APIClient

from annotations import tasks
from annotations.models import Explanation, Instance, Job, JobStatus, ModelVersion, Prediction
from tests.factories import imagefolder_files, import_images, make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(media_root, image_zip):
    project = make_project()
    import_images(project, image_zip(imagefolder_files(2)))
    return project


@pytest.fixture
def client(project) -> APIClient:
    client = APIClient()
    client.force_authenticate(project.memberships.get().user)
    return client


def upload(data: bytes | str, name: str) -> io.BytesIO:
    buffer = io.BytesIO(data.encode() if isinstance(data, str) else data)
    buffer.name = name
    return buffer


def csv_for(ids: list[int], probs: str = "0.7,0.2,0.1") -> str:
    return "instance_id,cat,dog,bird\n" + "".join(f"{i},{probs}\n" for i in ids)


def post(client, project, predictions, **extra):
    data = {"name": "external", "predictions": predictions} | extra
    return client.post(
        f"/api/projects/{project.pk}/model-versions/import-predictions/", data, format="multipart"
    )


def test_csv_import_with_saliency(client, project):
    ids = list(Instance.objects.values_list("id", flat=True))
    maps = io.BytesIO()
    with zipfile.ZipFile(maps, "w") as zf:
        png = io.BytesIO()
        Image.new("L", (24, 24), 128).save(png, format="PNG")
        zf.writestr(f"{ids[0]}.png", png.getvalue())
        npy = io.BytesIO()
        np.save(npy, np.ones((24, 24), dtype=np.float32))
        zf.writestr(f"{ids[1]}.npy", npy.getvalue())
    maps.seek(0)
    maps.name = "maps.zip"
    response = post(client, project, upload(csv_for(ids), "p.csv"), saliency=maps)
    assert response.status_code == 202, response.content
    tasks.import_predictions(response.json()["id"])
    job = Job.objects.get(pk=response.json()["id"])
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.result == {"predictions": len(ids), "saliency_maps": 2}
    mv = ModelVersion.objects.get()
    assert mv.kind == "predictions_only"
    assert Prediction.objects.filter(model_version=mv, label="cat").count() == len(ids)
    exp = Explanation.objects.get(instance_id=ids[1])
    with exp.raw.open("rb") as fh:
        assert np.load(fh)["attribution"].dtype == np.float16


def test_json_import_by_label_mapping(client, project):
    ids = list(Instance.objects.values_list("id", flat=True))
    items = [
        {"instance_id": i, "probabilities": {"cat": 0.1, "dog": 0.1, "bird": 0.8}} for i in ids
    ]
    response = post(client, project, upload(json.dumps(items), "p.json"))
    assert response.status_code == 202, response.content
    tasks.import_predictions(response.json()["id"])
    assert set(Prediction.objects.values_list("label", flat=True)) == {"bird"}


@pytest.mark.parametrize(
    ("content", "name", "text"),
    [
        ("instance_id,cat,dog,bird\n999999,0.5,0.5,0\n", "p.csv", "999999"),
        (None, "p.csv", "sum to 1"),
        ("instance_id,cat,dog\n1,0.5,0.5\n", "p.csv", "bird"),
        ("id,cat,dog,bird\n", "p.csv", "instance_id"),
        ("{not json", "p.json", "JSON"),
        ("instance_id,cat,dog,bird\n", "p.csv", "no predictions"),
    ],
    ids=[
        "unknown-instance",
        "not-normalised",
        "missing-class",
        "no-id-column",
        "bad-json",
        "empty",
    ],
)
def test_bad_prediction_files(client, project, content, name, text):
    if content is None:
        content = csv_for([Instance.objects.first().pk], "0.9,0.9,0.9")
    response = post(client, project, upload(content, name))
    assert response.status_code == 400, response.content
    assert text in " ".join(response.json()["predictions"])
    assert ModelVersion.objects.count() == 0


def test_bad_saliency_zip(client, project):
    ids = list(Instance.objects.values_list("id", flat=True))
    response = post(
        client, project, upload(csv_for(ids), "p.csv"), saliency=upload(b"not a zip", "maps.zip")
    )
    assert response.status_code == 400
    assert "saliency" in response.json()
    assert ModelVersion.objects.count() == 0
