"""Model registration (good and bad) and the prediction job it queues."""

import faulthandler
import io
import pickle
import time

import pytest
import torch
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from annotations import services
from annotations.models import Instance, Job, JobKind, JobStatus, ModelVersion, Prediction
from explain_worker import tasks as worker_tasks
from explain_worker.rooms_cnn import RoomsCNN
from tests.factories import LABELS, imagefolder_files, import_images, make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(media_root, image_zip):
    project = make_project()
    import_images(project, image_zip(imagefolder_files(4)))
    assert Instance.objects.count() == 12
    return project


@pytest.fixture
def client(project) -> APIClient:
    client = APIClient()
    client.force_authenticate(project.memberships.get().user)
    return client


def as_upload(obj: object, name: str = "weights.pt") -> io.BytesIO:
    buffer = io.BytesIO()
    if isinstance(obj, bytes):
        buffer.write(obj)
    else:
        torch.save(obj, buffer)
    buffer.seek(0)
    buffer.name = name
    return buffer


def register(client, project, weights, **fields):
    data = {
        "name": "cnn",
        "kind": "architecture",
        "architecture": "rooms_cnn",
        "input_size": 32,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "weights": weights,
    } | fields
    return client.post(f"/api/projects/{project.pk}/model-versions/", data, format="multipart")


def test_register_state_dict_queues_predictions(client, project):
    response = register(client, project, as_upload(RoomsCNN(num_classes=3).state_dict()))
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["version"] == 1
    assert body["label_order"] == LABELS
    assert body["job"]["kind"] == JobKind.PREDICT
    assert body["job"]["total"] == 12
    second = register(client, project, as_upload(RoomsCNN(num_classes=3).state_dict()))
    assert second.json()["version"] == 2


def test_prediction_job_computes_every_instance_in_chunks(client, project, settings):
    settings.PREDICTION_BATCH_SIZE = 5
    response = register(client, project, as_upload(RoomsCNN(num_classes=3).state_dict()))
    job_id = response.json()["job"]["id"]
    mv = ModelVersion.objects.get(pk=response.json()["id"])
    from annotations.models import Job

    job = Job.objects.get(pk=job_id)
    services.job_start(job=job, total=12)
    # One batch of 5 leaves work; repeating the same chunk must not duplicate rows.
    assert worker_tasks.predictions_compute_chunk(job=job, max_batches=1) is True
    assert Prediction.objects.filter(model_version=mv).count() == 5
    while worker_tasks.predictions_compute_chunk(job=job, max_batches=1):
        pass
    preds = Prediction.objects.filter(model_version=mv)
    assert preds.count() == 12
    job.refresh_from_db()
    assert job.done == 12
    p = preds.first()
    assert abs(sum(p.probabilities) - 1) < 1e-4
    assert p.label == LABELS[max(range(3), key=lambda i: p.probabilities[i])]
    assert p.confidence == pytest.approx(max(p.probabilities), abs=1e-5)
    assert p.embedding_array.shape[0] > 3  # penultimate features, wider than the logits
    listed = client.get(f"/api/model-versions/{mv.pk}/predictions/?min_confidence=0").json()
    assert listed["count"] == 12


def test_torchscript_model(client, project):
    scripted = torch.jit.trace(RoomsCNN(num_classes=3).eval(), torch.zeros(1, 3, 32, 32))
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    response = register(
        client,
        project,
        as_upload(buffer.getvalue(), "model.ts"),
        kind="torchscript",
        architecture="",
    )
    assert response.status_code == 201, response.content
    assert response.json()["kind"] == "torchscript"


class EndlessForward(torch.nn.Module):
    """forward never returns: y grows to inf and inf == inf, so the condition stays true."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.sum()
        while bool(y == y):
            y = y + 1.0
        return x


def test_endless_torchscript_model_is_refused_within_the_limit(client, project, settings):
    """Issue 16, defect 4: the validating forward pass of an endless model held the web worker
    until gunicorn killed it. It now runs in a child process killed after the limit."""
    settings.MODEL_VALIDATION_SECONDS = 1.5
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(EndlessForward()), buffer)
    # The old code never returns from register(); fail the run (tracebacks shown) rather than
    # hang. faulthandler's watchdog is a C thread, so it fires while TorchScript holds the CPU.
    faulthandler.dump_traceback_later(90, exit=True)
    try:
        started = time.monotonic()
        response = register(
            client,
            project,
            as_upload(buffer.getvalue(), "endless.pt"),
            kind="torchscript",
            architecture="",
        )
        elapsed = time.monotonic() - started
    finally:
        faulthandler.cancel_dump_traceback_later()
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["weights"])
    assert "took longer than 1.5 seconds" in message
    # The limit plus, at most, the fork server's first start (it imports torch once).
    assert elapsed < 20
    assert ModelVersion.objects.count() == 0
    # The next registration is not disturbed by the killed check.
    ok = register(client, project, as_upload(RoomsCNN(num_classes=3).state_dict()))
    assert ok.status_code == 201, ok.content


def test_validation_limit_comes_from_the_environment(monkeypatch, settings):
    from annotations.services.model_versions import model_validation_seconds

    del settings.MODEL_VALIDATION_SECONDS
    monkeypatch.delenv("MODEL_VALIDATION_SECONDS", raising=False)
    assert model_validation_seconds() == 20
    monkeypatch.setenv("MODEL_VALIDATION_SECONDS", "7.5")
    assert model_validation_seconds() == 7.5
    settings.MODEL_VALIDATION_SECONDS = 3
    assert model_validation_seconds() == 3


@pytest.mark.parametrize(
    ("weights", "fields", "field", "text"),
    [
        (lambda: RoomsCNN(num_classes=5).state_dict(), {}, "weights", "5"),
        (lambda: RoomsCNN(num_classes=3), {}, "weights", "state dict"),
        (lambda: pickle.dumps({"not": object.__name__}) + b"junk", {}, "weights", ""),
        (lambda: b"\x00garbage\xff" * 10, {}, "weights", ""),
        (
            lambda: RoomsCNN(num_classes=3).state_dict(),
            {"architecture": "resnet999"},
            "architecture",
            "resnet999",
        ),
        (lambda: RoomsCNN(num_classes=3).state_dict(), {"architecture": "resnet18"}, "weights", ""),
        (
            lambda: RoomsCNN(num_classes=3).state_dict(),
            {"label_order": ["cat", "cow", "dog"]},
            "label_order",
            "cow",
        ),
        (lambda: RoomsCNN(num_classes=3).state_dict(), {"std": [0, 1, 1]}, "std", ""),
        (lambda: RoomsCNN(num_classes=3).state_dict(), {"mean": [0.5]}, "mean", ""),
        (lambda: RoomsCNN(num_classes=3).state_dict(), {"kind": "onnx"}, "kind", ""),
    ],
    ids=[
        "width",
        "pickled-module",
        "arbitrary-pickle",
        "garbage",
        "unknown-arch",
        "wrong-arch",
        "label-order",
        "std",
        "mean",
        "kind",
    ],
)
def test_bad_registrations_name_the_field(client, project, weights, fields, field, text):
    obj = weights()
    response = register(client, project, as_upload(obj), **fields)
    assert response.status_code == 400, response.content
    body = response.json()
    assert field in body, body
    assert text in " ".join(body[field])
    assert ModelVersion.objects.count() == 0


def test_pickled_module_message_says_what_to_do(client, project):
    body = register(client, project, as_upload(RoomsCNN(num_classes=3))).json()
    assert "state_dict()" in " ".join(body["weights"])


def test_registration_needs_an_instance(media_root):
    empty = make_project(slug="empty")
    client = APIClient()
    client.force_authenticate(empty.memberships.get().user)
    response = register(client, empty, as_upload(RoomsCNN(num_classes=3).state_dict()))
    assert response.status_code == 400
    assert "project" in response.json()


def test_failed_job_is_reported(client, project):
    response = register(client, project, as_upload(RoomsCNN(num_classes=3).state_dict()))
    mv = ModelVersion.objects.get(pk=response.json()["id"])
    mv.weights.storage.delete(mv.weights.name)  # the file vanished from storage
    worker_tasks.compute_predictions(response.json()["job"]["id"])
    from annotations.models import Job

    job = Job.objects.get(pk=response.json()["job"]["id"])
    assert job.status == JobStatus.FAILED
    assert job.error


@pytest.mark.django_db
def test_computing_predictions_of_a_predictions_only_version_is_refused():
    project = make_project(slug="po")
    mv = ModelVersion.objects.create(
        project=project, version=1, name="imported", kind="predictions_only", label_order=[]
    )
    with pytest.raises(ValidationError) as caught:
        services.predictions_compute_start(model_version=mv)
    assert "model_version" in caught.value.message_dict
    assert not Job.objects.exists()
