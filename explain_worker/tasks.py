"""Celery tasks of the compute side: the only module of ``explain_worker`` that touches the
database. Each task takes a job id, loads rows, hands arrays to the Django-free compute
modules (model_loading, prediction, attribution, rendering) and writes plain results back
through ``annotations.services``.

Both tasks work in chunks: they compute a few batches of what is still missing, then
re-queue themselves. Remaining work is selected by state, so a repeated message or a job
finished by another worker after a crash ends with exact counts and no duplicate rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cache

import numpy as np
import torch
from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files.storage import default_storage
from PIL import Image

from annotations import selectors, services
from annotations.models import Job, ModelVersion
from annotations.services import explanations as explanation_services
from annotations.services.jobs import job_fail_unexpected
from explain_worker import attribution, model_loading, prediction, rendering

logger = logging.getLogger(__name__)

# One per worker process: a model version is loaded once and reused by every batch.
_MODEL_CACHE = model_loading.ModelCache(capacity=2)


@cache
def _device() -> str:
    model_loading.configure_torch_threads(settings.TORCH_THREADS)
    return str(model_loading.pick_device(settings.TORCH_DEVICE))


def _model(mv: ModelVersion) -> torch.nn.Module:
    return _MODEL_CACHE.get(mv.pk, services.model_spec(mv), _device())


def _load_images(names: list[str]) -> list[Image.Image]:
    images = []
    for name in names:
        with default_storage.open(name, "rb") as fh:
            image = Image.open(fh)
            image.load()
        images.append(image.convert("RGB"))
    return images


def _inputs(mv: ModelVersion, image_names: list[str]) -> torch.Tensor:
    batch = model_loading.preprocess(
        _load_images(image_names), input_size=mv.input_size, mean=mv.mean, std=mv.std
    )
    return batch.to(_device())


def predictions_compute_chunk(*, job: Job, max_batches: int) -> bool:
    """Compute up to ``max_batches`` batches of missing predictions. Returns True when
    instances are still missing afterwards."""
    mv: ModelVersion = job.model_version  # type: ignore[assignment]
    batch_size = settings.PREDICTION_BATCH_SIZE
    pending = list(
        selectors.instances_missing_predictions(model_version=mv).values_list("id", "image")[
            : batch_size * max_batches + 1
        ]
    )
    model = _model(mv)
    work = pending[: batch_size * max_batches]
    for start in range(0, len(work), batch_size):
        batch = work[start : start + batch_size]
        out = prediction.predict_batch(model, _inputs(mv, [name for _, name in batch]))
        services.predictions_write(
            model_version=mv,
            instance_ids=[iid for iid, _ in batch],
            probabilities=out.probabilities,
            embeddings=out.embeddings,
        )
        # Progress is counted from the rows, not incremented, so it stays exact when a
        # crashed batch is redone by another worker.
        services.job_progress(job=job, done=mv.predictions.count())
    return len(pending) > len(work)


def explanations_compute_chunk(*, job: Job, max_batches: int) -> bool:
    """Compute up to ``max_batches`` batches of missing attribution maps for the job's
    scope. Returns True when maps are still missing afterwards."""
    mv: ModelVersion = job.model_version  # type: ignore[assignment]
    params = job.params
    config = attribution.AttributionConfig(**params["config"])
    batch_size = settings.EXPLAIN_BATCH_SIZE
    missing = selectors.instances_missing_explanations(model_version=mv, params=params)
    pending = list(
        missing.values_list("id", "image", "predicted_label")[: batch_size * max_batches + 1]
    )
    model = _model(mv)
    labels = list(mv.label_order)
    work = pending[: batch_size * max_batches]
    for start in range(0, len(work), batch_size):
        batch = work[start : start + batch_size]
        inputs = _inputs(mv, [name for _, name, _ in batch])
        if params.get("target") is not None:
            targets = torch.full((len(batch),), labels.index(params["target"]), dtype=torch.long)
        elif all(predicted is not None for _, _, predicted in batch):
            targets = torch.tensor([labels.index(p) for _, _, p in batch], dtype=torch.long)
        else:  # predictions not computed yet: the same model gives the same argmax
            targets = attribution.predicted_targets(model, inputs).cpu()
        maps = attribution.attribute_batch(model, inputs, targets.to(inputs.device), config)
        explanation_services.explanations_write(
            model_version=mv,
            method=config.method,
            params=config.params(),
            settings_key=selectors.explanation_settings_key(mv, config),
            signed=config.signed,
            items=[
                (iid, labels[int(t)], rendering.encode_raw(np.asarray(m)))
                for (iid, _, _), t, m in zip(batch, targets.tolist(), maps, strict=True)
            ],
        )
        services.job_progress(job=job, done=job.total - missing.count())
    return len(pending) > len(work)


def _run_chunked(
    task: Task, job_id: int, chunk: Callable[..., bool], batches_per_task: int
) -> None:
    job = Job.objects.select_related("model_version__project").filter(pk=job_id).first()
    if job is None or job.is_finished:
        return  # a duplicate message for a job already done (or deleted)
    services.job_start(job=job, worker=task.request.hostname or "")
    try:
        more = chunk(job=job, max_batches=batches_per_task)
    except SoftTimeLimitExceeded:
        more = True  # rows written so far stay; the next message picks up what is missing
    except Exception as exc:
        # The traceback goes to the log; the job (read by every member, and by experts as
        # the reason a map is missing) says what went wrong without SQL or server paths.
        job_fail_unexpected(job=job, exc=exc)
        return
    if more:
        # Re-queue instead of looping: a long job yields the worker between chunks (so an
        # on-demand request is not stuck behind it) and a crash costs one chunk at most.
        task.apply_async(args=[job_id])
    else:
        services.job_progress(job=job, done=job.total)
        services.job_succeed(job=job)


@shared_task(name="explain_worker.tasks.compute_predictions", bind=True)
def compute_predictions(self: Task, job_id: int) -> None:
    _run_chunked(self, job_id, predictions_compute_chunk, settings.PREDICTION_BATCHES_PER_TASK)


@shared_task(name="explain_worker.tasks.compute_explanations", bind=True)
def compute_explanations(self: Task, job_id: int) -> None:
    _run_chunked(self, job_id, explanations_compute_chunk, settings.EXPLAIN_BATCHES_PER_TASK)


def run_job_here(job_id: int) -> None:
    """Run a prediction or explanation job to the end in this process (CLI ``--in-process``)."""
    job = Job.objects.get(pk=job_id)
    chunk = explanations_compute_chunk if job.kind == "explain" else predictions_compute_chunk
    services.job_start(job=job)
    while chunk(job=job, max_batches=1):
        pass
    services.job_progress(job=job, done=job.total)
    services.job_succeed(job=job)
