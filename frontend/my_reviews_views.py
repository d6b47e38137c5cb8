"""An expert's own reviews: the list of their reviews in open rounds ("My reviews") and a form
page that edits one submitted review.

The edit goes through ``annotations.services.reviews.review_edit``, the service behind
``PATCH /api/reviews/{id}/``: it keeps the previous state as a version, refuses a closed
round (409), refuses a changed expectation in a blind-first round once the model's view was
revealed (409 ``phase``) and names the field of any invalid answer (400). The page sends only
the fields of the questions the round asks, and in a blind-first round only the verdict's.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme

from annotations import limits
from annotations import permissions as access
from annotations.models import (
    ErrorReason,
    FeatureVerdict,
    PredictionVerdict,
    Question,
    Review,
    RoundStatus,
)
from annotations.services import reviews as review_services
from frontend.forms import add_service_errors

PAGE_SIZE = 50
BLANK = [("", "---------")]


def my_reviews_of_open_rounds(*, user: Any) -> QuerySet[Review]:
    """``user``'s submitted reviews in open rounds, newest first, with what the list shows."""
    return (
        Review.objects.filter(
            expert=user, submitted_at__isnull=False, round__status=RoundStatus.OPEN
        )
        .select_related("round__project")
        .order_by("-submitted_at", "-id")
    )


def _round_titles(request: HttpRequest, reviews: list[Review]) -> dict[int, str]:
    """What each round is called for this user: experts of a blind-first round see a neutral
    title unless the scientist showed the name; members who read details see the name."""
    details: dict[int, bool] = {}
    titles = {}
    for review in reviews:
        project_id = review.round.project_id
        if project_id not in details:
            roles = access.roles_in_project(request.user, project_id)
            details[project_id] = bool(roles & access.READ_DETAILS)
        titles[review.round_id] = review.round.title_for(as_expert=not details[project_id])
    return titles


@login_required
def my_reviews(request: HttpRequest) -> HttpResponse:
    page = Paginator(my_reviews_of_open_rounds(user=request.user), PAGE_SIZE).get_page(
        request.GET.get("page")
    )
    reviews = list(page.object_list)
    titles = _round_titles(request, reviews)
    for review in reviews:
        review.round_title = titles[review.round_id]
    return render(
        request,
        "frontend/my_reviews.html",
        {"page": page, "reviews": reviews, "here": request.get_full_path()},
    )


# --- Editing one review -------------------------------------------------------------------


def _choices(enum: Any) -> list[tuple[str, str]]:
    return BLANK + list(enum.choices)


class ReviewEditForm(forms.Form):
    """The answers of a review, for the questions its round asks (``questions``); expectation
    fields only when ``edit_expectation``. Parsing only: the service decides what is valid
    and names the field, so nothing here is required."""

    expected_label = forms.ChoiceField(label="Expected label", required=False)
    expected_confidence = forms.TypedChoiceField(
        label="Confidence in the expected label",
        choices=BLANK + [(str(n), str(n)) for n in range(1, 6)],
        coerce=int,
        empty_value=None,
        required=False,
    )
    concepts = forms.MultipleChoiceField(
        label="Concept tags", widget=forms.CheckboxSelectMultiple, required=False
    )
    free_tags = forms.CharField(
        label="Free tags",
        required=False,
        help_text="Separated by commas.",
        widget=forms.TextInput(attrs={"autocomplete": "off"}),
    )
    prediction_verdict = forms.ChoiceField(
        label="Verdict on the prediction", choices=_choices(PredictionVerdict), required=False
    )
    feature_verdict = forms.ChoiceField(
        label="Verdict on the saliency", choices=_choices(FeatureVerdict), required=False
    )
    acceptable = forms.TypedChoiceField(
        label="Is this error acceptable?",
        choices=[("", "---------"), ("yes", "Yes, acceptable"), ("no", "No, not acceptable")],
        coerce=lambda v: v == "yes",
        empty_value=None,
        required=False,
        help_text="Only for a prediction judged incorrect.",
    )
    severity = forms.TypedChoiceField(
        label="Severity",
        choices=BLANK + [(str(n), str(n)) for n in range(1, 5)],
        coerce=int,
        empty_value=None,
        required=False,
        help_text="1 (minor) to 4 (critical); only for an incorrect prediction.",
    )
    reason = forms.ChoiceField(
        label="Reason",
        choices=_choices(ErrorReason),
        required=False,
        help_text="Only for an incorrect prediction.",
    )
    comment = forms.CharField(
        label="Comment",
        required=False,
        strip=False,
        # No max_length here: the service refuses longer text naming the limit, and the
        # counter on the page says it before sending.
        widget=forms.Textarea(attrs={"rows": 4, "data-limit": limits.COMMENT}),
        help_text=f"At most {limits.COMMENT:,} characters.",
    )

    EXPECTATION = ("expected_label", "expected_confidence", "concepts", "free_tags")
    ACCEPTABILITY = ("acceptable", "severity", "reason")

    def __init__(self, *args: Any, review: Review, edit_expectation: bool, **kwargs: Any):
        super().__init__(*args, **kwargs)
        project = review.round.project
        asked = set(review.round.questions)
        keep = set()
        if edit_expectation:
            if Question.EXPECTED_LABEL in asked:
                keep.add("expected_label")
            if Question.EXPECTED_CONFIDENCE in asked:
                keep.add("expected_confidence")
            if Question.CONCEPTS in asked:
                keep |= {"concepts", "free_tags"}
        for name, question in (
            ("prediction_verdict", Question.PREDICTION_VERDICT),
            ("feature_verdict", Question.FEATURE_VERDICT),
            ("comment", Question.COMMENT),
        ):
            if question in asked:
                keep.add(name)
        if Question.ACCEPTABILITY in asked and Question.PREDICTION_VERDICT in asked:
            keep |= set(self.ACCEPTABILITY)
        for name in list(self.fields):
            if name not in keep:
                del self.fields[name]
        if "expected_label" in self.fields:
            self.fields["expected_label"].choices = BLANK + [(x, x) for x in project.labels]
        if "concepts" in self.fields:
            vocabulary = list(project.concept_vocabulary)
            vocabulary += [c for c in review.concepts if c not in vocabulary]
            self.fields["concepts"].choices = [(c, c) for c in vocabulary]
            if not vocabulary:
                del self.fields["concepts"]

    @staticmethod
    def initial_for(review: Review) -> dict[str, Any]:
        initial = {
            name: getattr(review, name)
            for name in (
                "expected_label",
                "expected_confidence",
                "concepts",
                "prediction_verdict",
                "feature_verdict",
                "severity",
                "reason",
                "comment",
            )
        }
        initial["free_tags"] = ", ".join(review.free_tags)
        initial["acceptable"] = {True: "yes", False: "no"}.get(review.acceptable, "")
        return initial

    def service_data(self) -> dict[str, Any]:
        """The request body for ``review_edit``: this form's fields only, the acceptability
        answers only for a prediction judged incorrect (the service refuses them otherwise)."""
        data = dict(self.cleaned_data)
        if "free_tags" in data:
            data["free_tags"] = [t.strip() for t in data["free_tags"].split(",") if t.strip()]
        if data.get("prediction_verdict") != PredictionVerdict.INCORRECT:
            for name in self.ACCEPTABILITY:
                data.pop(name, None)
        return data


def _safe_next(request: HttpRequest) -> str:
    """``?next=`` when it is a path on this site, else the list of my reviews."""
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("my-reviews")


@login_required
def review_edit_page(request: HttpRequest, review_id: int) -> HttpResponse:
    """Edit one's own submitted review (404 for anyone else's). In a blind-first round the
    expectation is shown read-only and only the verdict is editable. Answers 400 with the
    errors next to their fields, 409 when the round closed, and keeps what was typed."""
    review = access.access_review_by_id(request.user, review_id, own=True)
    review_round = review.round
    is_open = review_round.status == RoundStatus.OPEN and review.submitted_at is not None
    edit_expectation = not review_round.blind_first
    back = _safe_next(request)
    status = 200
    conflict = ""
    if request.method == "POST" and is_open:
        form = ReviewEditForm(request.POST, review=review, edit_expectation=edit_expectation)
        if form.is_valid():
            try:
                saved = review_services.review_edit(
                    review=review, expert=request.user, data=form.service_data()
                )
            except ValidationError as exc:
                add_service_errors(form, exc)
                status = 400
            except review_services.Conflict as exc:
                conflict = exc.message
                status = 409
            else:
                messages.success(request, f"Review saved (version {saved.version}).")
                return redirect(back)
        else:
            status = 400
    else:
        form = ReviewEditForm(
            initial=ReviewEditForm.initial_for(review),
            review=review,
            edit_expectation=edit_expectation,
        )
    roles = access.roles_in_project(request.user, review_round.project_id)
    context = {
        "review": review,
        "round_title": review_round.title_for(as_expert=not roles & access.READ_DETAILS),
        "project": review_round.project,
        "form": form,
        "is_open": is_open,
        "edit_expectation": edit_expectation,
        "asked": set(review_round.questions),
        "conflict": conflict,
        "next": back,
        "image_url": reverse("api-task-image", args=[review.task_id]),
    }
    return render(request, "frontend/review_edit.html", context, status=status)
