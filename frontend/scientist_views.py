"""Pages for scientists: project setup, round creation and progress, the confusion-matrix
heatmap and the instance page.

Every page reads through ``annotations.selectors`` / ``annotations.analysis`` and writes
through ``annotations.services``, after the same ``access_*_by_id`` check the API makes, so a
page can never show or do more than the API allows the same user. Forms POST to the page's
own URL with an ``action``; a service's ValidationError is shown next to the field it names
(``frontend.forms.add_service_errors``) and the page answers 400 with what was typed kept.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from annotations import analysis, sampling, selectors, services
from annotations import permissions as access
from annotations.models import JobStatus, Question, RoundStatus, Split
from annotations.services import comments as comment_services
from annotations.services import reviews as review_services
from frontend import forms as f

CELL_PAGE_SIZE = 48

# --- Project setup ------------------------------------------------------------------------


def _project_forms(request: HttpRequest, project: Any, action: str | None) -> dict[str, Any]:
    """The setup forms; the one named by ``action`` is bound to the request."""

    def data(name: str) -> tuple[Any, Any]:
        return (request.POST, request.FILES) if action == name else (None, None)

    return {
        "import_form": f.DatasetImportForm(*data("import"), prefix="import"),
        "register_form": f.ModelRegisterForm(*data("register"), prefix="register"),
        "predictions_form": f.PredictionsImportForm(*data("predictions"), prefix="predictions"),
        "compute_form": f.PredictionsComputeForm(
            data("compute")[0], project=project, prefix="compute"
        ),
    }


def _spec(form: f.ModelSpecForm, kind: str) -> services.ModelSpecInput:
    v = form.spec_values()
    return services.ModelSpecInput(
        kind=kind, architecture=form.cleaned_data.get("architecture", ""), **v
    )


def _run_setup_action(request: HttpRequest, project: Any, action: str, forms: dict) -> bool:
    """Validate the bound form and call its service (the same one the API calls). True when
    the service accepted it; otherwise the errors are on the form and nothing was saved."""
    user = request.user
    try:
        if action == "import":
            form = forms["import_form"]
            if not form.is_valid():
                return False
            d = form.cleaned_data
            job = services.dataset_import_start(
                project=project,
                archive_file=d["archive"],
                manifest_file=d.get("manifest"),
                options=services.ImportOptions(
                    dataset_name=d["name"], default_split=d["default_split"], on_error=d["on_error"]
                ),
                created_by=user,
            )
            messages.success(request, f"Import of {d['name']!r} queued as job {job.pk}.")
        elif action == "register":
            form = forms["register_form"]
            if not form.is_valid():
                return False
            mv, job = services.model_version_register(
                project=project,
                spec=_spec(form, form.cleaned_data["kind"]),
                weights_file=form.cleaned_data["weights"],
                created_by=user,
            )
            messages.success(
                request, f"Registered v{mv.version} ({mv.name}); predictions are job {job.pk}."
            )
        elif action == "predictions":
            form = forms["predictions_form"]
            if not form.is_valid():
                return False
            mv, job = services.predictions_import_start(
                project=project,
                spec=_spec(form, "predictions_only"),
                predictions_file=form.cleaned_data["predictions"],
                saliency_file=form.cleaned_data.get("saliency"),
                created_by=user,
            )
            messages.success(
                request, f"Importing predictions as v{mv.version} ({mv.name}), job {job.pk}."
            )
        elif action == "compute":
            form = forms["compute_form"]
            if not form.is_valid():
                return False
            mv = form.cleaned_data["model_version"]
            job = services.predictions_compute_start(model_version=mv, created_by=user)
            messages.success(request, f"Computing the predictions of v{mv.version}: job {job.pk}.")
        else:
            return False
    except ValidationError as exc:
        f.add_service_errors(form, exc)
        return False
    return True


@login_required
def project_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """Data, model versions, rounds and jobs of a project; scientists also get the forms that
    import data, register models and start predictions. Details (data, models) are for roles
    that read them; experts and viewers see the rounds and jobs (aggregates) only."""
    project = access.access_project_by_id(request.user, project_id)
    roles = access.roles_in_project(request.user, project.pk)
    manage = bool(roles & access.MANAGE)
    action = request.POST.get("action") if request.method == "POST" else None
    if request.method == "POST":
        if not manage:
            raise PermissionDenied("Setting up a project needs the scientist role.")
        forms = _project_forms(request, project, action)
        if _run_setup_action(request, project, action or "", forms):
            return redirect(reverse("project", args=[project.pk]) + "#jobs")
        status = 400
    else:
        forms = _project_forms(request, project, None)
        status = 200
    details = bool(roles & access.READ_DETAILS)
    models = []
    if details:
        coverage = analysis.review_coverage(project=project)
        versions = list(selectors.model_version_list(project=project))
        summaries = selectors.model_version_summaries(model_versions=versions)
        for mv in versions:
            models.append(
                {
                    "mv": mv,
                    "summary": summaries[mv.pk],
                    "coverage": coverage.get(mv.pk),
                }
            )
    jobs = list(selectors.job_list(project=project)[:20])
    for job in jobs:
        eta = job.eta
        job.eta_text = "\u2013" if eta is None else _duration(eta.total_seconds())
    context = {
        "project": project,
        "roles": sorted(roles),
        "details": details,
        "manage": manage,
        "action": action,
        "splits": selectors.dataset_split_counts(project=project) if details else [],
        "models": models,
        "rounds": analysis.rounds_with_progress(project=project, user=request.user),
        "jobs": jobs,
        "jobs_active": any(j.status in (JobStatus.QUEUED, JobStatus.RUNNING) for j in jobs),
        **(forms if manage else {}),
    }
    return render(request, "frontend/project.html", context, status=status)


# --- Round creation -----------------------------------------------------------------------


def _attach_preview(parts: Any, part_rows: list[int], plan: sampling.SamplingPlan) -> None:
    # Parts keep their order through validate_strategy, so the k-th count is the k-th
    # non-empty row's.
    for k, (name, count) in enumerate(plan.counts.items()):
        parts.forms[part_rows[k]].preview = {"count": count, "new": plan.new_counts[name]}


@login_required
def round_new(request: HttpRequest, project_id: int) -> HttpResponse:
    """Set up a round: its settings, the sampling parts, a preview of what each part yields
    (``action=preview``; the page's script also previews live through the API) and Create,
    which calls ``reviews.round_create`` like the API and opens the new round's page."""
    project = access.access_project_by_id(request.user, project_id, allowed=access.MANAGE)
    sampling_errors: list[str] = []
    preview_total: int | None = None
    status = 200
    if request.method == "POST":
        form = f.RoundForm(request.POST, project=project)
        parts = f.SamplingPartFormSet(request.POST, prefix="part")
        status = 400
        if form.is_valid() and parts.is_valid():
            part_rows = [i for i, pf in enumerate(parts.forms) if pf.to_part() is not None]
            strategy = form.strategy([parts.forms[i].to_part() for i in part_rows])
            mv = form.cleaned_data["model_version"]
            try:
                if request.POST.get("action") == "preview":
                    try:
                        plan = sampling.plan_sample(model_version=mv, strategy=strategy)
                    except sampling.SamplingError as exc:
                        raise services.field_error(exc.field, exc.message) from exc
                    _attach_preview(parts, part_rows, plan)
                    preview_total = plan.total
                    status = 200
                else:
                    d = form.cleaned_data
                    review_round = review_services.round_create(
                        model_version=mv,
                        name=d["name"],
                        sampling_strategy=strategy,
                        created_by=request.user,
                        experts=list(d["experts"]),
                        overlap=d["overlap"],
                        due_at=d.get("due_at"),
                        blind_first=d["blind_first"],
                        explanation_method=d.get("explanation_method") or "",
                        questions=d.get("questions") or [],
                    )
                    messages.success(
                        request,
                        f"Round {review_round.name!r} started with "
                        f"{review_round.sampling_counts.get('total', 0)} instances.",
                    )
                    return redirect("round", review_round.pk)
            except ValidationError as exc:
                sampling_errors = f.add_round_errors(
                    exc, form=form, parts=parts, part_rows=part_rows
                )
    else:
        n = project.rounds.count()
        form = f.RoundForm(project=project, initial={"name": f"Round {n + 1}"})
        form.initial["experts"] = list(form.fields["experts"].queryset)
        parts = f.SamplingPartFormSet(prefix="part", initial=f.DEFAULT_PARTS)
    context = {
        "project": project,
        "form": form,
        "parts": parts,
        "part_fields": f.PART_FIELDS,
        "sampling_errors": sampling_errors,
        "preview_total": preview_total,
        "has_models": project.model_versions.exists(),
    }
    return render(request, "frontend/round_new.html", context, status=status)


# --- Round progress -----------------------------------------------------------------------


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not known yet"
    minutes = round(seconds / 60)
    if minutes < 1:
        return "under a minute"
    if minutes < 60:
        return f"about {minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"about {hours} h {minutes} min"
    return f"about {round(hours / 24)} days"


@login_required
def round_page(request: HttpRequest, round_id: int) -> HttpResponse:
    """A round's settings, sampling counts and progress. Experts see the overall figures and
    their own row only, as the progress API shows them; scientists may close the round."""
    review_round = access.access_round_by_id(request.user, round_id)
    if request.method == "POST":
        review_round = access.access_round_by_id(request.user, round_id, allowed=access.MANAGE)
        if request.POST.get("action") == "close" and review_round.status == RoundStatus.OPEN:
            review_services.round_close(review_round=review_round)
            messages.success(request, f"Round {review_round.name!r} is closed.")
        return redirect("round", review_round.pk)
    roles = access.roles_in_project(request.user, review_round.project_id)
    progress = analysis.round_progress_for_user(review_round=review_round, user=request.user)
    counts = review_round.sampling_counts or {}
    sampling_rows = [
        {"name": name, "count": n, "new": (counts.get("new") or {}).get(name, 0)}
        for name, n in (counts.get("parts") or {}).items()
    ]
    context = {
        "round": review_round,
        "project": review_round.project,
        "progress": progress,
        "eta": _duration(progress["eta_seconds"]),
        "sampling_rows": sampling_rows,
        "questions": [Question(q).label for q in review_round.questions if q in Question.values],
        "manage": bool(roles & access.MANAGE),
        "expert_only": access.is_expert_only(roles),
        "is_round_expert": review_round.experts.filter(pk=request.user.pk).exists(),
    }
    return render(request, "frontend/round.html", context)


# --- Confusion matrix ---------------------------------------------------------------------

SPLIT_OPTIONS = [(Split.TEST, "Test"), (Split.TRAIN, "Train"), (Split.DEPLOYMENT, "Deployment")]
_WHITE = (255, 255, 255)
# Errors in red, correct predictions in blue: the diagonal must never be read as an error.
_ERROR_RGB = (165, 29, 22)
_CORRECT_RGB = (22, 82, 140)


def _luminance(rgb: tuple[int, int, int]) -> float:
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (channel(c) for c in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def heat_colours(count: int, maximum: int, *, diagonal: bool) -> tuple[str, str]:
    """Background and text colour of a cell: white for 0, darker with the count relative to
    the largest cell of its kind (errors and correct ones on separate scales, else the
    diagonal would wash every error out). The text colour is whichever of black and white
    contrasts more (at least 4.5:1 on any of these backgrounds)."""
    if count <= 0 or maximum <= 0:
        return "#ffffff", "#1b1f24"
    # A floor, so that a single error is visibly not zero.
    t = 0.12 + 0.88 * min(count / maximum, 1.0)
    end = _CORRECT_RGB if diagonal else _ERROR_RGB
    rgb = tuple(round(w + (e - w) * t) for w, e in zip(_WHITE, end, strict=True))
    lum = _luminance(rgb)  # type: ignore[arg-type]
    white_contrast = 1.05 / (lum + 0.05)
    black_contrast = (lum + 0.05) / 0.05
    fg = "#ffffff" if white_contrast > black_contrast else "#000000"
    return "#{:02x}{:02x}{:02x}".format(*rgb), fg


def _percent(share: float) -> str:
    if 0 < share < 0.005:
        return "<1"
    return str(round(share * 100))


@login_required
def matrix_page(request: HttpRequest, model_version_id: int) -> HttpResponse:
    """The confusion matrix of a model version as a heatmap (rows: true label, columns:
    predicted), and the instances of the cell picked with ``?true=&pred=`` as thumbnails
    with their saliency, most confident first, ``CELL_PAGE_SIZE`` per page."""
    mv = access.access_model_version_by_id(request.user, model_version_id)
    split_param = request.GET.get("split") or Split.TEST
    if split_param not in {s for s, _ in SPLIT_OPTIONS} | {"all"}:
        split_param = Split.TEST
    split = None if split_param == "all" else split_param
    matrix = analysis.confusion_matrix(model_version=mv, split=split)
    max_error, max_correct = matrix.max_error_count, matrix.max_correct_count
    true_label, pred_label = request.GET.get("true"), request.GET.get("pred")
    if true_label not in matrix.labels or pred_label not in matrix.labels:
        true_label = pred_label = None
    rows = []
    for row in matrix.rows():
        cells = []
        for cell in row.cells:
            bg, fg = heat_colours(
                cell.count, max_correct if cell.diagonal else max_error, diagonal=cell.diagonal
            )
            cells.append(
                {
                    "cell": cell,
                    "bg": bg,
                    "fg": fg,
                    # Rounded for reading; a cell under 0.5 % still shows "<1".
                    "percent": _percent(cell.share),
                    "current": (cell.true_label, cell.predicted_label) == (true_label, pred_label),
                }
            )
        rows.append({"row": row, "cells": cells})
    page = None
    if true_label is not None:
        qs = analysis.confusion_cell_instances(
            model_version=mv, true_label=true_label, predicted_label=pred_label, split=split
        )
        page = Paginator(qs, CELL_PAGE_SIZE).get_page(request.GET.get("page"))
    context = {
        "mv": mv,
        "project": mv.project,
        "matrix": matrix,
        "rows": rows,
        "column_totals": matrix.column_totals(),
        "split_param": split_param,
        "split_options": [*SPLIT_OPTIONS, ("all", "All splits")],
        "true_label": true_label,
        "pred_label": pred_label,
        "page": page,
    }
    return render(request, "frontend/matrix.html", context)


# --- Instance page ------------------------------------------------------------------------

# Metadata can be large (the demo stores every object's box); the page shows its head.
METADATA_SHOWN = 4000
REGION_COLOURS = ["#d7191c", "#2c7bb6", "#1a9641", "#7b3294", "#e66101", "#008837"]


def _svg_number(value: float) -> str:
    # Formatted here, not by the template, whose localisation could write "1,5" into SVG.
    return f"{float(value):g}"


def _regions(reviews: list[Any]) -> list[dict[str, Any]]:
    """SVG shapes of the experts' expected evidence, one colour per review."""
    shapes = []
    for k, review in enumerate(reviews):
        colour = REGION_COLOURS[k % len(REGION_COLOURS)]
        review.colour = colour
        for region in review.evidence or []:
            points = region.get("points") or []
            if region.get("type") == "box" and len(points) == 2:
                (x0, y0), (x1, y1) = points
                shapes.append(
                    {
                        "type": "box",
                        "x": _svg_number(min(x0, x1)),
                        "y": _svg_number(min(y0, y1)),
                        "w": _svg_number(abs(x1 - x0)),
                        "h": _svg_number(abs(y1 - y0)),
                        "colour": colour,
                        "expert": review.expert.username,
                    }
                )
            elif points:
                shapes.append(
                    {
                        "type": "polygon",
                        "points": " ".join(f"{_svg_number(x)},{_svg_number(y)}" for x, y in points),
                        "colour": colour,
                        "expert": review.expert.username,
                    }
                )
    return shapes


@login_required
def instance_page(request: HttpRequest, instance_id: int) -> HttpResponse:
    """One instance: the image with the experts' regions drawn over it, the ground truth,
    every model version's prediction, every submitted review, the disagreements, and the
    comment thread (posting calls ``comments.comment_add``, like the API)."""
    instance = access.access_instance_by_id(request.user, instance_id)
    status = 200
    if request.method == "POST":
        form = f.CommentForm(request.POST)
        if form.is_valid():
            try:
                comment_services.comment_add(
                    instance=instance, author=request.user, body=form.cleaned_data["body"]
                )
            except ValidationError as exc:
                f.add_service_errors(form, exc)
            else:
                return redirect(reverse("instance", args=[instance.pk]) + "#comments")
        status = 400
    else:
        form = f.CommentForm()
    predictions = analysis.instance_predictions(instance=instance)
    reviews = analysis.instance_reviews(instance=instance)
    context = {
        "instance": instance,
        "project": instance.dataset.project,
        "predictions": predictions,
        "reviews": reviews,
        "regions": _regions(reviews),
        "disagreements": analysis.instance_disagreements(
            instance=instance, reviews=reviews, predictions=predictions
        ),
        "comments": list(analysis.instance_comments(instance=instance)),
        "metadata_json": json.dumps(instance.metadata, indent=1, sort_keys=True)[:METADATA_SHOWN]
        if instance.metadata
        else "",
        "form": form,
    }
    return render(request, "frontend/instance.html", context, status=status)
