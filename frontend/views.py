"""Shell pages: the home page (an expert's inbox and the project list)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotations import permissions as access
from annotations import selectors


@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The inbox (rounds the user reviews in, open ones first) above the project list that
    every role uses to reach its pages."""
    projects = access.projects_for_user(request.user).order_by("name")
    inbox = selectors.expert_inbox(user=request.user)
    return render(
        request,
        "frontend/home.html",
        {
            "projects": projects,
            "inbox": inbox,
            "open_count": sum(1 for e in inbox if e["is_open"]),
        },
    )
