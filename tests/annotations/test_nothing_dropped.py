"""Nothing a user types is dropped without a word (issue 15, item 1): every text field of
every write either stores exactly what was sent or answers 400 naming the field and its
limit, and a refused write loses nothing already saved (draft, lease, earlier version)."""

from __future__ import annotations

import pytest

from annotations import limits
from annotations.models import (
    InstanceComment,
    Project,
    Review,
    ReviewDraft,
    ReviewTask,
    ReviewVersion,
    TaskStatus,
)
from tests.annotations.review_fixtures import EXPECTATION, VERDICT, build_world, make_round

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(media_root):
    return build_world()


def _start(world, **round_kwargs):
    review_round = make_round(world, **round_kwargs)
    alice = world.client(world.experts[0])
    task = alice.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
    return review_round, alice, task


def _post(client, task_id, phase, body):
    return client.post(f"/api/tasks/{task_id}/{phase}", body, format="json")


def test_a_comment_at_the_limit_is_stored_exactly(world):
    _, alice, task = _start(world)
    assert _post(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    comment = "é" * (limits.COMMENT - 1) + "\n"
    response = _post(alice, task["id"], "verdict", VERDICT | {"comment": comment})
    assert response.status_code == 200, response.content
    assert Review.objects.get(task_id=task["id"]).comment == comment


def test_a_comment_over_the_limit_is_refused_and_nothing_is_lost(world):
    """The defect: 100 KB were accepted, "Submitted" shown, and all after 5,000 dropped."""
    _, alice, task = _start(world)
    assert _post(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    draft = {"comment": "x" * 100_000, "prediction_verdict": "incorrect"}
    assert alice.put(f"/api/tasks/{task['id']}/draft", draft, format="json").status_code == 200
    response = _post(alice, task["id"], "verdict", VERDICT | {"comment": "x" * 100_000})
    assert response.status_code == 400
    message = response.json()["comment"][0]
    assert "5,000" in message
    assert "100,000" in message
    task_row = ReviewTask.objects.get(pk=task["id"])
    assert task_row.status == TaskStatus.LEASED  # still theirs, not submitted
    assert Review.objects.get(task_id=task["id"]).submitted_at is None
    kept = ReviewDraft.objects.get(instance_id=task_row.instance_id, expert=world.experts[0])
    assert kept.data["comment"] == "x" * 100_000  # the draft is untouched


@pytest.mark.parametrize(
    ("phase", "change", "field"),
    [
        ("expectation", {"free_tags": ["t" * (limits.FREE_TAG + 1)]}, "free_tags"),
        (
            "expectation",
            {"free_tags": [f"tag{i}" for i in range(limits.FREE_TAGS + 1)]},
            "free_tags",
        ),
        ("expectation", {"expected_lable": "cat"}, "expected_lable"),  # a typo is not ignored
        (
            "expectation",
            {"evidence": [{"type": "box", "points": [[1, 1], [5, 5]], "concept": "c" * 201}]},
            "evidence",
        ),
        (
            "expectation",
            {"evidence": [{"type": "box", "points": [[1, 1], [5, 5]], "colour": "red"}]},
            "evidence",
        ),
        ("verdict", {"coment": "typo"}, "coment"),
        ("verdict", {"comment": "nul \x00 inside"}, "comment"),
        ("verdict", {"comment": 42}, "comment"),
    ],
)
def test_text_that_would_not_be_stored_as_sent_is_refused(world, phase, change, field):
    _, alice, task = _start(world)
    if phase == "verdict":
        assert _post(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    body = (EXPECTATION if phase == "expectation" else VERDICT) | change
    response = _post(alice, task["id"], phase, body)
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()


def test_an_answer_to_a_question_the_round_does_not_ask_is_refused(world):
    questions = ["expected_label", "prediction_verdict", "feature_verdict", "acceptability"]
    _, alice, task = _start(world, questions=questions)
    expectation = {"expected_label": "cat"}
    assert _post(alice, task["id"], "expectation", expectation).status_code == 200
    response = _post(alice, task["id"], "verdict", VERDICT)  # VERDICT carries a comment
    assert response.status_code == 400
    assert "does not ask" in response.json()["comment"][0]


def test_acceptability_for_a_correct_prediction_is_refused_not_dropped(world):
    _, alice, task = _start(world)
    assert _post(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    body = {"prediction_verdict": "correct", "feature_verdict": "relevant", "severity": 4}
    response = _post(alice, task["id"], "verdict", body)
    assert response.status_code == 400
    assert "severity" in response.json()


def test_skip_reason_over_the_limit_is_refused_and_the_task_kept(world):
    _, alice, task = _start(world)
    response = alice.post(
        f"/api/tasks/{task['id']}/skip", {"reason": "r" * (limits.SKIP_REASON + 1)}, format="json"
    )
    assert response.status_code == 400
    assert "reason" in response.json()
    assert ReviewTask.objects.get(pk=task["id"]).status == TaskStatus.LEASED


@pytest.mark.parametrize(
    ("draft", "message"),
    [
        ({"comment": "nul \x00"}, "NUL"),
        ({"comment": "x" * (limits.DRAFT_BYTES + 1)}, "KiB"),
    ],
)
def test_a_draft_that_cannot_come_back_as_sent_is_refused(world, draft, message):
    _, alice, task = _start(world)
    url = f"/api/tasks/{task['id']}/draft"
    assert alice.put(url, {"comment": "kept"}, format="json").status_code == 200
    response = alice.put(url, draft, format="json")
    assert response.status_code == 400
    assert message in response.json()["draft"][0]
    assert ReviewDraft.objects.get(expert=world.experts[0]).data == {"comment": "kept"}


def test_review_edit_refuses_long_text_and_keeps_the_review(world):
    _, alice, task = _start(world)
    assert _post(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    review_id = _post(alice, task["id"], "verdict", VERDICT).json()["id"]
    response = alice.patch(
        f"/api/reviews/{review_id}/", {"comment": "y" * (limits.COMMENT + 1)}, format="json"
    )
    assert response.status_code == 400
    assert "comment" in response.json()
    review = Review.objects.get(pk=review_id)
    assert (review.comment, review.version) == (VERDICT["comment"], 1)
    assert not ReviewVersion.objects.exists()


def test_blind_first_expectation_cannot_be_rewritten_after_the_reveal(world):
    """Issue 16, defect 2: PATCH rewrote the "blind" expectation after the reveal."""
    _, alice, task = _start(world, blind_first=True)
    assert _post(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    review_id = _post(alice, task["id"], "verdict", VERDICT).json()["id"]
    url = f"/api/reviews/{review_id}/"
    response = alice.patch(url, {"expected_label": "dog"}, format="json")
    assert response.status_code == 409
    assert "phase" in response.json()
    assert Review.objects.get(pk=review_id).expected_label == EXPECTATION["expected_label"]
    # Sending the stored expectation back unchanged is fine; the verdict stays editable.
    same = {"expected_label": EXPECTATION["expected_label"], "comment": "second thoughts"}
    response = alice.patch(url, same, format="json")
    assert response.status_code == 200, response.content
    assert Review.objects.get(pk=review_id).comment == "second thoughts"


def test_in_a_revealed_first_round_the_expectation_stays_editable(world):
    _, alice, task = _start(world, blind_first=False)
    assert _post(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    review_id = _post(alice, task["id"], "verdict", VERDICT).json()["id"]
    response = alice.patch(f"/api/reviews/{review_id}/", {"expected_label": "dog"}, format="json")
    assert response.status_code == 200, response.content


def test_a_verdict_cannot_smuggle_a_new_expectation_in_a_blind_first_round(world):
    _, alice, task = _start(world, blind_first=True)
    assert _post(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    response = _post(alice, task["id"], "verdict", VERDICT | {"expected_label": "dog"})
    assert response.status_code == 409
    assert Review.objects.get(task_id=task["id"]).expected_label == EXPECTATION["expected_label"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"description": "d" * (limits.DESCRIPTION + 1)}, "description"),
        ({"name": "n" * (limits.NAME + 1)}, "name"),
        ({"labels": ["a", "b" * (limits.NAME + 1)]}, "labels"),
        ({"lables": ["a", "b"]}, "lables"),
        ({"name": "nul\x00"}, "name"),
    ],
)
def test_project_create_refuses_what_it_would_drop(world, body, field):
    client = world.client(world.scientist)
    base = {"name": "p2", "labels": ["a", "b"]}
    before = Project.objects.count()
    response = client.post("/api/projects/", base | body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert Project.objects.count() == before


def test_instance_comment_with_a_nul_or_over_the_limit_is_refused(world):
    client = world.client(world.scientist)
    url = f"/api/instances/{world.instances[0].pk}/comments/"
    for body in ("nul \x00 here", "c" * (limits.INSTANCE_COMMENT + 1)):
        response = client.post(url, {"body": body}, format="json")
        assert response.status_code == 400, response.content
        assert "body" in response.json()
    assert not InstanceComment.objects.exists()
    assert client.post(url, {"body": "fine"}, format="json").status_code == 201


def test_skip_in_a_closed_round_is_refused_and_the_task_stays(world):
    """Issue 16, defect 14: skip answered 204 in a closed round and reopened the task."""
    review_round, alice, task = _start(world)
    world.client(world.scientist).post(f"/api/rounds/{review_round.pk}/close/")
    response = alice.post(f"/api/tasks/{task['id']}/skip", {"reason": "blurry"}, format="json")
    assert response.status_code == 409
    assert "round" in response.json()
    row = ReviewTask.objects.get(pk=task["id"])
    assert (row.status, row.expert_id) == (TaskStatus.LEASED, world.experts[0].pk)
