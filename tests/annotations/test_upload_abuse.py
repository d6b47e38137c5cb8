"""Upload abuse found by the outside probe of issue 16: manifests too large for memory
(defect 5), text the database cannot store in a manifest, and what a failed import leaves
behind (defect 8)."""

from __future__ import annotations

import io
import json
import logging
import tracemalloc
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.files import File
from django.db import DataError
from rest_framework.test import APIClient

from annotations import archive, services, tasks
from annotations.archive import ArchiveLimits, ArchiveRejected
from annotations.models import Dataset, Instance, Job, JobStatus
from annotations.services import datasets as dataset_services
from tests.factories import LABELS, imagefolder_files, import_images, make_image_bytes, make_project

pytestmark = pytest.mark.django_db

ROW_LIMIT = 100


class EndlessManifest(io.RawIOBase):
    """A manifest that never ends: a header, then rows forever; counts the bytes it served."""

    def __init__(self, header: bytes, row: Iterator[bytes]) -> None:
        super().__init__()
        self._pending = header
        self._rows = row
        self.served = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        while len(self._pending) < len(buffer):
            self._pending += next(self._rows)
        n = len(buffer)
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        self.served += n
        return n


def csv_rows() -> Iterator[bytes]:
    n = 0
    while True:
        n += 1
        yield f"img/{n}.png,cat,train,plate-{n}\n".encode()


def json_rows() -> Iterator[bytes]:
    n = 0
    while True:
        n += 1
        yield f'{{"path": "img/{n}.png", "label": "cat", "plate": "p{n}"}},'.encode()


@pytest.mark.parametrize(
    ("fmt", "header", "rows"),
    [("csv", b"path,label,split,plate\n", csv_rows), ("json", b"[", json_rows)],
)
def test_a_manifest_is_read_only_up_to_the_row_limit(tmp_path: Path, fmt, header, rows):
    """Defect 5: the manifest was parsed whole before its rows were counted. Here it has no
    end at all: reading must stop at row ROW_LIMIT + 1 with the 400 message."""
    zip_path = tmp_path / "u.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("img/1.png", make_image_bytes())
    endless = EndlessManifest(header, rows())
    with pytest.raises(ArchiveRejected) as caught:
        archive.check_archive(
            zip_path,
            labels=LABELS,
            manifest=endless,
            manifest_format=fmt,
            limits=ArchiveLimits(max_files=ROW_LIMIT),
        )
    assert caught.value.field == "manifest"
    assert f"more than {ROW_LIMIT} rows" in caught.value.message
    # One read buffer (1 MiB) at most beyond the rows it parsed.
    assert endless.served <= 2 * 1024 * 1024


def big_manifest(fmt: str, rows: int) -> bytes:
    if fmt == "csv":
        lines = (f"img/{n}.png,cat,train,plate-{n:08d}\n" for n in range(rows))
        return ("path,label,split,plate\n" + "".join(lines)).encode()
    items = (f'{{"path": "img/{n}.png", "label": "cat", "plate": "{n:08d}"}}' for n in range(rows))
    return ("[" + ",\n".join(items) + "]").encode()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_large_manifest_in_the_zip_costs_little_memory(tmp_path: Path, fmt: str) -> None:
    """Defect 5: 2,000,000 rows in 8 MB cost the web worker +580 MB. A manifest of more
    than 15 MB, 400,000 rows, is refused at the row limit using a few MB."""
    manifest = big_manifest(fmt, 400_000)
    assert len(manifest) > 15 * 1024 * 1024
    zip_path = tmp_path / "u.zip"
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr(f"manifest.{fmt}", manifest)
        zf.writestr("img/0.png", make_image_bytes())
    del manifest
    tracemalloc.start()
    try:
        with pytest.raises(ArchiveRejected) as caught:
            archive.check_archive(zip_path, labels=LABELS, limits=ArchiveLimits(max_files=1000))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "more than 1000" in caught.value.message
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"


def test_a_large_separate_manifest_is_refused_in_the_request_with_little_memory(
    tmp_path: Path, media_root, settings, image_zip
) -> None:
    """The same through the service the upload view calls, with the manifest uploaded beside
    the zip: it was read whole (read_bytes) before the check. The uploads are removed."""
    settings.IMPORT_MAX_FILES = 1000
    project = make_project()
    manifest_path = tmp_path / "manifest.csv"
    manifest_path.write_bytes(big_manifest("csv", 400_000))
    archive_path = tmp_path / "data.zip"
    archive_path.write_bytes(image_zip({"img/0.png": make_image_bytes()}).getvalue())
    with archive_path.open("rb") as zipped, manifest_path.open("rb") as listed:
        tracemalloc.start()
        try:
            with pytest.raises(ValidationError) as caught:
                services.dataset_import_start(
                    project=project,
                    archive_file=File(zipped, name="data.zip"),
                    manifest_file=File(listed, name="manifest.csv"),
                    options=services.ImportOptions(dataset_name="big"),
                    created_by=None,
                )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert "more than 1000" in " ".join(caught.value.message_dict["manifest"])
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    assert not list(settings.UPLOAD_ROOT.iterdir())
    assert not Job.objects.exists()


# --- text the database cannot store ----------------------------------------------------------

CSV_HEADER = "path,label,split,camera,metadata\n"
GOOD_ROW = 'img/0.png,cat,train,cam0,"{""k"": 1}"\n'


@pytest.mark.parametrize(
    ("bad_row", "problem"),
    [
        ('img/1.png,dog,train,cam\x001,"{}"\n', "a NUL character"),  # a metadata value
        ('img/1.png,do\x00g,train,cam1,"{}"\n', "a NUL character"),  # the label
        ('img/1.png,dog,tr\x00ain,cam1,"{}"\n', "a NUL character"),  # the split
        ('img/\x001.png,dog,train,cam1,"{}"\n', "a NUL character"),  # the file name
        ('img/1.png,dog,train,cam1,"{""k"": ""a\\u0000b""}"\n', "a NUL character"),  # escaped
        ('img/1.png,dog,train,cam1,"{""a\\u0000"": 1}"\n', "a NUL character"),  # a JSON key
        ('img/1.png,dog,train,cam1,"{""k"": [""\\ud800""]}"\n', "unpaired surrogate"),
    ],
    ids=["metadata", "label", "split", "path", "json-escape", "json-key", "surrogate"],
)
def test_unstorable_text_in_a_csv_manifest_is_refused_naming_the_line(
    tmp_path: Path, bad_row: str, problem: str
) -> None:
    """Defect 8: PostgreSQL refuses NUL in text and jsonb; the import failed in the worker."""
    zip_path = tmp_path / "u.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("manifest.csv", CSV_HEADER + GOOD_ROW + bad_row)
        zf.writestr("img/0.png", make_image_bytes())
        zf.writestr("img/1.png", make_image_bytes())
    with pytest.raises(ArchiveRejected) as caught:
        archive.check_archive(zip_path, labels=LABELS)
    assert caught.value.field == "manifest"
    assert "line 3" in caught.value.message
    assert problem in caught.value.message


def test_a_nul_in_a_csv_header_is_refused(tmp_path: Path) -> None:
    zip_path = tmp_path / "u.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("manifest.csv", "path,label,cam\x00era\nimg/0.png,cat,c\n")
        zf.writestr("img/0.png", make_image_bytes())
    with pytest.raises(ArchiveRejected, match="line 1 contains a NUL character"):
        archive.check_archive(zip_path, labels=LABELS)


@pytest.mark.parametrize(
    "item",
    [
        {"path": "img/1.png", "label": "dog", "metadata": {"deep": [{"x": "a\u0000"}]}},
        {"path": "img/1.png", "label": "dog", "note\u0000": 1},
        {"path": "img/1.png", "label": "d\u0000og"},
        {"path": "img/1.png\u0000", "label": "dog"},
        {"path": "img/1.png", "label": "dog", "split": "train\u0000"},
    ],
    ids=["nested-metadata", "key", "label", "path", "split"],
)
def test_a_nul_in_a_json_manifest_is_refused_naming_the_item(tmp_path: Path, item) -> None:
    zip_path = tmp_path / "u.zip"
    good = {"path": "img/0.png", "label": "cat"}
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("manifest.json", json.dumps([good, item]))
        zf.writestr("img/0.png", make_image_bytes())
        zf.writestr("img/1.png", make_image_bytes())
    with pytest.raises(ArchiveRejected, match="item 2 contains a NUL character") as caught:
        archive.check_archive(zip_path, labels=LABELS)
    assert caught.value.field == "manifest"


def test_an_infinite_number_in_json_metadata_is_refused(tmp_path: Path) -> None:
    """1e999 parses as inf, which jsonb refuses like NaN."""
    manifest = b'[{"path": "img/0.png", "label": "cat", "metadata": {"x": 1e999}}]'
    zip_path = tmp_path / "u.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("img/0.png", make_image_bytes())
    with pytest.raises(ArchiveRejected, match="out of range"):
        archive.check_archive(zip_path, labels=LABELS, manifest=manifest)


@pytest.fixture
def project(media_root):
    return make_project()


@pytest.fixture
def client(project) -> APIClient:
    client = APIClient()
    client.force_authenticate(project.memberships.get().user)
    return client


def post_import(client, project, archive_file, **fields):
    data = {"name": "set-a", "archive": archive_file} | fields
    return client.post(f"/api/projects/{project.pk}/datasets/import/", data, format="multipart")


def test_a_nul_in_manifest_metadata_is_a_400_at_upload(client, project, image_zip, media_root):
    """Defect 8 through the API: refused in the request, naming the line; nothing queued,
    no dataset row, no upload left."""
    files = {
        "img/0.png": make_image_bytes(),
        "img/1.png": make_image_bytes(),
        "manifest.csv": (CSV_HEADER + GOOD_ROW + 'img/1.png,dog,train,cam\x001,"{}"\n').encode(),
    }
    response = post_import(client, project, image_zip(files))
    assert response.status_code == 400, response.content
    message = " ".join(response.json()["manifest"])
    assert "line 3" in message
    assert "NUL" in message
    assert not Job.objects.exists()
    assert not Dataset.objects.exists()
    assert not list((media_root / "uploads").glob("*"))


# --- a failed import job: no database text in the job, nothing left behind -------------------


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def start_import(client, project, image_zip, n: int = 4) -> int:
    files = {f"{LABELS[i % 3]}/{i}.png": make_image_bytes() for i in range(n)}
    response = post_import(client, project, image_zip(files))
    assert response.status_code == 202, response.content
    return response.json()["id"]


SQL_TEXT = (
    "unsupported Unicode escape sequence\nDETAIL:  \\u0000 cannot be converted to text.\n"
    'CONTEXT:  JSON data, line 1: {"camera": "cam...\nINSERT INTO "annotations_instance" ...'
)


def test_a_database_error_in_the_worker_is_not_shown_and_nothing_is_left(
    client, project, image_zip, media_root, monkeypatch, caplog
):
    """Defect 8: job.error held the SQL error (read by experts and viewers), and the images
    written, the upload and an empty dataset row stayed behind."""
    job_id = start_import(client, project, image_zip)

    def failing_bulk_create(*args, **kwargs):
        raise DataError(SQL_TEXT)

    monkeypatch.setattr(Instance.objects, "bulk_create", failing_bulk_create)
    with caplog.at_level(logging.ERROR), pytest.raises(DataError):
        tasks.import_dataset(job_id)
    job = Job.objects.get(pk=job_id)
    assert job.status == JobStatus.FAILED
    assert job.error == (
        f"The import failed on the server; the error is in the worker's log (job {job_id})."
    )
    body = client.get(f"/api/jobs/{job_id}/").json()
    assert "INSERT" not in json.dumps(body)
    assert "Unicode" not in json.dumps(body)
    # The log has the whole story.
    assert any(r.exc_info and "INSERT INTO" in str(r.exc_info[1]) for r in caplog.records)
    # Nothing left behind: no image files, no upload, no empty dataset row.
    assert files_under(media_root / "instances") == []
    assert files_under(media_root / "uploads") == []
    assert not Dataset.objects.exists()
    assert job.dataset_id is None


def test_an_unexpected_error_while_scanning_shows_no_path_and_cleans_up(
    client, project, image_zip, media_root, monkeypatch
):
    job_id = start_import(client, project, image_zip)

    def failing_scan(*args, **kwargs):
        raise OSError("[Errno 5] Input/output error: '/srv/feedback/media/uploads/x.zip'")

    monkeypatch.setattr(archive, "scan_archive", failing_scan)
    with pytest.raises(OSError, match="Input/output"):
        tasks.import_dataset(job_id)
    job = Job.objects.get(pk=job_id)
    assert job.status == JobStatus.FAILED
    assert "/srv" not in job.error
    assert f"(job {job_id})" in job.error
    assert files_under(media_root / "uploads") == []
    assert not Dataset.objects.exists()


def test_a_failure_keeps_the_batches_written_and_an_existing_dataset(
    client, project, image_zip, media_root, monkeypatch
):
    """Rows committed by earlier batches stay with their files; only the failed batch's files
    go, and a dataset that holds instances stays."""
    monkeypatch.setattr(dataset_services, "IMPORT_WRITE_BATCH", 2)
    job_id = start_import(client, project, image_zip, n=6)
    real = Instance.objects.bulk_create
    calls = []

    def second_batch_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise DataError(SQL_TEXT)
        return real(*args, **kwargs)

    monkeypatch.setattr(Instance.objects, "bulk_create", second_batch_fails)
    with pytest.raises(DataError):
        tasks.import_dataset(job_id)
    job = Job.objects.get(pk=job_id)
    assert job.status == JobStatus.FAILED
    assert "INSERT" not in job.error
    kept = Instance.objects.filter(dataset__name="set-a")
    assert kept.count() == 2
    assert sorted(files_under(media_root / "instances")) == sorted(Path(i.image.path) for i in kept)
    assert files_under(media_root / "uploads") == []
    assert job.dataset_id is not None


def test_an_archive_refused_in_the_worker_cleans_up(client, project, image_zip, media_root):
    """A job failing the worker's checks (here the upload was replaced by junk after the
    request's check) removes its upload and the empty dataset row it made."""
    job_id = start_import(client, project, image_zip)
    job = Job.objects.get(pk=job_id)
    Path(job.params["archive_path"]).write_bytes(b"not a zip any more")
    tasks.import_dataset(job_id)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error.startswith("archive: not a valid zip file")
    assert files_under(media_root / "uploads") == []
    assert not Dataset.objects.exists()


def test_a_failed_import_into_a_dataset_with_instances_keeps_it(
    client, project, image_zip, media_root
):
    first = start_import(client, project, image_zip)
    tasks.import_dataset(first)
    assert Job.objects.get(pk=first).status == JobStatus.SUCCEEDED
    second = start_import(client, project, image_zip)
    job = Job.objects.get(pk=second)
    Path(job.params["archive_path"]).write_bytes(b"junk")
    tasks.import_dataset(second)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert Dataset.objects.get().instances.count() == 4
    assert files_under(media_root / "uploads") == []


# --- predictions files: streamed too, at most one row per instance ------------------------------


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_large_predictions_file_stops_at_the_number_of_instances(
    tmp_path: Path, media_root, settings, image_zip, fmt: str
) -> None:
    """Like a manifest, a predictions file was read and parsed whole in the request. Each row
    names a different instance, so one row more than the project has is refused at once."""
    project = make_project()
    import_images(project, image_zip(imagefolder_files(1)))
    rows = 400_000
    path = tmp_path / f"p.{fmt}"
    if fmt == "csv":
        body = "instance_id,cat,dog,bird\n" + "".join(f"{n},0.5,0.25,0.25\n" for n in range(rows))
    else:
        item = '{{"instance_id": {}, "probabilities": [0.5, 0.25, 0.25]}}'
        body = "[" + ",".join(item.format(n) for n in range(rows)) + "]"
    path.write_text(body)
    del body
    spec = services.ModelSpecInput(
        name="external", kind="predictions_only", input_size=32, mean=[0.5] * 3, std=[0.25] * 3
    )
    with path.open("rb") as handle:
        tracemalloc.start()
        try:
            with pytest.raises(ValidationError) as caught:
                services.predictions_import_start(
                    project=project,
                    spec=spec,
                    predictions_file=File(handle, name=f"p.{fmt}"),
                    created_by=None,
                )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    assert "more rows than the project has instances (3)" in " ".join(
        caught.value.message_dict["predictions"]
    )
    assert not list(settings.UPLOAD_ROOT.iterdir())


def test_a_malformed_predictions_csv_is_a_400(media_root, image_zip) -> None:
    """A cell longer than the csv module's field limit raised csv.Error: a 500."""
    project = make_project()
    import_images(project, image_zip(imagefolder_files(1)))
    spec = services.ModelSpecInput(
        name="external", kind="predictions_only", input_size=32, mean=[0.5] * 3, std=[0.25] * 3
    )
    content = io.BytesIO(b"instance_id,cat,dog,bird\n" + b"x" * 200_000 + b",1,0,0\n")
    with pytest.raises(ValidationError) as caught:
        services.predictions_import_start(
            project=project,
            spec=spec,
            predictions_file=File(content, name="p.csv"),
            created_by=None,
        )
    assert "malformed near line 2" in " ".join(caught.value.message_dict["predictions"])
