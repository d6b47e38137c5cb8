"""annotations.review_table: filters parsed from query parameters (bad values name their
field), the selector's filters and orders (stable tie-breaker), alignment for a page's rows."""

from __future__ import annotations

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
