"""A dataset import's progress counts the archive's files, the unit the user thinks in: an
archive of n images imports as n, never 2n steps, whatever is refused on the way."""

from __future__ import annotations

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotations import services
from annotations.models import JobStatus
from annotations.services import datasets
from tests.factories import imagefolder_files, make_project

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("batch", [200, 4])
def test_import_progress_counts_files(media_root, image_zip, monkeypatch, batch):
    monkeypatch.setattr(datasets, "IMPORT_WRITE_BATCH", batch)
    project = make_project()
    files = imagefolder_files(4) | {"cat/broken.png": b"not an image"}  # 12 images + 1 bad
    job = datasets.dataset_import_start(
        project=project,
        archive_file=SimpleUploadedFile("d.zip", image_zip(files).read()),
        options=datasets.ImportOptions(dataset_name="d"),
        created_by=project.memberships.get().user,
        run_now=True,
    )
    seen: list[tuple[int, int]] = []

    report = services.dataset_import_run(job=job, progress=lambda d, t: seen.append((d, t)))

    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED
    assert report["rejected"] >= 1
    assert (job.done, job.total) == (13, 13)
    assert {total for _, total in seen} == {13}
    done = [d for d, _ in seen]
    assert done == sorted(done)  # never goes back
    assert done[-1] == 13
    # Checking every file is half the work: the bar is halfway when writing starts.
    assert 6 in done
