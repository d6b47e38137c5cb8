"""Dataset import: a cheap structural check in the request, the rest in a worker."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import transaction

from annotations import archive
from annotations.models import (
    Dataset,
    Instance,
    Job,
    JobKind,
    JobStatus,
    Project,
    instance_upload_to,
)
from annotations.services._errors import field_error
from annotations.services.jobs import (
    enqueue_on_commit,
    job_create,
    job_fail,
    job_progress,
    job_start,
    job_succeed,
)

logger = logging.getLogger(__name__)

IMPORT_WRITE_BATCH = 200


def archive_limits() -> archive.ArchiveLimits:
    return archive.ArchiveLimits(
        max_uncompressed_bytes=settings.IMPORT_MAX_UNCOMPRESSED_BYTES,
        max_files=settings.IMPORT_MAX_FILES,
        max_image_pixels=settings.IMPORT_MAX_IMAGE_PIXELS,
    )


def save_upload(upload: File, suffix: str) -> Path:
    settings.UPLOAD_ROOT.mkdir(parents=True, exist_ok=True)
    path = settings.UPLOAD_ROOT / f"{uuid.uuid4().hex}{suffix}"
    size = 0
    with path.open("wb") as out:
        for chunk in (
            upload.chunks()
            if hasattr(upload, "chunks")
            else iter(lambda: upload.read(1 << 20), b"")
        ):
            size += len(chunk)
            if size > settings.IMPORT_MAX_UPLOAD_BYTES:
                out.close()
                path.unlink(missing_ok=True)
                raise field_error(
                    "archive",
                    f"The upload exceeds the limit of {settings.IMPORT_MAX_UPLOAD_BYTES} bytes.",
                )
            out.write(chunk)
    return path


@dataclass(frozen=True)
class ImportOptions:
    dataset_name: str
    default_split: str = "train"
    # "skip": bad files are left out and listed in the report; "reject": any bad file
    # rejects the whole import and nothing is written.
    on_error: str = "skip"


def _validate_import_options(project: Project, options: ImportOptions) -> None:
    from annotations.models import Split

    if not options.dataset_name.strip():
        raise field_error("name", "Give the dataset a name.")
    if options.default_split not in Split.values:
        raise field_error(
            "default_split", f"Unknown split '{options.default_split}'; use {Split.values}."
        )
    if options.on_error not in ("skip", "reject"):
        raise field_error("on_error", "Use 'skip' or 'reject'.")


def dataset_import_start(
    *,
    project: Project,
    archive_file: File,
    options: ImportOptions,
    created_by: Any,
    manifest_file: File | None = None,
    run_now: bool = False,
) -> Job:
    """Check an uploaded zip's structure and queue its import (or, with ``run_now``, leave
    the job for the caller to run in-process, as the CLI does).

    The structural check reads only the zip's central directory, so it is quick; a bad
    archive (not a zip, unsafe paths, too large) is refused here with a 400 and nothing is
    saved. Decoding every image is the worker's job.
    """
    _validate_import_options(project, options)
    path = save_upload(archive_file, ".zip")
    manifest_path: Path | None = None
    try:
        if manifest_file is not None:
            name = (getattr(manifest_file, "name", "") or "").lower()
            manifest_path = save_upload(
                manifest_file, ".json" if name.endswith(".json") else ".csv"
            )
        archive.check_archive(
            path,
            labels=project.labels,
            default_split=options.default_split,
            manifest=manifest_path,  # streamed: reading stops at the row limit
            manifest_format=manifest_path.suffix[1:] if manifest_path else None,
            limits=archive_limits(),
        )
    except (archive.ArchiveRejected, ValidationError) as exc:
        path.unlink(missing_ok=True)
        if manifest_path:
            manifest_path.unlink(missing_ok=True)
        if isinstance(exc, archive.ArchiveRejected):
            raise field_error(exc.field, exc.message) from exc
        raise
    with transaction.atomic():
        dataset, created = Dataset.objects.get_or_create(project=project, name=options.dataset_name)
        job = job_create(
            project=project,
            kind=JobKind.IMPORT_DATASET,
            dataset=dataset,
            created_by=created_by,
            params={
                "archive_path": str(path),
                "manifest_path": str(manifest_path) if manifest_path else None,
                "default_split": options.default_split,
                "on_error": options.on_error,
                "original_name": getattr(archive_file, "name", ""),
                # A failed import removes the dataset row only if it made it (and it is empty).
                "new_dataset": created,
            },
        )
        if not run_now:
            enqueue_on_commit("annotations.tasks.import_dataset", job.pk)
    return job


def dataset_import_run(
    *, job: Job, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Scan the job's archive and write the accepted images. Used by the worker and the CLI.

    Safe to repeat: instances are unique per (dataset, content hash), so a rerun after a
    crash writes only what is missing. Returns the import report (also stored on the job).
    A job that fails, for any reason, leaves nothing behind (see _discard_failed_import);
    one that succeeds removes its uploads.
    """
    assert job.dataset is not None, "an import job always has a dataset"
    job_start(job=job)
    saved: list[str] = []  # image files this job created, for the cleanup of a failure
    try:
        report = _scan_and_write(job=job, saved=saved, progress=progress)
    except Exception:
        # The caller (the task) fails the job with the error; what was left half done goes.
        _discard_failed_import(job=job, saved=saved)
        raise
    if job.status == JobStatus.FAILED:
        _discard_failed_import(job=job, saved=saved)
    else:
        _remove_uploads(job)
    return report


def _scan_and_write(
    *, job: Job, saved: list[str], progress: Callable[[int, int], None] | None
) -> dict[str, Any]:
    """The import itself, with the job started: succeeds or fails the job, except for an
    unexpected exception, which it raises. Appends to ``saved`` the image files it writes."""
    dataset = job.dataset
    assert dataset is not None
    params = job.params
    archive_path = Path(params["archive_path"])
    manifest_path = Path(params["manifest_path"]) if params.get("manifest_path") else None
    manifest_format = None
    if manifest_path is not None:
        manifest_format = "json" if manifest_path.suffix == ".json" else "csv"

    # Progress counts the archive's files, the unit the user thinks in (2,800 images import
    # as 2,800): a file is half done once checked (decoded, the first half of the work) and
    # done once written, or once refused, since a refused file is not written.
    def on_scan(done: int, total: int) -> None:
        if total and (done % 50 == 0 or done == total):
            job_progress(job=job, done=done // 2, total=total)
        if progress:
            progress(done // 2, total)

    try:
        scan = archive.scan_archive(
            archive_path,
            labels=dataset.project.labels,
            default_split=params.get("default_split", "train"),
            manifest=manifest_path,
            manifest_format=manifest_format,
            known_hashes=set(dataset.instances.values_list("content_hash", flat=True)),
            limits=archive_limits(),
            progress=on_scan,
        )
    except archive.ArchiveRejected as exc:
        report = {"rejected": True, "field": exc.field, "message": exc.message}
        job_fail(job=job, error=f"{exc.field}: {exc.message}", result=report)
        return report
    report = scan.report()
    report["on_error"] = params.get("on_error", "skip")
    if scan.errors and report["on_error"] == "reject":
        report["written"] = 0
        job_fail(
            job=job,
            error=f"{len(scan.errors)} file(s) failed the checks; nothing was imported "
            "(on_error=reject). See the report.",
            result=report,
        )
        return report

    files = len(scan.accepted) + len(scan.errors)
    job.total = files
    written = 0
    for start in range(0, len(scan.accepted), IMPORT_WRITE_BATCH):
        chunk = scan.accepted[start : start + IMPORT_WRITE_BATCH]
        written += _write_instances(
            dataset=dataset, archive_path=archive_path, accepted=chunk, saved=saved
        )
        # Checked: every file; finished: the refused ones and the ones written so far.
        done = (files + len(scan.errors) + start + len(chunk)) // 2
        job_progress(job=job, done=done)
        if progress:
            progress(done, files)
    report["written"] = written
    job_succeed(job=job, result=report)
    return report


def _remove_uploads(job: Job) -> None:
    for key in ("archive_path", "manifest_path"):
        if job.params.get(key):
            Path(job.params[key]).unlink(missing_ok=True)


def _discard_failed_import(*, job: Job, saved: Sequence[str]) -> None:
    """Remove what a failed import job leaves behind: the image files it wrote that no
    instance references (those of committed batches stay with their rows), its uploaded
    files, and its dataset row if this job created it and it holds no instance.

    The dataset row goes only once no other job refers to it (Job.dataset cascades); this
    job is detached from it first, so its error and report stay readable. A failure here is
    logged and never replaces the job's own error.
    """
    try:
        for start in range(0, len(saved), 1000):
            names = saved[start : start + 1000]
            kept = set(Instance.objects.filter(image__in=names).values_list("image", flat=True))
            for name in names:
                if name not in kept:
                    default_storage.delete(name)
        _remove_uploads(job)
        dataset_id = job.dataset_id
        if dataset_id is None or not job.params.get("new_dataset"):
            return
        with transaction.atomic():
            dataset = Dataset.objects.select_for_update().filter(pk=dataset_id).first()
            if dataset is None or dataset.instances.exists():
                return
            if Job.objects.filter(dataset_id=dataset_id).exclude(pk=job.pk).exists():
                return
            Job.objects.filter(pk=job.pk).update(dataset=None)
            job.dataset = None
            dataset.delete()
    except Exception:
        logger.exception("cleaning up after the failed import job %s failed", job.pk)


def _write_instances(
    *,
    dataset: Dataset,
    archive_path: Path,
    accepted: Sequence[archive.AcceptedImage],
    saved: list[str],
) -> int:
    """Store one batch's files and rows; appends to ``saved`` the files written here."""
    rows = []
    for item, data in archive.iter_image_bytes(archive_path, accepted, limits=archive_limits()):
        row = Instance(
            project_id=dataset.project_id,
            dataset=dataset,
            label=item.label,
            split=item.split,
            metadata=item.metadata,
            content_hash=item.sha256,
            original_name=item.path[-500:],
            width=item.width,
            height=item.height,
        )
        name = instance_upload_to(row, f"x.{_EXTENSIONS.get(item.format, item.format.lower())}")
        # Content-addressed paths: a rerun finds the file there already and skips the write.
        if not default_storage.exists(name):
            saved.append(default_storage.save(name, ContentFile(data)))
        row.image.name = name
        rows.append(row)
    before = dataset.instances.count()
    Instance.objects.bulk_create(rows, ignore_conflicts=True)
    return dataset.instances.count() - before


_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tif"}
