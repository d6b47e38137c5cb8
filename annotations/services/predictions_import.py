"""Predictions-only model versions: probabilities (and saliency maps) from files."""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile, File
from django.db import IntegrityError, transaction
from PIL import Image

from annotations import archive
from annotations.models import (
    Explanation,
    Instance,
    Job,
    JobKind,
    ModelKind,
    ModelVersion,
    Project,
)
from annotations.services._errors import field_error
from annotations.services.datasets import archive_limits, save_upload
from annotations.services.jobs import (
    enqueue_on_commit,
    job_create,
    job_progress,
    job_start,
    job_succeed,
)
from annotations.services.model_versions import (
    ModelSpecInput,
    next_version,
    predictions_write,
    validate_preprocessing,
)
from explain_worker import rendering

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ParsedPredictions:
    instance_ids: list[int]
    probabilities: np.ndarray


PredictionsSource = bytes | str | os.PathLike[str] | IO[bytes]


def _prediction_rows(stream: IO[bytes], fmt: str, label_order: Sequence[str]) -> Iterator[tuple]:
    """(row number, instance reference, probabilities) from CSV or JSON, read as a stream."""
    if fmt == "json":
        try:
            for n, item in archive.iter_json_list(
                stream, field="predictions", what="the predictions file"
            ):
                yield _json_prediction(n, item, label_order)
        except archive.ArchiveRejected as exc:
            raise field_error(
                "predictions", f"{exc.message[:1].upper()}{exc.message[1:]}."
            ) from exc
        return
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    reader = csv.DictReader(text)
    try:
        header = reader.fieldnames or []
        ref_column = next((c for c in ("instance_id", "path", "content_hash") if c in header), None)
        if ref_column is None:
            raise field_error(
                "predictions", "The CSV needs an 'instance_id', 'path' or 'content_hash' column."
            )
        missing = [lbl for lbl in label_order if lbl not in header]
        if missing:
            raise field_error(
                "predictions", f"The CSV lacks a probability column for: {', '.join(missing)}."
            )
        for n, record in enumerate(reader, start=2):
            yield (n, record[ref_column], [record[lbl] for lbl in label_order])
    except UnicodeDecodeError as exc:
        raise field_error("predictions", "The CSV must be UTF-8 text.") from exc
    except csv.Error as exc:
        raise field_error(
            "predictions", f"The CSV is malformed near line {reader.line_num + 1} ({exc})."
        ) from exc
    finally:
        text.detach()  # the caller closes the stream


def _json_prediction(n: int, item: object, label_order: Sequence[str]) -> tuple:
    if not isinstance(item, dict) or "probabilities" not in item:
        raise field_error("predictions", f"Item {n} has no 'probabilities'.")
    ref = item.get("instance_id", item.get("path", item.get("content_hash")))
    probs = item["probabilities"]
    if isinstance(probs, dict):
        missing = [lbl for lbl in label_order if lbl not in probs]
        if missing:
            raise field_error(
                "predictions", f"Item {n} lacks probabilities for: {', '.join(missing)}."
            )
        probs = [probs[lbl] for lbl in label_order]
    return (n, ref, probs)


def _read_prediction_rows(
    project: Project, data: PredictionsSource, fmt: str, label_order: Sequence[str]
) -> list[tuple]:
    """The rows of a predictions file, read as they are parsed. Each row names a different
    instance of the project, so reading stops at one row more than the project has
    instances: a file of millions of rows costs no more memory than the project's size."""
    limit = Instance.objects.filter(project=project).count()
    if isinstance(data, bytes):
        source: IO[bytes] = io.BytesIO(data)
    elif isinstance(data, str | os.PathLike):
        source = open(data, "rb")  # noqa: SIM115 (closed below)
    else:
        source = data
    rows: list[tuple] = []
    try:
        for row in _prediction_rows(io.BufferedReader(_Unclosed(source)), fmt, label_order):
            rows.append(row)
            if len(rows) > limit:
                raise field_error(
                    "predictions",
                    f"The file has more rows than the project has instances ({limit}); each "
                    "row must name a different instance.",
                )
    finally:
        if source is not data:
            source.close()
    return rows


class _Unclosed(io.RawIOBase):
    """A read-only view of a binary stream that leaves it open when closed."""

    def __init__(self, source: IO[bytes]) -> None:
        super().__init__()
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._source.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


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
    *, project: Project, data: PredictionsSource, fmt: str, label_order: Sequence[str]
) -> ParsedPredictions:
    """Validate a predictions file completely; raises ValidationError naming the row.

    ``data`` is the file's bytes, its path or an open binary file; it is streamed."""
    rows = _read_prediction_rows(project, data, fmt, label_order)
    if not rows:
        raise field_error("predictions", "The file holds no predictions.")
    resolved = _resolve_instances(project, [ref for _, ref, _ in rows])
    ids: list[int] = []
    matrix = np.zeros((len(rows), len(label_order)), dtype=np.float64)
    seen: set[int] = set()
    for i, (n, ref, probs) in enumerate(rows):
        if ref not in resolved:
            raise field_error("predictions", f"Row {n}: no instance '{ref}' in this project.")
        if resolved[ref] in seen:
            raise field_error("predictions", f"Row {n}: instance '{ref}' appears twice.")
        try:
            values = [float(p) for p in probs]
        except (TypeError, ValueError) as exc:
            raise field_error("predictions", f"Row {n}: probabilities must be numbers.") from exc
        if len(values) != len(label_order):
            raise field_error(
                "predictions",
                f"Row {n}: {len(values)} probabilities for {len(label_order)} classes.",
            )
        if any(not math.isfinite(v) or v < 0 for v in values) or abs(sum(values) - 1) > 1e-3:
            raise field_error(
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
        raise field_error("saliency", "The saliency maps must come as a zip file.") from exc
    bad = [n for n in names if not n.lower().endswith((".png", ".npy"))]
    if bad:
        raise field_error("saliency", f"Only .png and .npy maps are accepted: {bad[0]}.")
    archive.check_archive(path, labels=(), limits=archive_limits())


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
    label_order = validate_preprocessing(project, spec)
    name = (getattr(predictions_file, "name", "") or "").lower()
    fmt = "json" if name.endswith(".json") else "csv"
    # Saved first (in chunks, capped at IMPORT_MAX_UPLOAD_BYTES), then streamed from disk.
    data_path = save_upload(predictions_file, f".{fmt}")
    saliency_path = None
    try:
        parsed = parse_predictions(
            project=project, data=data_path, fmt=fmt, label_order=label_order
        )
        if saliency_file is not None:
            saliency_path = save_upload(saliency_file, ".zip")
            try:
                _check_saliency_zip(saliency_path)
            except archive.ArchiveRejected as exc:
                raise field_error("saliency", exc.message) from exc
    except ValidationError:
        data_path.unlink(missing_ok=True)
        if saliency_path is not None:
            saliency_path.unlink(missing_ok=True)
        raise
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        mv = ModelVersion.objects.create(
            project=project,
            version=next_version(project),
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
        enqueue_on_commit("annotations.tasks.import_predictions", job.pk)
    return mv, job


def predictions_import_run(*, job: Job) -> None:
    mv = job.model_version
    assert mv is not None
    params = job.params
    job_start(job=job)
    parsed = parse_predictions(
        project=mv.project,
        data=Path(params["predictions_path"]),
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
            iid = int(stem)
            try:
                with transaction.atomic():
                    exp = Explanation(
                        instance_id=iid, model_version=mv, method="imported", target=predicted[iid]
                    )
                    exp.raw.save(
                        f"{mv.pk}-{iid}-imported.npz", ContentFile(rendering.encode_raw(array))
                    )
                count += 1
            except IntegrityError:
                continue  # already imported by an earlier run of this job
    return count
