"""Pages for experts: the review page (the inbox is part of the home page)."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from annotations import permissions as access


@login_required
def review_page(request: HttpRequest, round_id: int) -> HttpResponse:
    review_round = access.access_round_by_id(request.user, round_id)
    return render(
        request, "frontend/review.html", {"round": review_round, "project": review_round.project}
    )
