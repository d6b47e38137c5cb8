"""Shell pages: the home page (an expert's inbox and the project list)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotations import permissions as access


@login_required
def home(request: HttpRequest) -> HttpResponse:
    projects = access.projects_for_user(request.user).order_by("name")
    return render(request, "frontend/home.html", {"projects": projects})
