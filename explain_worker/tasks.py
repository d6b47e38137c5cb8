"""Celery tasks of the compute side: the only module of ``explain_worker`` that touches the
database. Each task takes a job id, loads rows, hands arrays to the Django-free compute
modules and writes plain results back through ``annotations.services``."""

from __future__ import annotations

import logging
from functools import cache

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.files.storage import default_storage
from PIL import Image

from annotations import selectors, services
from annotations.models import Job, ModelVersion
from explain_worker import model_loading, prediction

logger = logging.getLogger(__name__)

# One per worker process: a model version is loaded once and reused by every batch.
_MODEL_CACHE = model_loading.ModelCache(capacity=2)


@cache
def _device() -> str:
    model_loading.configure_torch_threads(settings.TORCH_THREADS)
    return str(model_loading.pick_device(settings.TORCH_DEVICE))


def _load_images(names: list[str]) -> list[Image.Image]:
    images = []
    for name in names:
        with default_storage.open(name, "rb") as fh:
            image = Image.open(fh)
            image.load()
        images.append(image.convert("RGB"))
    return images


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
    model = _MODEL_CACHE.get(mv.pk, services.model_spec(mv), _device())
    work = pending[: batch_size * max_batches]
    for start in range(0, len(work), batch_size):
        batch = work[start : start + batch_size]
        tensor = model_loading.preprocess(
            _load_images([name for _, name in batch]),
            input_size=mv.input_size,
            mean=mv.mean,
            std=mv.std,
        )
        out = prediction.predict_batch(model, tensor.to(_device()))
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


@shared_task(name="explain_worker.tasks.compute_predictions", bind=True)
def compute_predictions(self, job_id: int) -> None:
    job = Job.objects.select_related("model_version__project").get(pk=job_id)
    if job.is_finished:
        return
    services.job_start(job=job, total=selectors.instance_count(project=job.project))
    try:
        more = predictions_compute_chunk(job=job, max_batches=settings.PREDICTION_BATCHES_PER_TASK)
    except SoftTimeLimitExceeded:
        # Rows written so far stay; the next message picks up what is missing.
        more = True
    except Exception as exc:
        logger.exception("prediction job %s failed", job_id)
        services.job_fail(job=job, error=f"{type(exc).__name__}: {exc}")
        return
    if more:
        # Re-queue instead of looping: a long job yields the worker between chunks and a
        # crash costs one chunk at most.
        self.apply_async(args=[job_id])
    else:
        services.job_progress(job=job, done=job.model_version.predictions.count())
        services.job_succeed(job=job)
