"""The expert's hot path (next task, expectation, verdict) runs a fixed, small number of
queries, whatever the round's size: these pins catch an N+1 or a lost select_related."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.annotations.review_fixtures import build_world, make_round

pytestmark = pytest.mark.django_db

EXPECTATION = {"expected_label": "cat", "expected_confidence": 4, "evidence": [], "concepts": []}
VERDICT = {"prediction_verdict": "correct", "feature_verdict": "relevant", "comment": ""}


def _counted(call):
    with CaptureQueriesContext(connection) as ctx:
        response = call()
    # Savepoints appear only because the test runs inside a transaction; a request in
    # autocommit runs the claim as a bare statement. On PostgreSQL a hot-path statement is
    # prepared once per connection (annotations.prepared): PREPARE is not a per-request cost.
    skip = ("SAVEPOINT", "RELEASE SAVEPOINT", "PREPARE ")
    return response, [q["sql"] for q in ctx.captured_queries if not q["sql"].startswith(skip)]


@pytest.mark.parametrize("size", [4, 40])
def test_hot_path_query_counts_do_not_grow(size):
    world = build_world(n=size, experts=2)
    review_round = make_round(world)
    client = world.client(world.experts[0])

    response, next_sql = _counted(lambda: client.post(f"/api/rounds/{review_round.pk}/tasks/next"))
    assert response.status_code == 200, response.content
    task_id = response.json()["id"]
    # Round access with the expert's own lease and any expired lease (one prepared query),
    # the claim, and the task with everything its payload shows (one prepared query).
    assert len(next_sql) <= 3, "\n".join(next_sql)

    response, again_sql = _counted(lambda: client.post(f"/api/rounds/{review_round.pk}/tasks/next"))
    assert response.json()["id"] == task_id
    assert len(again_sql) <= 2, "\n".join(again_sql)

    response, exp_sql = _counted(
        lambda: client.post(
            f"/api/tasks/{task_id}/expectation",
            EXPECTATION,
            format="json",
            HTTP_IDEMPOTENCY_KEY="k-exp",
        )
    )
    assert response.status_code == 200, response.content
    assert response.json()["revealed"] is True
    # The task locked with its context (prediction and saliency for the reveal included),
    # the review, the task's phase, the Idempotency-Key's record.
    assert len(exp_sql) <= 4, "\n".join(exp_sql)

    response, verdict_sql = _counted(
        lambda: client.post(
            f"/api/tasks/{task_id}/verdict", VERDICT, format="json", HTTP_IDEMPOTENCY_KEY="k-v"
        )
    )
    assert response.status_code == 200, response.content
    # The task locked with its context (review and draft), the review, the task (whose
    # update also says whether a slot is still open: then no round-complete check follows),
    # the key's record; no draft was saved, so none is deleted.
    assert len(verdict_sql) <= 4, "\n".join(verdict_sql)
