"""Pages for experts: the review page (the inbox is part of the home page).

The review page is a shell: ``review.js`` drives it through the same REST API the experts'
clients use (``annotations/api/review_views.py``), so blind-first, leases, drafts and
idempotent submits are enforced in one place, the server.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse

from annotations import permissions as access
from annotations.limits import text_limits_for_pages
from annotations.models import (
    ErrorReason,
    FeatureVerdict,
    PredictionVerdict,
    RoundStatus,
)

# Single-key answers of the verdict phase. Letters only, none shared with another question
# or with the page's own keys (see review.js), so every answer is one key press.
PREDICTION_KEYS = {
    PredictionVerdict.CORRECT: "c",
    PredictionVerdict.INCORRECT: "i",
    PredictionVerdict.GROUND_TRUTH_WRONG: "g",
    PredictionVerdict.AMBIGUOUS: "a",
}
FEATURE_KEYS = {
    FeatureVerdict.RELEVANT: "r",
    FeatureVerdict.IRRELEVANT: "x",
    FeatureVerdict.INCOMPLETE: "o",
    FeatureVerdict.OVER_EMPHASISED: "e",
    FeatureVerdict.CANT_TELL: "k",
}


def _choices(enum, keys: dict) -> list[dict[str, str]]:
    return [{"value": v, "label": label, "key": keys[v]} for v, label in enum.choices]


@login_required
def review_page(request: HttpRequest, round_id: int) -> HttpResponse:
    """The round's review page for one of its experts. Non-members get 404; members who are
    not experts of this round get 403, as the task API answers (same access helper)."""
    review_round = access.access_expert_round_by_id(request.user, round_id)
    try:
        edit_url = reverse("review-edit", args=[0]).replace("/0/", "/{id}/")
    except NoReverseMatch:  # the edit page is not routed yet; its path is agreed
        edit_url = "/reviews/{id}/edit/"
    config = {
        "round": review_round.pk,
        "csrfToken": get_token(request),
        "inboxUrl": reverse("home"),
        "nextUrl": reverse("api-task-next", args=[review_round.pk]),
        "taskUrl": reverse("api-task-detail", args=[0]).replace("/0/", "/{id}/"),
        "progressUrl": reverse("api-round-progress", args=[review_round.pk]),
        # The expert's own submitted reviews of this round ("Previous"): the list shows a
        # scientist who is also an expert everyone's, hence the expert filter.
        "reviewsUrl": f"{reverse('api-reviews')}?round={review_round.pk}&expert={request.user.pk}",
        "reviewEditUrl": edit_url,
        "reviewPageUrl": request.path,
        "expert": request.user.pk,
        "overlap": review_round.overlap,
        # Free-text limits (annotations/limits.py): the page counts and refuses before the
        # server would.
        "limits": text_limits_for_pages(),
        "leaseSeconds": review_round.lease_seconds,
        "questions": review_round.questions,
        "predictionChoices": _choices(PredictionVerdict, PREDICTION_KEYS),
        "featureChoices": _choices(FeatureVerdict, FEATURE_KEYS),
        # Reasons answer with Shift + their position (1-6).
        "reasonChoices": [
            {"value": v, "label": label, "key": str(n)}
            for n, (v, label) in enumerate(ErrorReason.choices, start=1)
        ],
    }
    return render(
        request,
        "frontend/review.html",
        {
            "round": review_round,
            # Whoever opens the review page reviews in the round, so it is named as experts
            # see it (a neutral title in a blind-first round unless the scientist shows the
            # name): no role lookup needed, and a scientist reviewing blind is not primed.
            "round_title": review_round.title_for(as_expert=True),
            "project": review_round.project,
            "is_open": review_round.status == RoundStatus.OPEN,
            "config": config,
        },
    )
