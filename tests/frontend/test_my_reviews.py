"""'My reviews' (/reviews/mine/) and the edit-review page (/reviews/{id}/edit/) with Django's
test client: the list shows the expert's own reviews of open rounds only; the form edits
through ``review_edit`` (a new version each time), keeps a blind-first round's expectation
read-only, shows the service's errors next to their fields without losing what was typed,
and sends the user back only to a path on this site."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from annotations.models import Review, ReviewVersion
from annotations.services import reviews
from tests.annotations.review_fixtures import EXPECTATION, VERDICT, build_world, make_round

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def submitted_review(review_round, expert) -> Review:
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
    reviews.verdict_submit(task=task, expert=expert, data=VERDICT)
    return Review.objects.get(task=task)


def verdict_post(**changes) -> dict:
    data = {
        "prediction_verdict": "incorrect",
        "feature_verdict": "irrelevant",
        "acceptable": "no",
        "severity": "3",
        "reason": "rare_case",
        "comment": "odd",
    }
    return data | changes


def test_list_shows_own_reviews_of_open_rounds_with_an_edit_link():
    world = build_world(n=4, experts=2)
    expert, other = world.experts
    open_round = make_round(world)
    mine = submitted_review(open_round, expert)
    theirs = submitted_review(open_round, other)
    closed_round = make_round(world)
    in_closed = submitted_review(closed_round, expert)
    reviews.round_close(review_round=closed_round)

    response = client_for(expert).get(reverse("my-reviews"))

    assert response.status_code == 200
    assert [r.pk for r in response.context["reviews"]] == [mine.pk]
    html = response.content.decode()
    assert f'data-review="{mine.pk}"' in html
    assert f'data-review="{theirs.pk}"' not in html
    assert f'data-review="{in_closed.pk}"' not in html
    assert reverse("api-task-image", args=[mine.task_id]) in html
    assert f"{reverse('review-edit', args=[mine.pk])}?next=/reviews/mine/" in html
    assert "Prediction incorrect" in html
    assert "Irrelevant" in html
    # A blind-first round's name is not shown to its experts.
    assert f"Review round {open_round.pk}" in html


def test_edit_in_an_open_round_saves_a_new_version_and_goes_back_to_next():
    world = build_world(n=2, experts=1)
    [expert] = world.experts
    review = submitted_review(make_round(world, blind_first=False), expert)
    url = reverse("review-edit", args=[review.pk])
    client = client_for(expert)

    page = client.get(url)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="expected_label"' in html  # not blind-first: the expectation is editable
    assert '<label for="id_comment">Comment' in html

    data = verdict_post(prediction_verdict="correct", comment="fine after all")
    data |= {"expected_label": "dog", "expected_confidence": "2", "concepts": ["beak"]}
    data |= {"free_tags": "tail, ears", "next": "/reviews/mine/?page=1"}
    response = client.post(url, data)

    assert response.status_code == 302
    assert response["Location"] == "/reviews/mine/?page=1"
    review.refresh_from_db()
    assert (review.version, review.prediction_verdict, review.comment) == (
        2,
        "correct",
        "fine after all",
    )
    assert (review.expected_label, review.expected_confidence) == ("dog", 2)
    assert (review.concepts, review.free_tags) == (["beak"], ["ears", "tail"])
    # A correct prediction has no acceptability answers; the evidence was kept as drawn.
    assert (review.acceptable, review.severity, review.reason) == (None, None, "")
    assert review.evidence == EXPECTATION["evidence"]
    assert ReviewVersion.objects.get(review=review).data["prediction_verdict"] == "incorrect"


def test_blind_first_round_shows_the_expectation_read_only_and_edits_the_verdict():
    world = build_world(n=2, experts=1)
    [expert] = world.experts
    review = submitted_review(make_round(world, blind_first=True), expert)
    url = reverse("review-edit", args=[review.pk])
    client = client_for(expert)

    html = client.get(url).content.decode()
    assert 'name="expected_label"' not in html
    assert 'name="concepts"' not in html
    assert '<dd data-field="expected_label">cat</dd>' in html
    assert 'name="prediction_verdict"' in html

    # A forged expectation field is not part of the form and never reaches the service.
    response = client.post(url, verdict_post(feature_verdict="relevant", expected_label="dog"))

    assert response.status_code == 302
    assert response["Location"] == reverse("my-reviews")
    review.refresh_from_db()
    assert (review.feature_verdict, review.expected_label, review.version) == (
        "relevant",
        "cat",
        2,
    )


def test_validation_error_is_shown_next_to_its_field_and_nothing_typed_is_lost():
    world = build_world(n=2, experts=1)
    [expert] = world.experts
    review = submitted_review(make_round(world), expert)
    url = reverse("review-edit", args=[review.pk])

    response = client_for(expert).post(
        url, verdict_post(severity="", comment="keep this text", reason="other")
    )

    assert response.status_code == 400
    form = response.context["form"]
    assert list(form.errors) == ["severity"]
    html = response.content.decode()
    severity = html.index('id="id_severity"')
    error = html.index("Give the severity as a whole number from 1 to 4.")
    comment = html.index('id="id_comment"')
    assert error < severity < comment  # the message is in the severity field's group
    assert "keep this text</textarea>" in html
    assert '<option value="other" selected>' in html
    review.refresh_from_db()
    assert (review.version, review.comment) == (1, "odd")


def test_comment_over_the_limit_is_refused_naming_the_field():
    world = build_world(n=2, experts=1)
    [expert] = world.experts
    review = submitted_review(make_round(world), expert)

    response = client_for(expert).post(
        reverse("review-edit", args=[review.pk]), verdict_post(comment="x" * 5001)
    )

    assert response.status_code == 400
    assert list(response.context["form"].errors) == ["comment"]
    review.refresh_from_db()
    assert review.comment == "odd"


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "javascript:alert(1)"],
)
def test_next_only_leads_to_this_site(target):
    world = build_world(n=2, experts=1)
    [expert] = world.experts
    review = submitted_review(make_round(world), expert)

    response = client_for(expert).post(
        reverse("review-edit", args=[review.pk]) + f"?next={target}", verdict_post()
    )

    assert response.status_code == 302
    assert response["Location"] == reverse("my-reviews")


def test_other_experts_review_is_not_found_and_a_closed_round_is_read_only():
    world = build_world(n=2, experts=2)
    expert, other = world.experts
    review_round = make_round(world)
    review = submitted_review(review_round, expert)
    url = reverse("review-edit", args=[review.pk])

    assert client_for(other).get(url).status_code == 404
    assert client_for(world.scientist).get(url).status_code == 404

    reviews.round_close(review_round=review_round)
    client = client_for(expert)
    page = client.get(url)
    assert page.status_code == 200
    assert "The round is closed" in page.content.decode()
    assert '<form method="post" class="stack"' not in page.content.decode()
    client.post(url, verdict_post(comment="late"))
    review.refresh_from_db()
    assert (review.version, review.comment) == (1, "odd")


@pytest.mark.parametrize("rounds", [1, 4])
def test_list_query_count_does_not_grow_with_the_reviews(rounds, django_assert_max_num_queries):
    world = build_world(n=8, experts=1)
    [expert] = world.experts
    for _ in range(rounds):
        review_round = make_round(world)
        for _ in range(2):
            submitted_review(review_round, expert)
    client = client_for(expert)
    # Session, user, the page's count and rows, the user's roles in the project, the nav.
    with django_assert_max_num_queries(6):
        response = client.get(reverse("my-reviews"))
    assert len(response.context["reviews"]) == 2 * rounds
