"""Writes. Every state change of the domain goes through a function here.

Functions are keyword-only and typed; those that write several rows are atomic. Work that
takes longer than a request is queued as a Job whose Celery task is sent inside
``transaction.on_commit``, so a worker never looks for a row that is not committed yet.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.text import slugify
from PIL import Image

from annotations import archive
from annotations.models import (
    Dataset,
    Explanation,
    Instance,
    Job,
    JobKind,
    JobStatus,
    Membership,
    ModelKind,
    ModelVersion,
    Prediction,
    Project,
    Role,
    instance_upload_to,
)
from explain_worker import model_loading

logger = logging.getLogger(__name__)

IMPORT_WRITE_BATCH = 200


def _field_error(field: str, message: str) -> ValidationError:
    return ValidationError({field: [message]})


# --- Projects -----------------------------------------------------------------------------


def _clean_names(values: Sequence[Any], field: str) -> list[str]:
    names = [str(v).strip() for v in values]
    if any(not n for n in names):
        raise _field_error(field, "Names must not be empty.")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise _field_error(field, f"Duplicate names: {', '.join(duplicates)}.")
    return names


@transaction.atomic
def project_create(
    *,
    name: str,
    labels: Sequence[str],
    created_by: Any,
    slug: str = "",
    description: str = "",
    concept_vocabulary: Sequence[str] = (),
) -> Project:
    """Create a project; its creator becomes its first scientist."""
    labels = _clean_names(labels, "labels")
    if len(labels) < 2:
        raise _field_error("labels", "A project needs at least two classes.")
    slug = slug or slugify(name)
    if not slug:
        raise _field_error("slug", "Give a slug of letters, digits and hyphens.")
    if Project.objects.filter(slug=slug).exists():
        raise _field_error("slug", f"A project with slug '{slug}' exists already.")
    project = Project.objects.create(
        name=name,
        slug=slug,
        description=description,
        labels=labels,
        concept_vocabulary=_clean_names(concept_vocabulary, "concept_vocabulary"),
        created_by=created_by,
    )
    if created_by is not None:
        Membership.objects.create(project=project, user=created_by, role=Role.SCIENTIST)
    return project


def membership_add(*, project: Project, user: Any, role: str) -> Membership:
    if role not in Role.values:
        raise _field_error("role", f"Unknown role '{role}'; use one of {', '.join(Role.values)}.")
    membership, _ = Membership.objects.get_or_create(project=project, user=user, role=role)
    return membership


# --- Jobs ---------------------------------------------------------------------------------


def job_create(
    *,
    project: Project,
    kind: str,
    created_by: Any = None,
    model_version: ModelVersion | None = None,
    dataset: Dataset | None = None,
    params: dict[str, Any] | None = None,
    total: int = 0,
) -> Job:
    return Job.objects.create(
        project=project,
        kind=kind,
        created_by=created_by,
        model_version=model_version,
        dataset=dataset,
        params=params or {},
        total=total,
    )


def job_start(*, job: Job, total: int | None = None) -> None:
    """Mark a job running. A job picked up again after a crash keeps its first start time."""
    fields = ["status", "updated_at"]
    job.status = JobStatus.RUNNING
    if job.started_at is None:
        job.started_at = timezone.now()
        fields.append("started_at")
    if total is not None:
        job.total = total
        fields.append("total")
    job.save(update_fields=fields)


def job_progress(*, job: Job, done: int, total: int | None = None) -> None:
    if total is not None:
        job.total = total
    job.done = min(done, job.total) if job.total else done
    job.save(update_fields=["done", "total", "updated_at"])


def job_succeed(*, job: Job, result: dict[str, Any] | None = None) -> None:
    job.status = JobStatus.SUCCEEDED
    job.finished_at = timezone.now()
    fields = ["status", "finished_at", "updated_at"]
    if result is not None:
        job.result = result
        fields.append("result")
    job.save(update_fields=fields)


def job_fail(*, job: Job, error: str, result: dict[str, Any] | None = None) -> None:
    job.status = JobStatus.FAILED
    job.error = error[:5000]
    job.finished_at = timezone.now()
    fields = ["status", "error", "finished_at", "updated_at"]
    if result is not None:
        job.result = result
        fields.append("result")
    job.save(update_fields=fields)


def _enqueue_on_commit(task_path: str, job_id: int) -> None:
    # Imported here so that services stay importable without the Celery app configured
    # (management commands that run a job in-process never send a message).
    from feedback_service.celery import app

    transaction.on_commit(lambda: app.send_task(task_path, args=[job_id]))


# --- Dataset import -----------------------------------------------------------------------


def _archive_limits() -> archive.ArchiveLimits:
    return archive.ArchiveLimits(
        max_uncompressed_bytes=settings.IMPORT_MAX_UNCOMPRESSED_BYTES,
        max_files=settings.IMPORT_MAX_FILES,
        max_image_pixels=settings.IMPORT_MAX_IMAGE_PIXELS,
    )


def _save_upload(upload: File, suffix: str) -> Path:
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
                raise _field_error(
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
        raise _field_error("name", "Give the dataset a name.")
    if options.default_split not in Split.values:
        raise _field_error(
            "default_split", f"Unknown split '{options.default_split}'; use {Split.values}."
        )
    if options.on_error not in ("skip", "reject"):
        raise _field_error("on_error", "Use 'skip' or 'reject'.")


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
    path = _save_upload(archive_file, ".zip")
    manifest_path: Path | None = None
    try:
        if manifest_file is not None:
            name = (getattr(manifest_file, "name", "") or "").lower()
            manifest_path = _save_upload(
                manifest_file, ".json" if name.endswith(".json") else ".csv"
            )
        archive.check_archive(
            path,
            labels=project.labels,
            default_split=options.default_split,
            manifest=manifest_path.read_bytes() if manifest_path else None,
            manifest_format=manifest_path.suffix[1:] if manifest_path else None,
            limits=_archive_limits(),
        )
    except (archive.ArchiveRejected, ValidationError) as exc:
        path.unlink(missing_ok=True)
        if manifest_path:
            manifest_path.unlink(missing_ok=True)
        if isinstance(exc, archive.ArchiveRejected):
            raise _field_error(exc.field, exc.message) from exc
        raise
    with transaction.atomic():
        dataset, _ = Dataset.objects.get_or_create(project=project, name=options.dataset_name)
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
            },
        )
        if not run_now:
            _enqueue_on_commit("annotations.tasks.import_dataset", job.pk)
    return job


def dataset_import_run(
    *, job: Job, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Scan the job's archive and write the accepted images. Used by the worker and the CLI.

    Safe to repeat: instances are unique per (dataset, content hash), so a rerun after a
    crash writes only what is missing. Returns the import report (also stored on the job).
    """
    dataset = job.dataset
    assert dataset is not None, "an import job always has a dataset"
    params = job.params
    archive_path = Path(params["archive_path"])
    manifest = None
    manifest_format = None
    if params.get("manifest_path"):
        manifest_path = Path(params["manifest_path"])
        manifest = manifest_path.read_bytes()
        manifest_format = "json" if manifest_path.suffix == ".json" else "csv"
    job_start(job=job)

    def on_scan(done: int, total: int) -> None:
        # Scanning (decoding) is the first half of the work, writing the second.
        if total and (done % 50 == 0 or done == total):
            job_progress(job=job, done=done, total=2 * total)
        if progress:
            progress(done, 2 * total)

    try:
        scan = archive.scan_archive(
            archive_path,
            labels=dataset.project.labels,
            default_split=params.get("default_split", "train"),
            manifest=manifest,
            manifest_format=manifest_format,
            known_hashes=set(dataset.instances.values_list("content_hash", flat=True)),
            limits=_archive_limits(),
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

    total = len(scan.accepted)
    job.total = 2 * total
    written = 0
    for start in range(0, total, IMPORT_WRITE_BATCH):
        chunk = scan.accepted[start : start + IMPORT_WRITE_BATCH]
        written += _write_instances(dataset=dataset, archive_path=archive_path, accepted=chunk)
        job_progress(job=job, done=total + start + len(chunk))
        if progress:
            progress(total + start + len(chunk), 2 * total)
    report["written"] = written
    job_succeed(job=job, result=report)
    archive_path.unlink(missing_ok=True)
    return report


def _write_instances(
    *, dataset: Dataset, archive_path: Path, accepted: Sequence[archive.AcceptedImage]
) -> int:
    rows = []
    for item, data in archive.iter_image_bytes(archive_path, accepted, limits=_archive_limits()):
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
            default_storage.save(name, ContentFile(data))
        row.image.name = name
        rows.append(row)
    before = dataset.instances.count()
    Instance.objects.bulk_create(rows, ignore_conflicts=True)
    return dataset.instances.count() - before


_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tif"}


# --- Model versions -----------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpecInput:
    name: str
    kind: str
    input_size: int
    mean: Sequence[float]
    std: Sequence[float]
    label_order: Sequence[str] = ()
    architecture: str = ""
    notes: str = ""


def _validate_preprocessing(project: Project, spec: ModelSpecInput) -> list[str]:
    if not spec.name.strip():
        raise _field_error("name", "Give the model version a name.")
    if spec.kind not in ModelKind.values:
        raise _field_error("kind", f"Unknown kind '{spec.kind}'; use one of {ModelKind.values}.")
    if not 8 <= spec.input_size <= 1024:
        raise _field_error("input_size", "The input size must be between 8 and 1024 pixels.")
    for field, values in (("mean", spec.mean), ("std", spec.std)):
        if len(values) != 3 or not all(isinstance(v, int | float) for v in values):
            raise _field_error(field, f"Give three numbers for {field}, one per RGB channel.")
    if any(v <= 0 for v in spec.std):
        raise _field_error("std", "Every std value must be positive.")
    label_order = list(spec.label_order) or list(project.labels)
    unknown = [label for label in label_order if label not in project.labels]
    if unknown:
        raise _field_error(
            "label_order", f"Not in the project's label set: {', '.join(map(str, unknown))}."
        )
    if len(set(label_order)) != len(label_order):
        raise _field_error("label_order", "A class appears twice in the label order.")
    return label_order


def _sample_image(project: Project) -> Image.Image:
    instance = Instance.objects.filter(project=project).order_by("id").first()
    if instance is None:
        raise _field_error(
            "project", "Import a dataset first: the model is validated on one of its images."
        )
    with instance.image.open("rb") as fh:
        image = Image.open(fh)
        image.load()
    return image.convert("RGB")


def _next_version(project: Project) -> int:
    # Callers hold a lock on the project row, so two registrations cannot take one number.
    return (project.model_versions.aggregate(v=Max("version"))["v"] or 0) + 1


def model_version_register(
    *, project: Project, spec: ModelSpecInput, weights_file: File, created_by: Any
) -> tuple[ModelVersion, Job]:
    """Validate a PyTorch model by a forward pass on one instance, save it and queue its
    predictions. Raises ValidationError naming the field when the model does not fit."""
    if spec.kind == ModelKind.PREDICTIONS_ONLY:
        raise _field_error("kind", "Use the predictions import for predictions-only models.")
    label_order = _validate_preprocessing(project, spec)
    if spec.kind == ModelKind.ARCHITECTURE and not spec.architecture:
        raise _field_error("architecture", "Name the architecture, e.g. resnet18.")
    if spec.kind == ModelKind.ARCHITECTURE and spec.architecture not in (
        model_loading.list_architectures()
    ):
        raise _field_error(
            "architecture",
            f"Unknown architecture '{spec.architecture}'. Use a torchvision classification "
            "model name (GET /api/architectures/ lists them) or export TorchScript.",
        )
    sample = _sample_image(project)
    with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
        for chunk in weights_file.chunks():
            tmp.write(chunk)
        tmp.flush()
        try:
            model_loading.validate_model(
                _spec_for(spec.kind, spec.architecture, tmp.name, label_order, spec), sample
            )
        except model_loading.ModelLoadError as exc:
            raise _field_error("weights", str(exc)) from exc
        with transaction.atomic():
            Project.objects.select_for_update().get(pk=project.pk)
            mv = ModelVersion(
                project=project,
                version=_next_version(project),
                name=spec.name,
                kind=spec.kind,
                architecture=spec.architecture if spec.kind == ModelKind.ARCHITECTURE else "",
                input_size=spec.input_size,
                mean=list(spec.mean),
                std=list(spec.std),
                label_order=label_order,
                notes=spec.notes,
                created_by=created_by,
            )
            tmp.seek(0)
            mv.weights.save(Path(weights_file.name or "weights.pt").name, File(tmp), save=False)
            mv.save()
            job = predictions_compute_start(model_version=mv, created_by=created_by)
    return mv, job


def _spec_for(
    kind: str, architecture: str, path: str, label_order: Sequence[str], spec: Any
) -> model_loading.ModelSpec:
    return model_loading.ModelSpec(
        kind=kind,
        weights_path=path,
        num_classes=len(label_order),
        input_size=spec.input_size,
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        architecture=architecture or None,
    )


def model_spec(model_version: ModelVersion) -> model_loading.ModelSpec:
    """The Django-free description of a stored model version, for the worker."""
    return _spec_for(
        model_version.kind,
        model_version.architecture,
        model_version.weights.path,
        model_version.label_order,
        model_version,
    )


def predictions_compute_start(*, model_version: ModelVersion, created_by: Any = None) -> Job:
    job = job_create(
        project=model_version.project,
        kind=JobKind.PREDICT,
        model_version=model_version,
        created_by=created_by,
        total=Instance.objects.filter(project_id=model_version.project_id).count(),
    )
    _enqueue_on_commit("explain_worker.tasks.compute_predictions", job.pk)
    return job


def predictions_write(
    *,
    model_version: ModelVersion,
    instance_ids: Sequence[int],
    probabilities: np.ndarray,
    embeddings: np.ndarray | None,
) -> int:
    """Store one batch of predictions. Existing (instance, model version) rows are kept, so a
    batch repeated after a crash adds nothing. Returns the number of rows in the batch."""
    labels = model_version.label_order
    probs = np.asarray(probabilities, dtype=np.float64)
    top = probs.argmax(axis=1)
    rows = [
        Prediction(
            instance_id=iid,
            model_version=model_version,
            probabilities=[round(float(p), 6) for p in probs[i]],
            label=labels[int(top[i])],
            confidence=float(probs[i, top[i]]),
            embedding=(
                None if embeddings is None else np.asarray(embeddings[i], dtype="<f4").tobytes()
            ),
        )
        for i, iid in enumerate(instance_ids)
    ]
    Prediction.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


# --- Predictions-only import --------------------------------------------------------------


@dataclass(frozen=True)
class ParsedPredictions:
    instance_ids: list[int]
    probabilities: np.ndarray


def _parse_prediction_rows(data: bytes, fmt: str, label_order: Sequence[str]) -> list[tuple]:
    """Rows of (row number, instance reference, probabilities) from CSV or JSON."""
    rows: list[tuple] = []
    if fmt == "json":
        try:
            items = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise _field_error("predictions", f"Not valid JSON: {exc}.") from exc
        if not isinstance(items, list):
            raise _field_error("predictions", "The JSON must be a list of objects.")
        for n, item in enumerate(items, start=1):
            if not isinstance(item, dict) or "probabilities" not in item:
                raise _field_error("predictions", f"Item {n} has no 'probabilities'.")
            ref = item.get("instance_id", item.get("path", item.get("content_hash")))
            probs = item["probabilities"]
            if isinstance(probs, dict):
                missing = [lbl for lbl in label_order if lbl not in probs]
                if missing:
                    raise _field_error(
                        "predictions", f"Item {n} lacks probabilities for: {', '.join(missing)}."
                    )
                probs = [probs[lbl] for lbl in label_order]
            rows.append((n, ref, probs))
        return rows
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig")))
    except UnicodeDecodeError as exc:
        raise _field_error("predictions", "The CSV must be UTF-8 text.") from exc
    header = reader.fieldnames or []
    ref_column = next((c for c in ("instance_id", "path", "content_hash") if c in header), None)
    if ref_column is None:
        raise _field_error(
            "predictions", "The CSV needs an 'instance_id', 'path' or 'content_hash' column."
        )
    missing = [lbl for lbl in label_order if lbl not in header]
    if missing:
        raise _field_error(
            "predictions", f"The CSV lacks a probability column for: {', '.join(missing)}."
        )
    for n, record in enumerate(reader, start=2):
        rows.append((n, record[ref_column], [record[lbl] for lbl in label_order]))
    return rows


def _resolve_instances(project: Project, refs: list[Any]) -> dict[Any, int]:
    qs = Instance.objects.filter(project=project)
    by_id = {str(i): i for i in qs.values_list("id", flat=True)}
    by_path = dict(qs.values_list("original_name", "id"))
    by_hash = dict(qs.values_list("content_hash", "id"))
    resolved = {}
    for ref in refs:
        key = str(ref)
        iid = by_id.get(key) or by_path.get(key) or by_hash.get(key)
        if iid is not None:
            resolved[ref] = iid
    return resolved


def parse_predictions(
    *, project: Project, data: bytes, fmt: str, label_order: Sequence[str]
) -> ParsedPredictions:
    """Validate a predictions file completely; raises ValidationError naming the row."""
    rows = _parse_prediction_rows(data, fmt, label_order)
    if not rows:
        raise _field_error("predictions", "The file holds no predictions.")
    resolved = _resolve_instances(project, [ref for _, ref, _ in rows])
    ids: list[int] = []
    matrix = np.zeros((len(rows), len(label_order)), dtype=np.float64)
    seen: set[int] = set()
    for i, (n, ref, probs) in enumerate(rows):
        if ref not in resolved:
            raise _field_error("predictions", f"Row {n}: no instance '{ref}' in this project.")
        if resolved[ref] in seen:
            raise _field_error("predictions", f"Row {n}: instance '{ref}' appears twice.")
        try:
            values = [float(p) for p in probs]
        except (TypeError, ValueError) as exc:
            raise _field_error("predictions", f"Row {n}: probabilities must be numbers.") from exc
        if len(values) != len(label_order):
            raise _field_error(
                "predictions",
                f"Row {n}: {len(values)} probabilities for {len(label_order)} classes.",
            )
        if any(not math.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1) > 1e-3:
            raise _field_error(
                "predictions", f"Row {n}: probabilities must be non-negative and sum to 1."
            )
        seen.add(resolved[ref])
        ids.append(resolved[ref])
        matrix[i] = values
    return ParsedPredictions(instance_ids=ids, probabilities=matrix)


def _check_saliency_zip(path: Path) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
    except zipfile.BadZipFile as exc:
        raise _field_error("saliency", "The saliency maps must come as a zip file.") from exc
    bad = [n for n in names if not n.lower().endswith((".png", ".npy"))]
    if bad:
        raise _field_error("saliency", f"Only .png and .npy maps are accepted: {bad[0]}.")
    archive.check_archive(path, labels=(), limits=_archive_limits())


def predictions_import_start(
    *,
    project: Project,
    spec: ModelSpecInput,
    predictions_file: File,
    created_by: Any,
    saliency_file: File | None = None,
) -> tuple[ModelVersion, Job]:
    """Register a predictions-only model version from a CSV/JSON file of probabilities and,
    optionally, a zip of saliency maps named by instance id (``<id>.png`` or ``<id>.npy``).

    The file is validated completely before anything is saved; the rows are written by a
    worker."""
    label_order = _validate_preprocessing(project, spec)
    name = (getattr(predictions_file, "name", "") or "").lower()
    fmt = "json" if name.endswith(".json") else "csv"
    data = predictions_file.read()
    parsed = parse_predictions(project=project, data=data, fmt=fmt, label_order=label_order)
    saliency_path = None
    if saliency_file is not None:
        saliency_path = _save_upload(saliency_file, ".zip")
        try:
            _check_saliency_zip(saliency_path)
        except archive.ArchiveRejected as exc:
            saliency_path.unlink(missing_ok=True)
            raise _field_error("saliency", exc.message) from exc
        except ValidationError:
            saliency_path.unlink(missing_ok=True)
            raise
    data_path = _save_upload(ContentFile(data, name=name), f".{fmt}")
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        mv = ModelVersion.objects.create(
            project=project,
            version=_next_version(project),
            name=spec.name,
            kind=ModelKind.PREDICTIONS_ONLY,
            input_size=spec.input_size,
            mean=list(spec.mean),
            std=list(spec.std),
            label_order=label_order,
            notes=spec.notes,
            created_by=created_by,
        )
        job = job_create(
            project=project,
            kind=JobKind.IMPORT_PREDICTIONS,
            model_version=mv,
            created_by=created_by,
            total=len(parsed.instance_ids),
            params={
                "predictions_path": str(data_path),
                "format": fmt,
                "saliency_path": str(saliency_path) if saliency_path else None,
            },
        )
        _enqueue_on_commit("annotations.tasks.import_predictions", job.pk)
    return mv, job


def predictions_import_run(*, job: Job) -> None:
    mv = job.model_version
    assert mv is not None
    params = job.params
    job_start(job=job)
    parsed = parse_predictions(
        project=mv.project,
        data=Path(params["predictions_path"]).read_bytes(),
        fmt=params["format"],
        label_order=mv.label_order,
    )
    for start in range(0, len(parsed.instance_ids), 1000):
        ids = parsed.instance_ids[start : start + 1000]
        predictions_write(
            model_version=mv,
            instance_ids=ids,
            probabilities=parsed.probabilities[start : start + len(ids)],
            embeddings=None,
        )
        job_progress(job=job, done=start + len(ids))
    maps = 0
    if params.get("saliency_path"):
        maps = _import_saliency_maps(mv, Path(params["saliency_path"]))
    job_succeed(job=job, result={"predictions": len(parsed.instance_ids), "saliency_maps": maps})


def _import_saliency_maps(mv: ModelVersion, path: Path) -> int:
    predicted = dict(mv.predictions.values_list("instance_id", "label"))
    count = 0
    with zipfile.ZipFile(path) as zf:
        for name in sorted(zf.namelist()):
            stem = Path(name).stem
            if name.endswith("/") or not stem.isdigit() or int(stem) not in predicted:
                continue
            raw = zf.read(name)
            if name.lower().endswith(".npy"):
                array = np.load(io.BytesIO(raw), allow_pickle=False)
            else:
                array = np.asarray(Image.open(io.BytesIO(raw)).convert("L"), dtype=np.float32)
                array = array / 255.0
            buffer = io.BytesIO()
            np.savez_compressed(buffer, attribution=np.asarray(array, dtype=np.float16))
            iid = int(stem)
            try:
                with transaction.atomic():
                    exp = Explanation(
                        instance_id=iid, model_version=mv, method="imported", target=predicted[iid]
                    )
                    exp.raw.save(f"{mv.pk}-{iid}-imported.npz", ContentFile(buffer.getvalue()))
                count += 1
            except IntegrityError:
                continue  # already imported by an earlier run of this job
    return count
