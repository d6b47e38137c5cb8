"""annotations.review_table: filters parsed from query parameters (bad values name their
field), the selector's filters and orders (stable tie-breaker), alignment for a page's rows."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotations.models import Review
from annotations.review_table import (
    ReviewFilters,
    attach_saliency,
    parse_review_filters,
    round_reviews,
)
from annotations.services import reviews
from tests.annotations.review_fixtures import (
    EXPECTATION,
    VERDICT,
    add_explanation,
    build_world,
    make_round,
    make_round_with_saliency,
)

pytestmark = pytest.mark.django_db

CORRECT = {"prediction_verdict": "correct", "feature_verdict": "relevant"}


def review_all(review_round, world, verdicts):
    """Each expert in turn takes the next task and submits ``verdicts[k]``; returns the
    reviews in submission order."""
    done = []
    for k, verdict in enumerate(verdicts):
        expert = world.experts[k % len(world.experts)]
        task = reviews.task_next(review_round=review_round, expert=expert)
        expectation = EXPECTATION | {"expected_label": ["cat", "dog", "bird"][k % 3]}
        reviews.expectation_submit(task=task, expert=expert, data=expectation)
        done.append(reviews.verdict_submit(task=task, expert=expert, data=verdict))
    return done


@pytest.fixture
def world():
    return build_world(n=6, experts=2)


@pytest.fixture
def reviewed(world):
    review_round = make_round(world)
    done = review_all(review_round, world, [VERDICT, CORRECT, VERDICT | {"severity": 1}, CORRECT])
    return review_round, done


def test_empty_params_are_the_defaults(reviewed):
    review_round, _ = reviewed
    filters = parse_review_filters({"verdict": "", "sort": "", "page": "3"}, review_round)
    assert filters == ReviewFilters()
    assert filters.as_params() == {}
    assert not filters.active


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"verdict": "wrong"}, "verdict"),
        ({"acceptable": "maybe"}, "acceptable"),
        ({"expert": "nobody"}, "expert"),
        ({"true_label": "horse"}, "true_label"),
        ({"expected_label": "horse"}, "expected_label"),
        ({"predicted_label": "horse"}, "predicted_label"),
        ({"sort": "colour"}, "sort"),
        ({"sort": "-colour"}, "sort"),
    ],
)
def test_bad_values_name_their_field(reviewed, params, field):
    review_round, _ = reviewed
    with pytest.raises(ValidationError) as caught:
        parse_review_filters(params, review_round)
    assert list(caught.value.message_dict) == [field]


def test_expert_of_the_project_but_not_of_the_round_is_refused(world):
    review_round = make_round(world)
    review_round.experts.remove(world.experts[1])
    with pytest.raises(ValidationError):
        parse_review_filters({"expert": world.experts[1].username}, review_round)


def test_filters_select_what_they_say(world, reviewed):
    review_round, done = reviewed
    ids = lambda params: [  # noqa: E731
        r.pk for r in round_reviews(review_round, parse_review_filters(params, review_round))
    ]
    assert ids({"sort": "submitted"}) == [r.pk for r in done]
    assert sorted(ids({"verdict": "incorrect"})) == [done[0].pk, done[2].pk]
    assert sorted(ids({"verdict": "correct"})) == [done[1].pk, done[3].pk]
    assert sorted(ids({"acceptable": "no"})) == [done[0].pk, done[2].pk]
    assert sorted(ids({"acceptable": "unanswered"})) == [done[1].pk, done[3].pk]
    assert ids({"acceptable": "yes"}) == []
    expert0 = world.experts[0].username
    assert sorted(ids({"expert": expert0})) == [done[0].pk, done[2].pk]
    assert sorted(ids({"expected_label": "dog"})) == [done[1].pk]
    for r in done:
        r.refresh_from_db()
        instance = r.instance
        predicted = instance.predictions.get().label
        assert r.pk in ids({"true_label": instance.label, "predicted_label": predicted})
        others = [label for label in ("cat", "dog", "bird") if label != instance.label]
        assert r.pk not in ids({"true_label": others[0]})
    # Filters combine (AND).
    assert ids({"verdict": "incorrect", "expert": world.experts[1].username}) == []


def test_a_draft_or_unfinished_review_is_not_listed(world):
    review_round = make_round(world)
    expert = world.experts[0]
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
    assert Review.objects.filter(round=review_round).count() == 1
    assert list(round_reviews(review_round, ReviewFilters())) == []


def test_sorts_are_stable_and_put_empty_values_last(reviewed):
    review_round, done = reviewed

    def ordered(sort):
        return [r.pk for r in round_reviews(review_round, ReviewFilters(sort=sort))]

    assert ordered("-submitted") == [r.pk for r in reversed(done)]
    # Severity 3, 1, then the two correct ones (no severity) last, by id in the sort's
    # direction.
    assert ordered("-severity") == [done[0].pk, done[2].pk, done[3].pk, done[1].pk]
    assert ordered("severity") == [done[2].pk, done[0].pk, done[1].pk, done[3].pk]
    # Ties (same expert) fall back to the id, in the sort's direction.
    by_expert = ordered("expert")
    expert_of = {r.pk: r.expert.username for r in done}
    assert [expert_of[i] for i in by_expert] == sorted(expert_of[i] for i in by_expert)
    assert by_expert == sorted(by_expert, key=lambda i: (expert_of[i], i))
    for key in ("time", "-time", "instance", "verdict", "expected_label"):
        assert sorted(ordered(key)) == sorted(r.pk for r in done)


def test_one_query_whatever_the_rows(reviewed):
    review_round, _ = reviewed
    with CaptureQueriesContext(connection) as queries:
        rows = list(round_reviews(review_round, ReviewFilters(sort="expert")))
        seen = [(r.instance.label, r.expert.username, r.predicted_label) for r in rows]
    assert len(seen) == 4
    assert all(predicted for _, _, predicted in seen)
    assert len(queries) == 1


def test_querystring_round_trips(reviewed):
    review_round, _ = reviewed
    params = {"verdict": "incorrect", "acceptable": "no", "sort": "-severity"}
    filters = parse_review_filters(params, review_round)
    assert filters.as_params() == params
    assert filters.querystring(page=2) == "verdict=incorrect&acceptable=no&sort=-severity&page=2"
    assert filters.active


def test_alignment_for_a_page_of_rows(world, media_root):
    review_round = make_round_with_saliency(world)
    done = review_all(review_round, world, [VERDICT, CORRECT])
    values = np.zeros((32, 32))
    values[:16, :16] = 1.0  # the top-left quarter, where the expected box lies
    first = done[0]
    add_explanation(world, first.instance, values)
    rows = list(round_reviews(review_round, ReviewFilters(sort="submitted")))
    with CaptureQueriesContext(connection) as queries:
        attach_saliency(rows, review_round)
    assert len(queries) == 1
    assert rows[0].saliency is not None
    assert 0 < rows[0].alignment["iou"] <= 1
    # No map for the second instance: no alignment, and no error.
    assert rows[1].saliency is None
    assert rows[1].alignment is None


# --- API: GET /api/rounds/{id}/reviews/ and reviews.csv ------------------------------------


def api_rows(client, review_round, query: str = "") -> list[dict]:
    response = client.get(f"/api/rounds/{review_round.pk}/reviews/?{query}")
    assert response.status_code == 200, response.content
    return response.json()["results"]


def csv_rows(response) -> list[dict]:
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/csv")
    assert response.streaming
    text = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(text)))


def test_api_filters_and_sorts(world, reviewed):
    review_round, done = reviewed
    client = world.client(world.scientist)
    rows = api_rows(client, review_round, "sort=submitted")
    assert [r["id"] for r in rows] == [r.pk for r in done]
    first = rows[0]
    assert first["expert"] == world.experts[0].username
    assert first["prediction_verdict"] == "incorrect"
    assert first["acceptable"] is False
    assert first["severity"] == 3
    assert first["concepts"] == ["fur"]
    assert first["free_tags"] == ["whiskers"]
    assert first["alignment"] is None  # the round shows no saliency
    assert first["server_seconds"] is not None
    assert first["instance_page_url"] == (
        f"/instances/{done[0].instance_id}/?from=round&round={review_round.pk}&sort=submitted"
    )
    incorrect = api_rows(client, review_round, "verdict=incorrect&sort=-severity")
    assert [r["id"] for r in incorrect] == [done[0].pk, done[2].pk]
    assert all("verdict=incorrect" in r["instance_page_url"] for r in incorrect)
    by_expert = api_rows(client, review_round, f"expert={world.experts[1].username}")
    assert {r["expert"] for r in by_expert} == {world.experts[1].username}
    assert len(by_expert) == 2


def test_api_pages_of_fifty(settings):
    world = build_world(n=60, experts=1)
    review_round = make_round(world)
    review_all(review_round, world, [CORRECT] * 55)
    client = world.client(world.approver)
    url = f"/api/rounds/{review_round.pk}/reviews/"
    first = client.get(url, {"sort": "instance"}).json()
    assert (first["count"], first["pages"], first["page"], len(first["results"])) == (55, 2, 1, 50)
    assert first["previous"] is None
    assert first["next"] == f"{url}?sort=instance&page=2"
    second = client.get(first["next"]).json()
    assert len(second["results"]) == 5
    assert second["next"] is None
    ids = [r["instance"] for r in first["results"] + second["results"]]
    assert ids == sorted(ids)
    assert len(set(ids)) == 55
    for page in ("0", "3", "x"):
        response = client.get(url, {"page": page})
        assert response.status_code == 400
        assert "page" in response.json()


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("verdict=wrong", "verdict"),
        ("acceptable=maybe", "acceptable"),
        ("expert=nobody", "expert"),
        ("true_label=horse", "true_label"),
        ("expected_label=horse", "expected_label"),
        ("predicted_label=horse", "predicted_label"),
        ("sort=colour", "sort"),
    ],
)
@pytest.mark.parametrize("csv_format", [False, True])
def test_api_bad_values_answer_400_naming_the_field(world, reviewed, query, field, csv_format):
    review_round, _ = reviewed
    client = world.client(world.scientist)
    path = "reviews.csv" if csv_format else "reviews/"
    response = client.get(f"/api/rounds/{review_round.pk}/{path}?{query}")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("application/json")
    assert list(response.json()) == [field]


def test_csv_has_the_same_rows_as_the_json(world, media_root):
    review_round = make_round_with_saliency(world)
    done = review_all(review_round, world, [VERDICT, CORRECT, VERDICT | {"severity": 1}, CORRECT])
    values = np.zeros((32, 32))
    values[:16, :16] = 1.0
    add_explanation(world, done[0].instance, values)
    client = world.client(world.scientist)
    for query in ("", "verdict=incorrect&sort=-severity", "acceptable=unanswered&sort=expert"):
        rows = api_rows(client, review_round, query)
        for url in (
            f"/api/rounds/{review_round.pk}/reviews.csv?{query}",
            f"/api/rounds/{review_round.pk}/reviews/?{query}&format=csv",
        ):
            response = client.get(url)
            assert "attachment" in response["Content-Disposition"]
            parsed = csv_rows(response)
            assert [int(r["review"]) for r in parsed] == [r["id"] for r in rows]
            for row, line in zip(rows, parsed, strict=True):
                assert line["expert"] == row["expert"]
                assert line["true_label"] == row["true_label"]
                assert line["predicted_label"] == row["predicted_label"]
                assert line["prediction_verdict"] == row["prediction_verdict"]
                assert line["acceptable"] == {True: "yes", False: "no", None: ""}[row["acceptable"]]
                assert line["severity"] == ("" if row["severity"] is None else str(row["severity"]))
                assert line["concepts"].split("; ") == row["concepts"]
                assert line["free_tags"].split("; ") == row["free_tags"]
                iou = (row["alignment"] or {}).get("iou")
                assert line["iou"] == ("" if iou is None else str(iou))
    aligned = api_rows(client, review_round, "sort=submitted")[0]
    assert aligned["alignment"]["iou"] > 0
    assert aligned["saliency_thumbnail_url"].endswith("/thumbnail/")


def test_csv_cells_a_spreadsheet_would_run_are_made_text(world, media_root):
    """An expert's comment "=HYPERLINK(...)" must not become a formula in the scientist's
    spreadsheet: text cells starting with = + - @ get a leading apostrophe."""
    review_round = make_round(world)
    review_all(review_round, world, [VERDICT | {"comment": '=HYPERLINK("http://x")'}])
    response = world.client(world.scientist).get(f"/api/rounds/{review_round.pk}/reviews.csv")
    [line] = csv_rows(response)
    assert line["comment"] == '\'=HYPERLINK("http://x")'
    # The JSON keeps the text exactly as written.
    assert api_rows(world.client(world.scientist), review_round, "")[0]["comment"].startswith("=")


@pytest.mark.parametrize(
    ("role", "status"),
    [("scientist", 200), ("approver", 200), ("expert", 403), ("viewer", 403), ("outsider", 404)],
)
@pytest.mark.parametrize("path", ["reviews/", "reviews.csv"])
def test_api_roles(world, reviewed, role, status, path):
    review_round, _ = reviewed
    user = {
        "scientist": world.scientist,
        "approver": world.approver,
        "expert": world.experts[0],
        "viewer": world.viewer,
        "outsider": build_world(n=1, experts=0, slug="cars").scientist,
    }[role]
    response = world.client(user).get(f"/api/rounds/{review_round.pk}/{path}")
    assert response.status_code == status


def test_api_anonymous_is_refused(reviewed):
    review_round, _ = reviewed
    from rest_framework.test import APIClient

    response = APIClient().get(f"/api/rounds/{review_round.pk}/reviews/")
    assert response.status_code in (401, 403)


def test_api_query_count_does_not_grow_with_rows(django_assert_max_num_queries, media_root):
    world = build_world(n=30, experts=3)
    review_round = make_round_with_saliency(world)
    done = review_all(review_round, world, [VERDICT, CORRECT] * 12)
    for review in done[:10]:
        add_explanation(world, review.instance, np.ones((32, 32)))
    client = world.client(world.scientist)
    url = f"/api/rounds/{review_round.pk}/reviews/"
    # Round access, roles (access check, then is-expert-only), the expert filter's check,
    # count, rows, the rows' maps.
    with django_assert_max_num_queries(7):
        response = client.get(url, {"expert": world.experts[0].username, "sort": "-time"})
    assert len(response.json()["results"]) == 8
    with django_assert_max_num_queries(6):
        response = client.get(url)
    assert len(response.json()["results"]) == 24
    # The CSV: access, roles twice, the rows, one query for the maps of each chunk.
    with django_assert_max_num_queries(5):
        assert len(csv_rows(client.get(url, {"format": "csv"}))) == 24
