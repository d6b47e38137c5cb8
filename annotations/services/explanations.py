"""Explanations: validated requests for attribution maps, queued as jobs; the worker's writes.

A map is keyed by (instance, model version, method, target class). Every request is checked
completely before anything is queued, so bad input answers 400 and leaves no job behind.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from PIL import Image

from annotations import selectors
from annotations.models import (
    Explanation,
    Instance,
    Job,
    JobKind,
    JobStatus,
    ModelKind,
    ModelVersion,
    Prediction,
    Split,
)
from annotations.services._errors import field_error
from annotations.services.jobs import enqueue_on_commit, job_create
from explain_worker import methods, rendering

logger = logging.getLogger(__name__)

# Settings a caller may pass with a request, by name; everything else is refused.
PARAM_FIELDS = ("n_steps", "internal_batch_size", "layer", "window", "stride")


@dataclass(frozen=True)
class ExplainSpec:
    """A validated explanation request: what to compute, for which target."""

    method: str
    config: methods.AttributionConfig
    # A class name, or None for "the class the model predicts for each instance".
    target: str | None

    def job_params(self) -> dict[str, Any]:
        return {
            "method": self.method,
            # The constructor arguments, so the worker rebuilds exactly this config.
            "config": dataclasses.asdict(self.config),
            "target": self.target,
        }


IMPORTED = "imported"  # maps a team uploaded with a predictions-only version


def method_refusal(model_version: ModelVersion, method: str) -> str | None:
    """Why ``model_version`` cannot show maps of ``method`` (a canonical name, or
    ``"imported"``), or None when it can.

    - A predictions-only version has no model to run: only the maps imported with its
      predictions (``"imported"``), and only when there are some.
    - A TorchScript model is a compiled graph whose inner layers cannot be hooked, so
      Grad-CAM (which observes a layer's activations and gradients) cannot run on it.
    - Imported maps exist only for predictions-only versions.
    """
    if model_version.kind == ModelKind.PREDICTIONS_ONLY:
        if method != IMPORTED:
            return (
                "This model version holds imported predictions only; there is no model to "
                "compute maps with. Import its saliency maps with the predictions and choose "
                f"'{IMPORTED}', or choose no saliency."
            )
        if not Explanation.objects.filter(model_version=model_version, method=IMPORTED).exists():
            return (
                "No saliency maps were imported with this version's predictions; import them "
                "or choose no saliency."
            )
        return None
    if method == IMPORTED:
        return "Only predictions-only versions have imported maps; choose a method to compute."
    if model_version.kind == ModelKind.TORCHSCRIPT and method == methods.GRADCAM:
        return (
            "Grad-CAM needs to observe a convolutional layer, and a TorchScript model's layers "
            "cannot be observed; choose saliency, integrated_gradients or occlusion."
        )
    if method == methods.GRADCAM and not model_version.layer_names:
        return "This model has no convolutional layer for Grad-CAM; choose another method."
    return None


def available_methods(model_version: ModelVersion) -> list[str]:
    """The saliency methods ``model_version`` can show, best default first: what the
    new-round form and the pages offer (Grad-CAM first where it works: coarse but the
    easiest for an expert to read)."""
    order = [methods.GRADCAM, methods.INTEGRATED_GRADIENTS, methods.SALIENCY, methods.OCCLUSION]
    return [m for m in [IMPORTED, *order] if method_refusal(model_version, m) is None]


def saliency_failure(
    *, model_version: ModelVersion, instance_id: int, split: str, method: str
) -> str | None:
    """Why the default-settings map of ``method`` for this instance is missing, when the
    newest explanation job that covers the instance with those settings failed; None while
    one is queued or running (or none ever covered it). Only read when the map is missing,
    so the experts' hot path pays for it only then."""
    recent = (
        Job.objects.filter(model_version_id=model_version.pk, kind=JobKind.EXPLAIN)
        .filter(params__method=method)
        .order_by("-created_at", "-id")
        .values("status", "error", "params")[:50]
    )
    for job in recent:
        params = job["params"] or {}
        if params.get("target") is not None:
            continue  # another target class ("why P and not Q") than the prediction
        try:
            config = methods.AttributionConfig(**(params.get("config") or {"method": method}))
        except (methods.AttributionConfigError, TypeError):
            continue
        if selectors.explanation_settings_key(model_version, config) != "":
            continue  # other settings make another map than the one rounds show
        ids = params.get("instance_ids")
        if ids is not None and instance_id not in ids:
            continue
        if params.get("split") and params["split"] != split:
            continue
        if job["status"] == JobStatus.FAILED:
            return job["error"] or "The explanation job failed."
        return None
    return None


def explain_spec(
    *,
    model_version: ModelVersion,
    method: str,
    target: str | None = None,
    params: dict[str, Any] | None = None,
) -> ExplainSpec:
    """Validate method, target and settings against the model version.

    Raises ValidationError naming the field: ``model_version`` (no model to explain),
    ``method``, ``target`` (not in the label set), ``layer`` (no such layer) or the setting.
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(PARAM_FIELDS))
    if unknown:
        raise field_error(unknown[0], f"Unknown setting; use {', '.join(PARAM_FIELDS)}.")
    try:
        canonical = methods.canonical_method(method)
    except methods.AttributionConfigError as exc:
        raise field_error("method", exc.message) from exc
    refusal = method_refusal(model_version, canonical)
    if refusal:
        raise field_error("method", refusal)
    try:
        config = methods.AttributionConfig(method=canonical, **params)
    except methods.AttributionConfigError as exc:
        raise field_error(exc.field, exc.message) from exc
    except TypeError as exc:  # a setting of the wrong type
        raise field_error("params", str(exc)) from exc
    if canonical == "gradcam":
        layer = config.layer or model_version.default_layer
        if layer not in model_version.layer_names:
            tail = ", ".join(model_version.layer_names[-6:])
            raise field_error(
                "layer", f"No layer '{layer}' with feature maps in this model; e.g. {tail}."
            )
        config = methods.AttributionConfig(method=canonical, **(params | {"layer": layer}))
    if target is not None and target not in model_version.label_order:
        raise field_error(
            "target",
            f"'{target}' is not a class of this model; use one of "
            f"{', '.join(model_version.label_order)}.",
        )
    return ExplainSpec(method=canonical, config=config, target=target)


def _unfinished_job(model_version: ModelVersion, params: dict[str, Any]) -> Job | None:
    for job in Job.objects.filter(
        model_version=model_version,
        kind=JobKind.EXPLAIN,
        status__in=[JobStatus.QUEUED, JobStatus.RUNNING],
    ).order_by("-created_at")[:50]:
        if job.params == params:
            return job
    return None


def explanation_request(
    *,
    model_version: ModelVersion,
    instance: Instance,
    spec: ExplainSpec,
    created_by: Any,
) -> tuple[Explanation | None, Job | None]:
    """One instance on demand. Returns (the cached explanation, None) when it exists, else
    (None, the job computing it); asking again while it runs returns the same job."""
    if instance.project_id != model_version.project_id:
        raise field_error("instance", "This instance belongs to another project.")
    target = spec.target
    if target is None:
        target = (
            Prediction.objects.filter(instance=instance, model_version=model_version)
            .values_list("label", flat=True)
            .first()
        )
    if target is not None:
        cached = Explanation.objects.filter(
            instance=instance,
            model_version=model_version,
            method=spec.method,
            target=target,
            settings_key=selectors.explanation_settings_key(model_version, spec.config),
        ).first()
        if cached is not None:
            return cached, None
    params = spec.job_params() | {"instance_ids": [instance.pk], "split": None}
    with transaction.atomic():
        job = _unfinished_job(model_version, params)
        if job is None:
            job = job_create(
                project=model_version.project,
                kind=JobKind.EXPLAIN,
                model_version=model_version,
                created_by=created_by,
                params=params,
                total=1,
            )
            enqueue_on_commit("explain_worker.tasks.compute_explanations", job.pk)
    return None, job


def explanations_start(
    *,
    model_version: ModelVersion,
    spec: ExplainSpec,
    created_by: Any,
    split: str | None = None,
    instance_ids: Collection[int] | None = None,
    enqueue: bool = True,
) -> Job:
    """Queue attributions for many instances: all of the project's, one split's, or a list.
    With ``enqueue=False`` the caller runs the job itself (the CLI's ``--in-process``)."""
    if split is not None and split not in Split.values:
        raise field_error("split", f"Unknown split '{split}'; use {', '.join(Split.values)}.")
    if instance_ids is not None:
        ids = sorted(set(instance_ids))
        found = set(
            Instance.objects.filter(pk__in=ids, project_id=model_version.project_id).values_list(
                "pk", flat=True
            )
        )
        foreign = [i for i in ids if i not in found]
        if foreign:
            raise field_error(
                "instance_ids",
                f"Not instances of this project: {', '.join(map(str, foreign[:10]))}.",
            )
        instance_ids = ids
    params = spec.job_params() | {
        "instance_ids": list(instance_ids) if instance_ids is not None else None,
        "split": split,
    }
    scope = selectors.explanation_scope(model_version=model_version, params=params)
    job = job_create(
        project=model_version.project,
        kind=JobKind.EXPLAIN,
        model_version=model_version,
        created_by=created_by,
        params=params,
        total=scope.count(),
    )
    if enqueue:
        enqueue_on_commit("explain_worker.tasks.compute_explanations", job.pk)
    return job


def _raw_name(
    mv: ModelVersion, method: str, target: str, instance_id: int, settings_key: str = ""
) -> str:
    """The storage name of a map: deterministic, so a batch redone after a crash overwrites
    its own file, but unguessable and free of the target class. A name that carried the
    predicted label (``.../gradcam/bedroom/42.npz``) told anyone who could probe names what
    the model predicted for an instance before an expert's blind judgement. Keyed with
    ``SECRET_KEY`` (HMAC-SHA256): without the key no name can be derived."""
    key = f"{mv.pk}/{method}/{target}/{instance_id}/{settings_key}".encode()
    token = hmac.new(settings.SECRET_KEY.encode(), key, hashlib.sha256).hexdigest()[:40]
    return f"explanations/{mv.project_id}/{mv.pk}/{token}.npz"


def explanations_write(
    *,
    model_version: ModelVersion,
    method: str,
    params: dict[str, Any],
    signed: bool,
    items: Sequence[tuple[int, str, bytes]],
    settings_key: str = "",
) -> int:
    """Store a batch of raw maps, given as (instance id, target class, encoded map).

    Paths are deterministic, so a batch redone after a crash overwrites its own files, and
    rows are unique per key, so it adds no row twice. Returns the number of rows inserted.
    """
    rows = []
    for instance_id, target, raw in items:
        name = _raw_name(model_version, method, target, instance_id, settings_key)
        if default_storage.exists(name):
            default_storage.delete(name)
        default_storage.save(name, ContentFile(raw))
        exp = Explanation(
            instance_id=instance_id,
            model_version=model_version,
            method=method,
            target=target,
            params=params,
            settings_key=settings_key,
            signed=signed,
        )
        exp.raw.name = name
        rows.append(exp)
    before = Explanation.objects.filter(model_version=model_version, method=method).count()
    Explanation.objects.bulk_create(rows, ignore_conflicts=True)
    return Explanation.objects.filter(model_version=model_version, method=method).count() - before


def explanation_rendering(*, explanation: Explanation, kind: str) -> str:
    """The storage name of the overlay (``kind="overlay"``) or thumbnail, rendered from the
    raw map on first request and kept for the next. A rendering drawn by an older rendering
    version (``rendering.RENDERING_VERSION``, in its file name) is drawn again and its old
    file deleted."""
    field = explanation.overlay if kind == "overlay" else explanation.thumbnail
    if field and rendering.is_current_rendering(field.name):
        return field.name
    stale = field.name if field else ""
    with explanation.raw.open("rb") as fh:
        attribution_map = rendering.decode_raw(fh.read())
    with explanation.instance.image.open("rb") as fh:
        image = Image.open(fh)
        image.load()
    image = image.convert("RGB")
    if kind == "overlay":
        data = rendering.render_overlay(image, attribution_map, signed=explanation.signed)
    else:
        data = rendering.render_thumbnail(image, attribution_map, signed=explanation.signed)
    name = explanation.raw.name.rsplit(".", 1)[0] + "." + rendering.rendering_suffix(kind)
    if default_storage.exists(name):
        default_storage.delete(name)
    field.name = default_storage.save(name, ContentFile(data))
    explanation.save(update_fields=[kind])
    if stale and stale != field.name and default_storage.exists(stale):
        default_storage.delete(stale)
    return field.name


def evidence_alignment(
    *, explanation: Explanation, regions: Sequence[dict[str, Any]], width: int, height: int
) -> dict[str, Any] | None:
    """The Shared Interest metrics of an expert's regions (image pixels of a ``width`` x
    ``height`` image) against the explanation's raw map (see ``explain_worker.alignment``
    for the definitions), as a plain dict; None without regions.

    Reads the raw map from storage; a missing or unreadable file gives None (logged), so a
    task page never fails because of a lost map.
    """
    from explain_worker import alignment

    if not regions:
        return None
    try:
        with explanation.raw.open("rb") as fh:
            attribution_map = rendering.decode_raw(fh.read())
        result = alignment.evidence_alignment(attribution_map, regions, image_size=(width, height))
    except Exception as exc:  # a truncated or foreign file raises whatever its reader does
        logger.warning("No alignment for explanation %s: %s", explanation.pk, exc)
        return None
    return result.as_dict() if result is not None else None
