"""Pages for scientists: project setup, round creation and progress, the confusion-matrix
heatmap and the instance page.

Every page reads through ``annotations.selectors`` / ``annotations.analysis`` and writes
through ``annotations.services``, after the same ``access_*_by_id`` check the API makes, so a
page can never show or do more than the API allows the same user. Forms POST to the page's
own URL with an ``action``; a service's ValidationError is shown next to the field it names
(``frontend.forms.add_service_errors``) and the page answers 400 with what was typed kept.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse

from annotations import analysis, review_table, sampling, selectors, services
from annotations import permissions as access
from annotations.models import (
    Job,
    JobKind,
    JobStatus,
    PredictionVerdict,
    Question,
    RoundStatus,
    Split,
)
from annotations.services import comments as comment_services
from annotations.services import jobs as job_services
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
        if action == "retry":
            _retry_job(request, project.pk)
            return redirect(reverse("project", args=[project.pk]) + "#jobs")
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
        job.retryable = _retryable(job)
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
                        description=d.get("description") or "",
                        show_name_to_experts=d.get("show_name_to_experts", False),
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
        "method_choices": {str(k): v for k, v in form.method_choices_by_version.items()},
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


def _retryable(job: Job) -> bool:
    return job.status == JobStatus.FAILED and job.kind in job_services.RETRYABLE_KINDS


def _retry_job(request: HttpRequest, project_id: int) -> None:
    """The pages' Retry button: ``job_retry`` on the posted ``job`` of this project, as the
    API's ``POST /api/jobs/{id}/retry/`` (scientists; a job of another project is 404)."""
    try:
        job_id = int(request.POST.get("job", ""))
    except ValueError:
        raise Http404("No job with that id.") from None
    job = access.access_job_by_id(request.user, job_id, allowed=access.MANAGE)
    if job.project_id != project_id:
        raise Http404("No job with that id.")
    try:
        job_services.job_retry(job=job, user=request.user)
    except review_services.Conflict as exc:
        messages.error(request, f"Job {job.pk} was not retried: {exc.message}")
    else:
        messages.success(request, f"Job {job.pk} is queued again; it computes what is missing.")


def _sampling_rows(review_round: Any) -> list[dict[str, Any]]:
    """The sampling parts in the new-round form's words ("Lowest confidence · How many: 50"),
    with what each chose and added; the part's own name too when a scientist gave one."""
    counts = review_round.sampling_counts or {}
    parts = {p.get("name"): p for p in (review_round.sampling or {}).get("parts") or []}
    kinds = dict(f.PART_KIND_CHOICES)
    fields = f.SamplingPartForm.base_fields
    rows = []
    for index, (name, n) in enumerate((counts.get("parts") or {}).items()):
        part = parts.get(name)
        if part is None:  # a strategy stored before parts were named
            label, settings = name, []
        else:
            label = kinds.get(part["kind"], part["kind"])
            if name not in (part["kind"], f"{part['kind']}#{index}"):
                label = f"{name} ({label})"
            settings = []
            for key, value in part.items():
                if key in ("kind", "name") or value in (None, "", []):
                    continue
                field = fields.get(key)
                if key == "by":
                    value = dict(field.choices).get(value, value) if field else value
                elif isinstance(value, list):
                    shown = ", ".join(str(v) for v in value[:10])
                    value = shown + (f" and {len(value) - 10} more" if len(value) > 10 else "")
                settings.append(f"{field.label if field else key.capitalize()}: {value}")
        rows.append(
            {
                "name": label,
                "settings": settings,
                "count": n,
                "new": (counts.get("new") or {}).get(name, 0),
            }
        )
    return rows


def _round_failed_jobs(review_round: Any) -> list[Job]:
    """Failed jobs computing this round's saliency maps (the round's model version and
    method; they are queued when the round is created, or by anyone computing the same
    maps), newest first."""
    if not review_round.explanation_method:
        return []
    return list(
        Job.objects.filter(
            kind=JobKind.EXPLAIN,
            status=JobStatus.FAILED,
            model_version_id=review_round.model_version_id,
            params__method=review_round.explanation_method,
        ).order_by("-created_at")[:5]
    )


# Columns whose header sorts the table: sort key, and the direction of a first click.
SORTABLE_COLUMNS = {
    "expert": "expert",
    "severity": "-severity",
    "time": "-time",
    "submitted": "-submitted",
}


def _sort_headers(filters: review_table.ReviewFilters) -> dict[str, dict[str, str]]:
    """Per sortable column: the link that sorts by it (the other direction when it is the
    current sort) and its ``aria-sort``."""
    headers = {}
    for key, first in SORTABLE_COLUMNS.items():
        current = filters.sort.removeprefix("-") == key
        descending = filters.sort.startswith("-")
        # A second click on the current column flips its direction.
        target = (key if descending else f"-{key}") if current else first
        query = dataclasses.replace(filters, sort=target).querystring()
        headers[key] = {
            "url": f"?{query}#reviews",
            "aria_sort": ("descending" if descending else "ascending") if current else "none",
        }
    return headers


def _round_reviews_context(
    request: HttpRequest, review_round: Any, experts: list[str]
) -> dict[str, Any]:
    """The round's submitted reviews as the table shows them: filters from the query
    (a bad value is said next to its field and the list shown unfiltered), 50 a page, the
    page's saliency and alignment, each row's link to the instance page. ``experts``: the
    usernames the expert filter offers (the progress rows have them: no query)."""
    filter_errors: dict[str, list[str]] = {}
    try:
        filters = review_table.parse_review_filters(request.GET, review_round)
    except ValidationError as exc:
        filter_errors = exc.message_dict
        filters = review_table.ReviewFilters()
    qs = review_table.round_reviews(review_round, filters)
    page = Paginator(qs, review_table.PAGE_SIZE).get_page(request.GET.get("page"))
    rows = list(page.object_list)
    review_table.attach_saliency(rows, review_round)
    for review in rows:
        review.page_url = review_table.instance_page_url(review, filters)
    labels = list(review_round.project.labels)
    return {
        "sort_headers": _sort_headers(filters),
        "reviews_page": page,
        "review_rows": rows,
        "filters": filters,
        "filter_errors": filter_errors,
        "filter_query": filters.querystring(),
        # "Clear filters" keeps the sort.
        "clear_query": review_table.ReviewFilters(sort=filters.sort).querystring(),
        "filter_options": {
            "verdicts": PredictionVerdict.choices,
            "acceptable": [
                ("yes", "Acceptable"),
                ("no", "Not acceptable"),
                ("unanswered", "Not asked or not an error"),
            ],
            "experts": experts,
            "labels": labels,
            "sorts": list(review_table.SORT_LABELS.items()),
        },
    }


@login_required
def round_page(request: HttpRequest, round_id: int) -> HttpResponse:
    """A round's settings, sampling counts and progress. Experts see the overall figures and
    their own row only, as the progress API shows them; scientists may close the round and
    retry its failed saliency jobs. Scientists and approvers also get the submitted reviews
    (``annotations.review_table``), filtered, sorted and paginated as the API gives them."""
    review_round = access.access_round_by_id(request.user, round_id)
    if request.method == "POST":
        review_round = access.access_round_by_id(request.user, round_id, allowed=access.MANAGE)
        action = request.POST.get("action")
        if action == "close" and review_round.status == RoundStatus.OPEN:
            review_services.round_close(review_round=review_round)
            messages.success(request, f"Round {review_round.name!r} is closed.")
        elif action == "retry":
            _retry_job(request, review_round.project_id)
            return redirect(reverse("round", args=[review_round.pk]) + "#failed-jobs")
        return redirect("round", review_round.pk)
    roles = access.roles_in_project(request.user, review_round.project_id)
    progress = analysis.round_progress_for_user(review_round=review_round, user=request.user)
    details = bool(roles & access.READ_DETAILS)
    expert_only = access.is_expert_only(roles)
    context = {
        "round": review_round,
        "project": review_round.project,
        "progress": progress,
        "eta": _duration(progress["eta_seconds"]),
        "sampling_rows": [] if expert_only else _sampling_rows(review_round),
        "questions": [Question(q).label for q in review_round.questions if q in Question.values],
        "manage": bool(roles & access.MANAGE),
        "details": details,
        "expert_only": expert_only,
        # A blind-first round's name is hidden from its experts (ReviewRound.title_for).
        "round_title": review_round.title_for(as_expert=expert_only),
        # The description is hidden with the name (it would say what the name says).
        "round_description": review_round.description
        if review_round.title_for(as_expert=expert_only) == review_round.name
        else "",
        "is_round_expert": review_round.experts.filter(pk=request.user.pk).exists(),
        "failed_jobs": [] if expert_only else _round_failed_jobs(review_round),
    }
    status = 200
    if details:  # every expert's judgement: scientists and approvers only, as the API
        experts = sorted(r["username"] for r in progress["experts"] if r.get("username"))
        context.update(_round_reviews_context(request, review_round, experts))
        status = 400 if context["filter_errors"] else 200
    return render(request, "frontend/round.html", context, status=status)


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


HEAT_LEVELS = 10  # shades per scale; frontend/static/frontend/scientist.css has a class each


def heat_level(count: int, maximum: int) -> int:
    """0 for an empty cell, else 1..HEAT_LEVELS with the count relative to the largest cell
    of its kind (errors and correct ones on separate scales, else the diagonal would wash
    every error out); a single error is level 1, visibly not zero."""
    if count <= 0 or maximum <= 0:
        return 0
    return 1 + int((HEAT_LEVELS - 1) * min(count / maximum, 1.0) + 0.5)  # half up


def heat_class(count: int, maximum: int, *, diagonal: bool) -> str:
    """The cell's CSS class: ``heat-0``, ``heat-e1``..``heat-e10`` (errors, red) or
    ``heat-c1``..``heat-c10`` (correct, blue). Classes rather than style attributes, so the
    Content-Security-Policy needs no inline styles."""
    level = heat_level(count, maximum)
    return "heat-0" if level == 0 else f"heat-{'c' if diagonal else 'e'}{level}"


def heat_colours(level: int, *, diagonal: bool) -> tuple[str, str]:
    """Background and text colour of a heat level (what scientist.css holds for each class):
    white for 0, then from light to the scale's full colour. The text colour is whichever of
    black and white contrasts more (at least 4.5:1 on any of these backgrounds)."""
    if level <= 0:
        return "#ffffff", "#1b1f24"
    t = 0.12 + 0.88 * (level - 1) / (HEAT_LEVELS - 1)
    end = _CORRECT_RGB if diagonal else _ERROR_RGB
    rgb = tuple(round(w + (e - w) * t) for w, e in zip(_WHITE, end, strict=True))
    lum = _luminance(rgb)  # type: ignore[arg-type]
    white_contrast = 1.05 / (lum + 0.05)
    black_contrast = (lum + 0.05) / 0.05
    fg = "#ffffff" if white_contrast > black_contrast else "#000000"
    return "#{:02x}{:02x}{:02x}".format(*rgb), fg


def heat_css() -> str:
    """The CSS rules of every heat class, as kept in scientist.css (a test compares them)."""
    lines = []
    for kind, diagonal in (("e", False), ("c", True)):
        for level in range(1, HEAT_LEVELS + 1):
            bg, fg = heat_colours(level, diagonal=diagonal)
            cls = f".heat-{kind}{level}"
            lines.append(f"{cls} {{ background: {bg}; color: {fg}; }} {cls} a {{ color: {fg}; }}")
    return "\n".join(lines)


def _percent(share: float) -> str:
    if 0 < share < 0.005:
        return "<1"
    return str(round(share * 100))


# Imported here rather than at the top so this section can change without touching the
# module's head while other work edits it; safe to hoist.
from urllib.parse import urlencode  # noqa: E402

from annotations import instance_navigation  # noqa: E402
from annotations.models import Explanation  # noqa: E402
from annotations.services import explanations as explanation_services  # noqa: E402
from explain_worker import methods as attribution_methods  # noqa: E402
from explain_worker import rendering  # noqa: E402

METHOD_LABELS = {
    attribution_methods.GRADCAM: "Grad-CAM",
    attribution_methods.INTEGRATED_GRADIENTS: "Integrated Gradients",
    attribution_methods.SALIENCY: "Saliency (input gradient)",
    attribution_methods.OCCLUSION: "Occlusion",
    explanation_services.IMPORTED: "Imported maps",
}


def computable_methods(mv: Any) -> list[dict[str, str]]:
    """The methods the pages offer to compute for ``mv``: those it can compute
    (``explanations.available_methods``; imported maps are not computed), best first."""
    return [
        {"value": m, "label": METHOD_LABELS.get(m, m)}
        for m in explanation_services.available_methods(mv)
        if m in attribution_methods.METHODS
    ]


def _shown_maps(request: HttpRequest, mv: Any) -> tuple[str | None, str | None]:
    """Which maps the cell's thumbnails show: ``?method=`` (else any) and ``?target=`` (a
    class of the model; else each instance's predicted class)."""
    method = request.GET.get("method") or None
    if method is not None and method not in METHOD_LABELS:
        method = None
    target = request.GET.get("target") or None
    if target is not None and target not in mv.label_order:
        target = None
    return method, target


def _posted_target(request: HttpRequest) -> str | None:
    """The class a compute form asks to explain: None for the prediction, else the chosen
    other class ("why P and not Q")."""
    if request.POST.get("explain") == "other":
        return request.POST.get("target") or None
    return None


def _explain_cell(request: HttpRequest, mv: Any, instance_ids: list[int]) -> str | None:
    """The cell page's form without JS: queue the maps of the cell's instances through the
    same service as ``POST /api/model-versions/{id}/explain/``. The error text, or None."""
    access.access_model_version_by_id(request.user, mv.pk, allowed=access.MANAGE)
    target = _posted_target(request)
    try:
        spec = explanation_services.explain_spec(
            model_version=mv, method=request.POST.get("method", ""), target=target
        )
        job = explanation_services.explanations_start(
            model_version=mv, spec=spec, created_by=request.user, instance_ids=instance_ids
        )
    except ValidationError as exc:
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    messages.success(
        request,
        f"Computing {METHOD_LABELS.get(spec.method, spec.method)} maps of "
        f"{job.total} instance{'s' if job.total != 1 else ''} as job {job.pk}; "
        "reload this page when it has finished.",
    )
    return None


@login_required
def matrix_page(request: HttpRequest, model_version_id: int) -> HttpResponse:
    """The confusion matrix of a model version as a heatmap (rows: true label, columns:
    predicted), and the instances of the cell picked with ``?true=&pred=`` as thumbnails
    with their saliency, most confident first, ``CELL_PAGE_SIZE`` per page.

    Scientists can compute the maps of the cell's instances (``action=explain``; the page's
    script does it through the API and fills the thumbnails in); ``?method=&target=`` choose
    which maps the thumbnails show."""
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
            heat = heat_class(
                cell.count, max_correct if cell.diagonal else max_error, diagonal=cell.diagonal
            )
            cells.append(
                {
                    "cell": cell,
                    "heat": heat,
                    # Rounded for reading; a cell under 0.5 % still shows "<1".
                    "percent": _percent(cell.share),
                    "current": (cell.true_label, cell.predicted_label) == (true_label, pred_label),
                }
            )
        rows.append({"row": row, "cells": cells})
    page = None
    manage = False
    cell_ids: list[int] = []
    method, target = _shown_maps(request, mv)
    explain_error = None
    status = 200
    if true_label is not None:
        qs = analysis.confusion_cell_instances(
            model_version=mv,
            true_label=true_label,
            predicted_label=pred_label,
            split=split,
            method=method,
            target=target,
        )
        page = Paginator(qs, CELL_PAGE_SIZE).get_page(request.GET.get("page"))
        # The compute form is for scientists (the bulk API's role) and sends the whole
        # cell's ids: two queries, on a cell's page only.
        manage = bool(access.roles_in_project(request.user, mv.project_id) & access.MANAGE)
        if manage:
            cell_ids = list(qs.values_list("instance_id", flat=True))
        if request.method == "POST" and request.POST.get("action") == "explain":
            explain_error = _explain_cell(request, mv, cell_ids)
            if explain_error is None:
                return redirect(request.get_full_path())
            status = 400
    elif request.method == "POST":
        return redirect(request.get_full_path())  # no cell picked: nothing to compute
    cell_query = ""
    if true_label is not None:
        cell_query = urlencode(
            {
                "from": "cell",
                "model_version": mv.pk,
                "true": true_label,
                "predicted": pred_label,
                "split": split_param,
            }
        )
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
        "cell_query": cell_query,
        "cell_ids": cell_ids,
        "shown_method": method,
        "shown_method_label": METHOD_LABELS.get(method or "", ""),
        "shown_target": target,
        "manage": manage,
        "methods": computable_methods(mv) if manage else [],
        "labels": list(mv.label_order),
        "explain_error": explain_error,
    }
    return render(request, "frontend/matrix.html", context, status=status)


# --- Instance page ------------------------------------------------------------------------

# Metadata can be large (the demo stores every object's box); the page shows its head.
METADATA_SHOWN = 4000
# One colour per expert, away from the overlay's reds, oranges and yellows.
REGION_COLOURS = ["#1f6fd1", "#12a150", "#9b3fd6", "#00a3b5", "#d6338a", "#5c6b00"]


def _svg_number(value: float) -> str:
    # Formatted here, not by the template, whose localisation could write "1,5" into SVG.
    return f"{float(value):g}"


def _regions(reviews: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """SVG shapes of the experts' expected evidence, one colour per expert (the same in every
    round), and the legend: each expert who drew a region with their colour."""
    colours: dict[int, str] = {}
    legend = []
    shapes = []
    for review in reviews:
        if review.expert_id not in colours:
            colours[review.expert_id] = REGION_COLOURS[len(colours) % len(REGION_COLOURS)]
        colour = colours[review.expert_id]
        review.colour = colour
        if review.evidence and all(e["expert"] != review.expert.username for e in legend):
            legend.append({"expert": review.expert.username, "colour": colour})
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
    return shapes, legend


def _as_id(value: str) -> int | None:
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    return int(value) if value.isascii() and value.isdecimal() else None


def _map_label(exp: Explanation) -> str:
    return (
        f"v{exp.model_version.version} · {METHOD_LABELS.get(exp.method, exp.method)} · "
        f"for {exp.target}"
    )


def _pick_overlay(
    request: HttpRequest, maps: list[Explanation], predictions: list[Any], mv_hint: int | None
) -> Explanation | None:
    """The map drawn over the image: ``?overlay=<explanation id>`` when it is one of this
    instance's, else the prediction's map of the version the page was opened from (a matrix
    cell's), else of the newest version that has one."""
    wanted = request.GET.get("overlay", "")
    for exp in maps:
        if str(exp.pk) == wanted:
            return exp
    predicted = {p.model_version_id: p.label for p in predictions}
    of_prediction = [e for e in maps if predicted.get(e.model_version_id) == e.target]
    for exp in of_prediction:
        if exp.model_version_id == mv_hint:
            return exp
    return of_prediction[0] if of_prediction else (maps[0] if maps else None)


def _review_alignments(
    instance: Any, reviews: list[Any], maps: list[Explanation], predictions: list[Any]
) -> None:
    """Set ``alignment`` (the Shared Interest scores, or None) and ``alignment_map`` on each
    review with regions: against the map its round showed (the round's method, the
    prediction's class), else the version's first map of the prediction. One map file read
    per review with regions."""
    predicted = {p.model_version_id: p.label for p in predictions}
    for review in reviews:
        review.alignment = review.alignment_map = None
        if not review.evidence:
            continue
        mv_id = review.round.model_version_id
        candidates = [
            e for e in maps if e.model_version_id == mv_id and e.target == predicted.get(mv_id)
        ]
        shown = [e for e in candidates if e.method == review.round.explanation_method]
        exp = (shown or candidates or [None])[0]
        if exp is None:
            continue
        review.alignment = explanation_services.evidence_alignment(
            explanation=exp, regions=review.evidence, width=instance.width, height=instance.height
        )
        review.alignment_map = _map_label(exp)


def _explain_instance(request: HttpRequest, instance: Any, versions: dict[int, Any]) -> str:
    """The instance page's form without JS: one map on demand through the same service as
    ``POST /api/model-versions/{id}/explanations/``. Returns where to go next."""
    mv_id = request.POST.get("model_version", "")
    mv = versions.get(_as_id(mv_id) or 0)
    if mv is None:
        messages.error(request, "model_version: no prediction of that version for this instance.")
        return request.get_full_path()
    try:
        spec = explanation_services.explain_spec(
            model_version=mv,
            method=request.POST.get("method", ""),
            target=_posted_target(request),
        )
        cached, job = explanation_services.explanation_request(
            model_version=mv, instance=instance, spec=spec, created_by=request.user
        )
    except ValidationError as exc:
        messages.error(
            request, "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        )
        return request.get_full_path()
    params = request.GET.copy()
    if cached is not None:
        params["overlay"] = str(cached.pk)
    else:
        messages.success(
            request, f"Computing the map as job {job.pk}; reload this page when it has finished."
        )
    return reverse("instance", args=[instance.pk]) + "?" + params.urlencode()


@login_required
def instance_page(request: HttpRequest, instance_id: int) -> HttpResponse:
    """One instance: the image with a saliency overlay (toggle, opacity) and the experts'
    regions drawn over it, the ground truth, every model version's prediction, every
    submitted review with its tags and alignment scores, the disagreements, and the comment
    thread (posting calls ``comments.comment_add``, like the API). Scientists and approvers
    compute maps here ("why P and not Q" included). Opened from a list (``?from=cell`` or
    ``?from=round``, see ``annotations.instance_navigation``) it links to the previous and
    next instance of that list."""
    instance = access.access_instance_by_id(request.user, instance_id)
    predictions = analysis.instance_predictions(instance=instance)
    versions = {p.model_version_id: p.model_version for p in predictions}
    status = 200
    form = f.CommentForm()
    if request.method == "POST" and request.POST.get("action") == "explain":
        return redirect(_explain_instance(request, instance, versions))
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
    reviews = analysis.instance_reviews(instance=instance)
    maps = analysis.instance_explanations(instance=instance)
    listed = instance_navigation.instance_list(request.user, request.GET)
    nav = instance_navigation.neighbours_in(listed, instance.pk)
    mv_hint = _as_id(request.GET.get("model_version", ""))
    overlay = _pick_overlay(request, maps, predictions, mv_hint)
    regions, region_legend = _regions(reviews)
    _review_alignments(instance, reviews, maps, predictions)
    compute_versions = [
        {
            "mv": p.model_version,
            "predicted": p.label,
            "methods": computable_methods(p.model_version),
        }
        for p in reversed(predictions)
    ]
    compute_versions = [v for v in compute_versions if v["methods"]]
    labels = list(compute_versions[0]["mv"].label_order) if compute_versions else []
    # "Why P and not Q": Q is the ground truth when the model got it wrong, else the class the
    # model ranked next (asking "why kitchen and not kitchen" explains nothing).
    contrast = instance.label
    if compute_versions and contrast == compute_versions[0]["predicted"]:
        first = next(p for p in predictions if p.model_version_id == compute_versions[0]["mv"].pk)
        ranked = sorted(zip(labels, first.probabilities, strict=False), key=lambda lp: -lp[1])
        contrast = next((label for label, _ in ranked if label != first.label), contrast)
    context = {
        "instance": instance,
        "project": instance.dataset.project,
        "predictions": predictions,
        "reviews": reviews,
        "regions": regions,
        "region_legend": region_legend,
        "maps": [{"exp": e, "label": _map_label(e)} for e in maps],
        "overlay": overlay,
        "overlay_label": _map_label(overlay) if overlay else "",
        "legend_height": rendering.LEGEND_HEIGHT,
        "compute_versions": compute_versions,
        "labels": labels,
        "contrast": contrast,
        "nav": nav,
        "nav_list": listed if nav.position else None,
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
