"""Pages for approvers: the readiness page (a scaffold the readiness issue fills)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotations import permissions as access


@login_required
def readiness_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = access.access_project_by_id(request.user, project_id)
    return render(request, "frontend/readiness.html", {"project": project})
