"""Dataset import through the API: the good layouts and every bad case of the issue."""

import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from annotations import tasks
from annotations.models import Instance, Job, JobStatus
from tests.factories import LABELS, imagefolder_files, make_image_bytes, make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(media_root):
    return make_project()


@pytest.fixture
def client(project) -> APIClient:
    client = APIClient()
    client.force_authenticate(project.memberships.get().user)
    return client


def post_import(client, project, archive, **fields):
    data = {"name": "set-a", "archive": archive} | fields
    return client.post(f"/api/projects/{project.pk}/datasets/import/", data, format="multipart")


def run_job(response) -> Job:
    """Run the queued import the way the worker does (its task body, in this process)."""
    assert response.status_code == 202, response.content
    tasks.import_dataset(response.json()["id"])
    return Job.objects.get(pk=response.json()["id"])


def codes(job: Job) -> dict[str, str]:
    return {e["path"]: e["code"] for e in job.result["errors"]}


def test_imagefolder_import_with_splits(client, project, image_zip):
    files = imagefolder_files(2, split="train") | imagefolder_files(1, split="test")
    response = post_import(client, project, image_zip(files))
    assert response["Location"].endswith(f"/api/jobs/{response.json()['id']}/")
    job = run_job(response)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.result["written"] == 9
    assert set(Instance.objects.values_list("label", flat=True)) == set(LABELS)
    assert Instance.objects.filter(split="test").count() == 3
    stored = Instance.objects.first()
    assert Path(stored.image.path).is_file()
    assert stored.width == 24
    # Progress ends at total, and the job is readable by API.
    body = client.get(f"/api/jobs/{job.pk}/").json()
    assert body["done"] == body["total"] > 0


def test_manifest_import_with_metadata(client, project, image_zip):
    images = {f"img/{i}.png": make_image_bytes() for i in range(3)}
    manifest = "path,label,split,camera,metadata\n" + "\n".join(
        f'img/{i}.png,{LABELS[i]},test,cam{i},"{{""boxes"": [[0, 0, 4, 4]]}}"' for i in range(3)
    )
    zipped = image_zip(images | {"manifest.csv": manifest.encode()})
    job = run_job(post_import(client, project, zipped))
    assert job.status == JobStatus.SUCCEEDED, job.result
    row = Instance.objects.get(original_name__endswith="img/1.png")
    assert row.label == "dog"
    assert row.split == "test"
    assert row.metadata["camera"] == "cam1"
    assert row.metadata["boxes"] == [[0, 0, 4, 4]]


def test_separate_json_manifest(client, project, image_zip):
    images = {"a.png": make_image_bytes(), "b.png": make_image_bytes()}
    manifest = io.BytesIO(
        json.dumps(
            [
                {"path": "a.png", "label": "cat", "metadata": {"k": 1}},
                {"path": "b.png", "label": "", "split": "deployment"},
            ]
        ).encode()
    )
    manifest.name = "manifest.json"
    job = run_job(post_import(client, project, image_zip(images), manifest=manifest))
    assert job.status == JobStatus.SUCCEEDED, job.result
    assert Instance.objects.get(label="").split == "deployment"


# --- whole-upload rejections: 400 naming the field, nothing queued or stored ------------------


def _assert_rejected(response, media_root: Path, text: str) -> None:
    assert response.status_code == 400, response.content
    body = response.json()
    assert "archive" in body
    assert text in " ".join(body["archive"])
    assert Job.objects.count() == 0
    assert (
        not list((media_root / "uploads").glob("*")) if (media_root / "uploads").exists() else True
    )


def test_not_a_zip(client, project, media_root):
    fake = io.BytesIO(b"this is not a zip")
    fake.name = "data.zip"
    _assert_rejected(post_import(client, project, fake), media_root, "zip")


@pytest.mark.parametrize("evil", ["../evil.png", "/etc/evil.png", "cat/../../evil.png"])
def test_unsafe_paths_reject_the_upload(client, project, media_root, image_zip, evil):
    files = imagefolder_files(1) | {evil: make_image_bytes()}
    _assert_rejected(post_import(client, project, image_zip(files)), media_root, "evil.png")
    assert not (media_root.parent / "evil.png").exists()


def test_uncompressed_size_cap(client, project, media_root, image_zip, settings):
    settings.IMPORT_MAX_UNCOMPRESSED_BYTES = 1000
    files = {"cat/big.png": os.urandom(5000)}
    _assert_rejected(post_import(client, project, image_zip(files)), media_root, "1000")


def test_zip_bomb_ratio(client, project, media_root):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("cat/zeros.png", b"\0" * 5_000_000)
    buffer.seek(0)
    buffer.name = "bomb.zip"
    _assert_rejected(post_import(client, project, buffer), media_root, "zeros.png")


# --- per-file errors: skipped with a report, or the whole import rejected ---------------------


def _bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid PNG header that claims a huge image (the pixel data is never needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def bad_files() -> dict[str, bytes]:
    dup = make_image_bytes()
    good = make_image_bytes()
    return {
        "cat/good.png": good,
        "cat/notes.png": b"just some text, not an image",
        "cat/truncated.png": make_image_bytes(size=64)[:60],
        "dog/bomb.png": _bomb_png(),
        "horse/unknown.png": make_image_bytes(),
        "dog/dup1.png": dup,
        "dog/dup2.png": dup,
    }


EXPECTED_CODES = {
    "cat/notes.png": "not_image",
    "cat/truncated.png": "corrupt_image",
    "dog/bomb.png": "decompression_bomb",
    "horse/unknown.png": "unknown_label",
    "dog/dup2.png": "duplicate_image",
}


def test_bad_files_are_skipped_with_a_report(client, project, image_zip, settings):
    settings.IMPORT_MAX_IMAGE_PIXELS = 10_000_000
    job = run_job(post_import(client, project, image_zip(bad_files())))
    assert job.status == JobStatus.SUCCEEDED
    assert codes(job) == EXPECTED_CODES
    for err in job.result["errors"]:
        assert err["path"] in err["message"] or err["message"]
    assert sorted(
        Path(n).name for n in Instance.objects.values_list("original_name", flat=True)
    ) == ["dup1.png", "good.png"]


def test_bad_files_reject_everything_and_keep_what_was_saved(client, project, image_zip, settings):
    settings.IMPORT_MAX_IMAGE_PIXELS = 10_000_000
    first = run_job(post_import(client, project, image_zip(imagefolder_files(1))))
    assert first.status == JobStatus.SUCCEEDED
    before = set(Instance.objects.values_list("id", flat=True))
    job = run_job(post_import(client, project, image_zip(bad_files()), on_error="reject"))
    assert job.status == JobStatus.FAILED
    assert "nothing was imported" in job.error
    assert codes(job) == EXPECTED_CODES
    assert set(Instance.objects.values_list("id", flat=True)) == before


def test_duplicate_of_an_image_already_in_the_dataset(client, project, image_zip):
    image = make_image_bytes()
    run_job(post_import(client, project, image_zip({"cat/a.png": image})))
    job = run_job(post_import(client, project, image_zip({"dog/b.png": image})))
    assert codes(job) == {"dog/b.png": "duplicate_image"}
    assert Instance.objects.count() == 1


def test_reimporting_the_same_archive_is_harmless(client, project, image_zip):
    files = imagefolder_files(2)
    run_job(post_import(client, project, image_zip(files)))
    job = run_job(post_import(client, project, image_zip(files)))
    assert Instance.objects.count() == 6
    assert set(codes(job).values()) == {"duplicate_image"}


@pytest.mark.parametrize(("field", "value"), [("default_split", "holdout"), ("on_error", "maybe")])
def test_bad_options_name_the_field(client, project, image_zip, field, value):
    response = post_import(client, project, image_zip(imagefolder_files(1)), **{field: value})
    assert response.status_code == 400
    assert field in response.json()


def test_manifest_without_label_column_is_rejected(client, project, image_zip):
    zipped = image_zip({"a.png": make_image_bytes(), "manifest.csv": b"path,split\na.png,train\n"})
    response = post_import(client, project, zipped)
    assert response.status_code == 400
    assert "label" in " ".join(response.json()["manifest"])
    assert Job.objects.count() == 0
