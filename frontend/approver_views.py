"""Pages for approvers: the readiness page (a scaffold the readiness issue fills)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotations import analysis, selectors
from annotations import permissions as access


@login_required
def readiness_page(request: HttpRequest, project_id: int) -> HttpResponse:
    """Per model version, what readiness will be judged on: the evidence that exists already
    (accuracy by split, how many sampled instances the experts have reviewed) and the places
    the readiness issue fills (criteria, sign-offs). Approvers and scientists only (403 for
    other members, 404 for everyone else), since it shows per-version details."""
    project = access.access_project_by_id(request.user, project_id, allowed=access.READ_DETAILS)
    coverage = analysis.review_coverage(project=project)
    model_versions = list(selectors.model_version_list(project=project).order_by("-version"))
    summaries = selectors.model_version_summaries(model_versions=model_versions)
    versions = []
    for mv in model_versions:
        cov = coverage.get(mv.pk, {"sampled": 0, "reviewed": 0})
        versions.append(
            {
                "mv": mv,
                "summary": summaries[mv.pk],
                "sampled": cov["sampled"],
                "reviewed": cov["reviewed"],
                "coverage_percent": round(100 * cov["reviewed"] / cov["sampled"])
                if cov["sampled"]
                else None,
            }
        )
    return render(request, "frontend/readiness.html", {"project": project, "versions": versions})
