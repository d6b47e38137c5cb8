"""seed_demo (idempotent) and the management commands with their progress output."""

import io
import json

import pytest
import torch
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from annotations import demo
from annotations.models import Explanation, Instance, Job, JobStatus, ModelVersion, Project
from explain_worker import rooms
from explain_worker import tasks as worker_tasks
from explain_worker.rooms_cnn import RoomsCNN
from tests.factories import imagefolder_files, make_project

pytestmark = pytest.mark.django_db

SMALL = demo.DemoSize(n_train=60, n_test=20, n_deployment=10, epochs=1)


def snapshot() -> dict:
    return {
        "users": sorted(get_user_model().objects.values_list("username", "password")),
        "projects": list(Project.objects.values_list("id", "labels")),
        "instances": Instance.objects.count(),
        "models": list(ModelVersion.objects.values_list("id", "version", "weights")),
        "jobs": Job.objects.count(),
    }


def test_seed_demo_creates_the_loop_and_a_second_run_changes_nothing(media_root):
    result = demo.seed_demo(size=SMALL, log=lambda _: None)
    project = result.project
    assert project.labels == list(rooms.CLASSES)
    assert set(project.concept_vocabulary) == set(rooms.CONCEPTS)
    assert project.instances.count() == SMALL.total
    assert set(project.instances.values_list("split", flat=True)) == {"train", "test", "deployment"}
    sample = project.instances.filter(split="test").first()
    assert {"objects", "planted", "true_label"} <= set(sample.metadata)
    assert all("box" in o for o in sample.metadata["objects"])
    roles = set(project.memberships.values_list("user__username", "role"))
    assert roles == {(u, r) for u, r in demo.DEMO_USERS.items()}
    assert get_user_model().objects.get(username="expert").check_password(demo.DEMO_PASSWORD)
    mv = result.model_version
    assert mv.architecture == "rooms_cnn"
    assert result.prediction_job.status == JobStatus.QUEUED

    before = snapshot()
    again = demo.seed_demo(size=SMALL, log=lambda _: None)
    assert again.created == []
    assert snapshot() == before


def test_seed_demo_command_prints_logins(media_root, monkeypatch):
    monkeypatch.setattr(demo, "DemoSize", lambda **_: SMALL)
    out = io.StringIO()
    call_command("seed_demo", "--small", stdout=out)
    text = out.getvalue()
    for username in demo.DEMO_USERS:
        assert username in text
    assert demo.DEMO_PASSWORD in text


def test_import_dataset_command(media_root, image_zip, tmp_path):
    project = make_project()
    path = tmp_path / "data.zip"
    path.write_bytes(image_zip(imagefolder_files(2) | {"cat/bad.png": b"nope"}).getvalue())
    out = io.StringIO()
    call_command("import_dataset", str(path), "--project", project.slug, "--name", "d", stdout=out)
    assert "written 6" in out.getvalue()
    assert "cat/bad.png: not_image" in out.getvalue()
    with pytest.raises(CommandError, match="nothing was imported"):
        call_command(
            "import_dataset",
            str(path),
            "--project",
            project.slug,
            "--name",
            "d2",
            "--on-error",
            "reject",
            stdout=io.StringIO(),
        )
    with pytest.raises(CommandError, match="No project"):
        call_command("import_dataset", str(path), "--project", "nope", "--name", "d")


def test_register_model_explain_and_job_status_commands(media_root, image_zip, tmp_path):
    project = make_project()
    path = tmp_path / "data.zip"
    path.write_bytes(image_zip(imagefolder_files(2)).getvalue())
    call_command(
        "import_dataset", str(path), "--project", project.slug, "--name", "d", stdout=io.StringIO()
    )
    weights = tmp_path / "w.pt"
    torch.save(RoomsCNN(num_classes=3).state_dict(), weights)
    out = io.StringIO()
    call_command(
        "register_model",
        str(weights),
        "--project",
        project.slug,
        "--name",
        "cnn",
        "--architecture",
        "rooms_cnn",
        "--input-size",
        "32",
        stdout=out,
    )
    mv = ModelVersion.objects.get()
    job = Job.objects.get(kind="predict")
    worker_tasks.run_job_here(job.pk)
    out = io.StringIO()
    call_command("job_status", str(job.pk), stdout=out)
    assert f"job {job.pk} predict: succeeded 6/6" in out.getvalue()

    out = io.StringIO()
    call_command(
        "explain",
        "--model-version",
        str(mv.pk),
        "--method",
        "ig",
        "--n-steps",
        "4",
        "--in-process",
        stdout=out,
    )
    assert "succeeded 6/6" in out.getvalue()
    assert Explanation.objects.filter(method="integrated_gradients").count() == 6

    with pytest.raises(CommandError) as exc:
        call_command("explain", "--model-version", str(mv.pk), "--method", "lime")
    assert "method" in json.loads(str(exc.value))
    with pytest.raises(CommandError) as exc:
        call_command(
            "register_model",
            str(weights),
            "--project",
            project.slug,
            "--name",
            "x",
            "--architecture",
            "resnet18",
            "--input-size",
            "32",
        )
    assert "weights" in json.loads(str(exc.value))


def test_demo_round_waits_for_predictions_then_is_created_once(media_root):
    result = demo.seed_demo(size=SMALL, log=lambda _: None)
    assert result.review_round is None  # no predictions yet: nothing to sample from
    worker_tasks.run_job_here(result.prediction_job.pk)

    review_round = demo.ensure_round(result.project, log=lambda _: None)
    assert review_round is not None
    assert list(review_round.experts.values_list("username", flat=True)) == ["expert"]
    assert review_round.blind_first
    assert review_round.explanation_method == "gradcam"
    assert review_round.tasks.count() == review_round.sampling_counts["total"] > 0
    assert set(review_round.tasks.values_list("instance__split", flat=True)) == {"test"}
    assert demo.ensure_round(result.project, log=lambda _: None).pk == review_round.pk
    assert result.project.rounds.count() == 1
