"""Shell pages: the home page (an expert's inbox and the project list) and the error pages."""

from __future__ import annotations

import logging

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseServerError, JsonResponse
from django.shortcuts import render
from django.template import loader

from annotations import permissions as access
from annotations import selectors
from annotations.models import Instance, ModelVersion, Project, Review, ReviewRound

logger = logging.getLogger(__name__)


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


# --- Error pages (feedback_service/urls.py: handler403, handler404, handler500) ------------
# Pages answer in the app's layout with a way back; API paths keep answering JSON like the
# rest of the API. None of them shows an exception's internals: that is what DEBUG=1 is for.

# URL keywords that name an object of one project, and how to find that project.
_PROJECT_OF = {
    "project_id": lambda pk: pk,
    "round_id": lambda pk: ReviewRound.objects.filter(pk=pk).values_list("project_id").first(),
    "model_version_id": lambda pk: (
        ModelVersion.objects.filter(pk=pk).values_list("project_id").first()
    ),
    "instance_id": lambda pk: Instance.objects.filter(pk=pk).values_list("project_id").first(),
    "review_id": lambda pk: Review.objects.filter(pk=pk).values_list("round__project_id").first(),
}


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith("/api/")


def _project_of_request(request: HttpRequest) -> Project | None:
    """The project the failed URL belongs to, when the user is one of its members (so a
    link back to it tells nothing a non-member may not know); else None."""
    match = getattr(request, "resolver_match", None)
    user = getattr(request, "user", None)
    if match is None or user is None or not user.is_authenticated:
        return None
    for name, project_of in _PROJECT_OF.items():
        if name in match.kwargs:
            found = project_of(match.kwargs[name])
            project_id = found[0] if isinstance(found, tuple) else found
            if project_id is not None and access.roles_in_project(user, project_id):
                return Project.objects.filter(pk=project_id).only("id", "name").first()
            return None
    return None


def _message(exception: Exception | None) -> str:
    # The access helpers raise with a sentence for the user; the URL resolver's 404 carries a
    # dict of the patterns tried, which must never be shown.
    args = getattr(exception, "args", ())
    return args[0] if len(args) == 1 and isinstance(args[0], str) else ""


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        return JsonResponse({"detail": _message(exception) or "Not found."}, status=404)
    context = {
        "request_path": request.path,
        "detail": _message(exception),
        "project": _project_of_request(request),
    }
    return render(request, "404.html", context, status=404)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if _is_api(request):
        detail = _message(exception) or "You do not have permission to perform this action."
        return JsonResponse({"detail": detail}, status=403)
    context = {"detail": _message(exception), "project": _project_of_request(request)}
    return render(request, "403.html", context, status=403)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: a form sent without a valid token (expired page, other site)."""
    if _is_api(request):
        return JsonResponse({"detail": f"CSRF Failed: {reason}"}, status=403)
    return render(request, "403.html", {"csrf": True}, status=403)


def server_error(request: HttpRequest) -> HttpResponse:
    """Rendered without the request's context processors and without any query: the
    database may be what failed. If even that fails, a plain page."""
    if _is_api(request):
        return JsonResponse({"detail": "Server error."}, status=500)
    try:
        body = loader.get_template("500.html").render({})
    except Exception:
        logger.exception("The 500 page could not be rendered")
        body = "<!doctype html><title>Server error</title><h1>Server error (500)</h1>"
        body += '<p><a href="/">Back to the home page</a></p>'
    return HttpResponseServerError(body)
