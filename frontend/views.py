"""Server-rendered pages. They call the same selectors and access helpers as the API."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotations import permissions as access
from annotations import selectors


@login_required
def home(request: HttpRequest) -> HttpResponse:
    projects = access.projects_for_user(request.user).order_by("name")
    return render(request, "frontend/home.html", {"projects": projects})


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
