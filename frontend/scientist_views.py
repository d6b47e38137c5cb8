"""Pages for scientists: project setup, round creation and progress, the confusion-matrix
heatmap and the instance page."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotations import permissions as access
from annotations import selectors


@login_required
def project_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = access.access_project_by_id(request.user, project_id)
    roles = access.roles_in_project(request.user, project.pk)
    details = bool(roles & access.READ_DETAILS)
    models = []
    if details:
        for mv in selectors.model_version_list(project=project):
            models.append({"mv": mv, "summary": selectors.model_version_summary(model_version=mv)})
    context = {
        "project": project,
        "roles": sorted(roles),
        "details": details,
        "splits": selectors.dataset_split_counts(project=project) if details else [],
        "models": models,
        "jobs": selectors.job_list(project=project)[:20],
    }
    return render(request, "frontend/project.html", context)


@login_required
def round_new(request: HttpRequest, project_id: int) -> HttpResponse:
    project = access.access_project_by_id(request.user, project_id, allowed=access.MANAGE)
    return render(request, "frontend/round_new.html", {"project": project})


@login_required
def round_page(request: HttpRequest, round_id: int) -> HttpResponse:
    review_round = access.access_round_by_id(request.user, round_id)
    return render(
        request, "frontend/round.html", {"round": review_round, "project": review_round.project}
    )


@login_required
def matrix_page(request: HttpRequest, model_version_id: int) -> HttpResponse:
    mv = access.access_model_version_by_id(request.user, model_version_id)
    return render(request, "frontend/matrix.html", {"mv": mv, "project": mv.project})


@login_required
def instance_page(request: HttpRequest, instance_id: int) -> HttpResponse:
    instance = access.access_instance_by_id(request.user, instance_id)
    return render(
        request, "frontend/instance.html", {"instance": instance, "project": instance.project}
    )
