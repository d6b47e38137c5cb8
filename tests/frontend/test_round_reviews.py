"""The round page's submitted reviews (who sees them, filters, sort, pages, links to the
instance page, pinned query count), its failed saliency jobs with Retry, the project page's
Retry, and the sampling parts in the new-round form's words."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from annotations.models import Job, JobKind, JobStatus, Review
from annotations.services import reviews
from feedback_service.celery import app
from tests.annotations.review_fixtures import EXPECTATION, VERDICT, build_world, make_round

pytestmark = pytest.mark.django_db

CORRECT = {"prediction_verdict": "correct", "feature_verdict": "relevant"}


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def review_all(review_round, world, verdicts) -> list[Review]:
    done = []
    for k, verdict in enumerate(verdicts):
        expert = world.experts[k % len(world.experts)]
        task = reviews.task_next(review_round=review_round, expert=expert)
        reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
        done.append(reviews.verdict_submit(task=task, expert=expert, data=verdict))
    return done


def row_ids(response) -> list[int]:
    return [int(i) for i in re.findall(r'data-review-id="(\d+)"', response.content.decode())]


@pytest.fixture
def world():
    return build_world(n=6, experts=2)


@pytest.fixture
def reviewed(world):
    review_round = make_round(world)
    return review_round, review_all(review_round, world, [VERDICT, CORRECT, VERDICT, CORRECT])


def test_scientists_and_approvers_see_every_review(world, reviewed):
    review_round, done = reviewed
    for user in (world.scientist, world.approver):
        response = client_for(user).get(f"/rounds/{review_round.pk}/")
        assert response.status_code == 200
        assert sorted(row_ids(response)) == sorted(r.pk for r in done)
        html = response.content.decode()
        assert "Submitted reviews" in html
        assert world.experts[1].username in html
        assert "whiskers" in html  # free tag
        assert "fur" in html  # concept tag
        assert "not acceptable, severity 3, rare case" in html
        assert f"/api/rounds/{review_round.pk}/reviews.csv" in html


def test_experts_and_viewers_see_no_review_table(world, reviewed):
    review_round, _ = reviewed
    for user in (world.experts[0], world.viewer):
        response = client_for(user).get(f"/rounds/{review_round.pk}/")
        assert response.status_code == 200
        html = response.content.decode()
        assert row_ids(response) == []
        assert "Submitted reviews" not in html
        assert "reviews.csv" not in html
    # An expert never sees the other expert's name.
    html = client_for(world.experts[0]).get(f"/rounds/{review_round.pk}/").content.decode()
    assert world.experts[1].username not in html


def test_outsider_gets_404(reviewed):
    review_round, _ = reviewed
    outsider = build_world(n=1, experts=0, slug="cars").scientist
    assert client_for(outsider).get(f"/rounds/{review_round.pk}/").status_code == 404


def test_filters_and_sort_from_the_query(world, reviewed):
    review_round, done = reviewed
    client = client_for(world.scientist)
    url = f"/rounds/{review_round.pk}/"
    assert row_ids(client.get(url, {"verdict": "incorrect", "sort": "submitted"})) == [
        done[0].pk,
        done[2].pk,
    ]
    assert row_ids(client.get(url, {"sort": "submitted"})) == [r.pk for r in done]
    assert row_ids(client.get(url)) == [r.pk for r in reversed(done)]  # newest first
    mine = client.get(url, {"expert": world.experts[1].username, "acceptable": "unanswered"})
    assert sorted(row_ids(mine)) == [done[1].pk, done[3].pk]
    html = mine.content.decode()
    assert "2 reviews match the filters" in html
    assert re.search(r'<option value="unanswered" selected>', html)
    none = client.get(url, {"acceptable": "yes"})
    assert row_ids(none) == []
    assert "No submitted review matches these filters." in none.content.decode()


def test_bad_filter_is_said_and_the_list_shown_unfiltered(world, reviewed):
    review_round, done = reviewed
    response = client_for(world.scientist).get(
        f"/rounds/{review_round.pk}/", {"true_label": "horse"}
    )
    assert response.status_code == 400
    html = response.content.decode()
    assert "The list is not filtered" in html
    assert "&#x27;horse&#x27; is not a class of this project" in html
    assert 'id="f-true" aria-invalid="true"' in html
    assert sorted(row_ids(response)) == sorted(r.pk for r in done)


def test_rows_link_to_the_instance_with_the_list_they_come_from(world, reviewed):
    review_round, done = reviewed
    response = client_for(world.scientist).get(
        f"/rounds/{review_round.pk}/", {"verdict": "incorrect", "sort": "-severity"}
    )
    html = response.content.decode()
    links = re.findall(r'href="(/instances/\d+/\?[^"]+)"', html)
    assert len(links) == 2
    parts = urlsplit(links[0].replace("&amp;", "&"))
    # Both have severity 3: the tie-breaker (id, descending here) puts the later one first.
    assert parts.path == f"/instances/{done[2].instance_id}/"
    assert parse_qs(parts.query) == {
        "from": ["round"],
        "round": [str(review_round.pk)],
        "verdict": ["incorrect"],
        "sort": ["-severity"],
    }
    # The CSV link carries the same filters.
    assert f"/api/rounds/{review_round.pk}/reviews.csv?verdict=incorrect&amp;sort=-severity" in html


def test_fifty_a_page_and_a_pinned_query_count():
    world = build_world(n=60, experts=1)
    review_round = make_round(world)
    review_all(review_round, world, [CORRECT] * 55)
    client = client_for(world.scientist)
    url = f"/rounds/{review_round.pk}/"
    # Session and user, the round, roles, progress (9), the navigation, the expert check
    # of the round's own page, the filter's expert list, count, rows (one query: instance,
    # expert and predicted label joined): the same for 50 rows as for 5.
    with CaptureQueriesContext(connection) as full:
        first = client.get(url, {"sort": "instance", "verdict": "correct"})
    with CaptureQueriesContext(connection) as short:
        second = client.get(url, {"sort": "instance", "verdict": "correct", "page": 2})
    assert len(full) == len(short)
    assert len(full) <= 24
    assert len(row_ids(first)) == 50
    assert len(row_ids(second)) == 5
    html = first.content.decode()
    assert "page 1 of 2" in html
    assert 'href="?verdict=correct&amp;sort=instance&amp;page=2#reviews"' in html
    assert set(row_ids(first)).isdisjoint(row_ids(second))


def test_sampling_parts_in_the_forms_words(world):
    review_round = reviews.round_create(
        model_version=world.mv,
        name="parts",
        sampling_strategy={
            "parts": [
                {"kind": "all_errors"},
                {"kind": "lowest_confidence", "n": 2},
                {"kind": "confident_errors", "threshold": 0.5, "n": 3, "name": "sure but wrong"},
                {"kind": "stratified", "per_class": 1, "by": "predicted"},
            ]
        },
        created_by=world.scientist,
        experts=world.experts,
        explanation_method="",
    )
    html = client_for(world.scientist).get(f"/rounds/{review_round.pk}/").content.decode()
    section = html[html.index('id="sampling-h"') : html.index("Questions:")]
    assert "All errors" in section
    assert "Lowest confidence" in section
    assert "How many: 2" in section
    assert "sure but wrong (Confident errors)" in section
    assert "Confidence at least: 0.5" in section
    assert "Stratified per class" in section
    assert "Classes by: predicted label" in section
    for key in ("all_errors", "lowest_confidence", "confident_errors", "stratified", "per_class"):
        assert key not in section


# --- Failed jobs and Retry ------------------------------------------------------------------


@pytest.fixture
def sent(monkeypatch):
    messages: list[tuple[str, list]] = []
    monkeypatch.setattr(
        app, "send_task", lambda name, args=None, **kw: messages.append((name, list(args or [])))
    )
    return messages


def failed_saliency_job(world, method="gradcam") -> Job:
    return Job.objects.create(
        project=world.project,
        kind=JobKind.EXPLAIN,
        model_version=world.mv,
        status=JobStatus.FAILED,
        error="RuntimeError: the layer cannot be observed",
        params={"method": method, "target": None, "instance_ids": None, "split": None},
        total=6,
        done=1,
    )


def test_round_page_shows_a_failed_saliency_job_and_retries_it(
    world, sent, django_capture_on_commit_callbacks
):
    review_round = make_round(world)
    review_round.explanation_method = "gradcam"
    review_round.save(update_fields=["explanation_method"])
    job = failed_saliency_job(world)
    failed_saliency_job(world, method="saliency")  # another method: not this round's
    url = f"/rounds/{review_round.pk}/"
    html = client_for(world.scientist).get(url).content.decode()
    assert "Saliency maps that failed" in html
    assert "RuntimeError: the layer cannot be observed" in html
    assert html.count("data-failed-job=") == 1
    assert f'name="job" value="{job.pk}"' in html
    # Approvers read the reason but have no Retry; experts see neither.
    approver_html = client_for(world.approver).get(url).content.decode()
    assert "the layer cannot be observed" in approver_html
    assert 'value="retry"' not in approver_html
    assert "cannot be observed" not in client_for(world.experts[0]).get(url).content.decode()
    # An approver's POST is refused and queues nothing.
    refused = client_for(world.approver).post(url, {"action": "retry", "job": job.pk})
    assert refused.status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(world.scientist).post(
            url, {"action": "retry", "job": job.pk}, follow=True
        )
    assert response.status_code == 200
    assert f"Job {job.pk} is queued again" in response.content.decode()
    job.refresh_from_db()
    assert (job.status, job.error) == (JobStatus.QUEUED, "")
    assert sent == [("explain_worker.tasks.compute_explanations", [job.pk])]
    assert "Saliency maps that failed" not in response.content.decode()
    # A second press says why nothing happened, and sends nothing.
    with django_capture_on_commit_callbacks(execute=True):
        again = client_for(world.scientist).post(
            url, {"action": "retry", "job": job.pk}, follow=True
        )
    assert "was not retried" in again.content.decode()
    assert len(sent) == 1


def test_project_page_retries_a_failed_job(world, sent, django_capture_on_commit_callbacks):
    job = failed_saliency_job(world)
    other = build_world(n=1, experts=0, slug="cars")
    foreign = failed_saliency_job(other)
    url = f"/projects/{world.project.pk}/"
    html = client_for(world.scientist).get(url).content.decode()
    assert "the layer cannot be observed" in html
    assert f'name="job" value="{job.pk}"' in html
    assert 'value="retry"' not in client_for(world.approver).get(url).content.decode()
    # A job of another project is not reachable through this page.
    with django_capture_on_commit_callbacks(execute=True):
        assert (
            client_for(world.scientist).post(url, {"action": "retry", "job": foreign.pk})
        ).status_code == 404
    with django_capture_on_commit_callbacks(execute=True):
        response = client_for(world.scientist).post(url, {"action": "retry", "job": job.pk})
    assert response.status_code == 302
    assert response["Location"].endswith("#jobs")
    assert sent == [("explain_worker.tasks.compute_explanations", [job.pk])]


def test_column_headers_sort_and_flip(world, reviewed):
    review_round, _ = reviewed
    client = client_for(world.scientist)
    url = f"/rounds/{review_round.pk}/"
    html = client.get(url, {"verdict": "incorrect"}).content.decode()
    # Newest first by default: Submitted is the current (descending) column; a click flips it.
    assert re.search(
        r'aria-sort="descending"><a href="\?verdict=incorrect&amp;sort=submitted#reviews"',
        html,
    )
    # Another column sorts in its first direction, keeping the filters.
    assert 'href="?verdict=incorrect&amp;sort=-severity#reviews"' in html
    assert 'href="?verdict=incorrect&amp;sort=expert#reviews"' in html
    flipped = client.get(url, {"verdict": "incorrect", "sort": "expert"}).content.decode()
    assert re.search(
        r'aria-sort="ascending"><a href="\?verdict=incorrect&amp;sort=-expert#reviews"', flipped
    )
    names = re.findall(
        r"<td>(pets-expert\d)</td>", client.get(url, {"sort": "-expert"}).content.decode()
    )
    assert names == sorted(names, reverse=True)
    assert len(names) == 4
