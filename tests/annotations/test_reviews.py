"""Review rounds: leasing, the two phases, drafts, idempotency, edits, progress, e-mails."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from annotations.models import (
    LeaseExpiry,
    Review,
    ReviewDraft,
    ReviewTask,
    ReviewVersion,
    TaskStatus,
)
from annotations.services import reviews
from tests.annotations.review_fixtures import EXPECTATION, VERDICT, build_world, make_round

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(media_root):
    return build_world()


def next_task(client, review_round):
    return client.post(f"/api/rounds/{review_round.pk}/tasks/next")


def submit(client, task_id, phase, body, key=None):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key else {}
    return client.post(f"/api/tasks/{task_id}/{phase}", body, format="json", **headers)


# --- rounds -------------------------------------------------------------------------------


def test_create_round_by_api_with_preview(world, django_capture_on_commit_callbacks):
    scientist = world.client(world.scientist)
    strategy = {"parts": [{"kind": "all_errors"}, {"kind": "control", "n": 2}]}
    preview = scientist.post(
        f"/api/projects/{world.project.pk}/rounds/preview/",
        {"model_version": world.mv.pk, "sampling": strategy},
        format="json",
    )
    assert preview.status_code == 200, preview.content
    assert preview.json()["parts"] == {"all_errors": 3, "control": 2}
    assert preview.json()["total"] == 5
    with django_capture_on_commit_callbacks(execute=True):
        response = scientist.post(
            f"/api/projects/{world.project.pk}/rounds/",
            {
                "model_version": world.mv.pk,
                "name": "first",
                "sampling": strategy,
                "overlap": 2,
                "experts": [u.username for u in world.experts],
                "explanation_method": "",
            },
            format="json",
        )
    assert response.status_code == 201, response.content
    assert ReviewTask.objects.filter(round_id=response.json()["id"]).count() == 10
    assert len(mail.outbox) == 3
    # Blind-first: the round's name ("first ...") is not shown to experts, a neutral title is.
    assert "first" not in mail.outbox[0].subject
    assert f"Review round {response.json()['id']}" in mail.outbox[0].subject


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"sampling": {"parts": [{"kind": "magic"}]}}, "sampling"),
        ({"overlap": 0}, "overlap"),
        ({"experts": ["nobody"]}, "experts"),
        ({"questions": ["mood"]}, "questions"),
        ({"explanation_method": "lime"}, "explanation_method"),
        ({"model_version": 999999}, "model_version"),
        # Rounds that could never work (issue 15): more reviews per instance than experts,
        # a due date already past, a sample with no instance.
        ({"overlap": 3}, "overlap"),
        ({"experts": [], "overlap": 1}, "overlap"),
        ({"due_at": "2020-01-01T00:00:00Z"}, "due_at"),
        ({"sampling": {"parts": [{"kind": "ids", "ids": []}]}}, "sampling"),
        ({"name": "x" * 201}, "name"),
        ({"description": "x" * 5001}, "description"),
        ({"naem": "typo"}, "naem"),
    ],
)
def test_bad_round_input(world, body, field):
    base = {
        "model_version": world.mv.pk,
        "name": "r",
        "sampling": {"parts": [{"kind": "all_errors"}]},
        "experts": [u.username for u in world.experts[:2]],
    }
    response = world.client(world.scientist).post(
        f"/api/projects/{world.project.pk}/rounds/", base | body, format="json"
    )
    assert response.status_code == 400, response.content
    assert any(k.startswith(field) for k in response.json()), response.json()


def test_a_viewer_cannot_be_made_an_expert_of_a_round(world):
    with pytest.raises(Exception, match="not experts"):
        reviews.round_create(
            model_version=world.mv,
            name="r",
            created_by=world.scientist,
            sampling_strategy={"parts": [{"kind": "all_errors"}]},
            experts=[world.viewer],
        )


# --- leasing ------------------------------------------------------------------------------


def test_lease_is_returned_to_the_same_expert_and_never_twice_the_same_instance(world):
    review_round = make_round(world, overlap=2)
    client = world.client(world.experts[0])
    first = next_task(client, review_round).json()
    assert next_task(client, review_round).json()["id"] == first["id"]
    seen = set()
    for _ in range(len(world.instances)):
        task = next_task(client, review_round).json()
        assert task["instance"]["id"] not in seen
        seen.add(task["instance"]["id"])
        assert submit(client, task["id"], "expectation", EXPECTATION).status_code == 200
        assert submit(client, task["id"], "verdict", VERDICT).status_code == 200
    assert next_task(client, review_round).status_code == 204  # all instances done by them
    assert len(seen) == len(world.instances)


def test_fewer_reviews_first_and_overlap_is_a_ceiling(world):
    review_round = make_round(world, overlap=2)
    handed = []
    for expert in world.experts:
        client = world.client(expert)
        for _ in range(len(world.instances)):
            response = next_task(client, review_round)
            if response.status_code == 204:
                break
            task = response.json()
            handed.append((task["instance"]["id"], ReviewTask.objects.get(pk=task["id"]).slot))
            submit(client, task["id"], "expectation", EXPECTATION)
            submit(client, task["id"], "verdict", VERDICT)
    # Every instance got its first review before any got a second one.
    first_second = [slot for _, slot in handed]
    assert first_second == sorted(first_second)
    per_instance = {}
    for instance_id, _ in handed:
        per_instance[instance_id] = per_instance.get(instance_id, 0) + 1
    assert set(per_instance.values()) == {2}
    assert len(handed) == 2 * len(world.instances)


def test_lease_expiry_returns_the_task_and_a_late_submit_is_409_keeping_the_draft(world):
    review_round = make_round(world, lease_seconds=60)
    alice, bob = (world.client(u) for u in world.experts[:2])
    task = next_task(alice, review_round).json()
    draft = alice.put(f"/api/tasks/{task['id']}/draft", {"expected_label": "dog"}, format="json")
    assert draft.status_code == 200
    ReviewTask.objects.filter(pk=task["id"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    late = submit(alice, task["id"], "expectation", EXPECTATION)
    assert late.status_code == 409
    assert "expired" in late.json()["lease"][0]
    assert ReviewDraft.objects.get(expert=world.experts[0]).data == {"expected_label": "dog"}
    # The slot goes back to the pool: bob gets it, with no trace of alice's draft.
    bob_task = next_task(bob, review_round).json()
    assert bob_task["id"] == task["id"]
    assert bob_task["draft"] == {}
    assert LeaseExpiry.objects.filter(expert=world.experts[0]).count() == 1
    progress = world.client(world.scientist).get(f"/api/rounds/{review_round.pk}/progress/").json()
    assert progress["expired"] == 1
    row = next(r for r in progress["experts"] if r["expert"] == world.experts[0].pk)
    assert row["expired"] == 1


def test_draft_comes_back_when_the_expert_gets_the_task_again(world):
    review_round = make_round(world, lease_seconds=60)
    alice = world.client(world.experts[0])
    task = next_task(alice, review_round).json()
    alice.put(f"/api/tasks/{task['id']}/draft", {"expected_label": "bird"}, format="json")
    ReviewTask.objects.filter(pk=task["id"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    reviews.leases_expire()
    again = next_task(alice, review_round).json()
    if again["instance"]["id"] == task["instance"]["id"]:
        assert again["draft"] == {"expected_label": "bird"}


def test_heartbeat_extends_and_skip_releases(world):
    review_round = make_round(world, lease_seconds=60)
    alice = world.client(world.experts[0])
    task = next_task(alice, review_round).json()
    before = ReviewTask.objects.get(pk=task["id"]).lease_expires_at
    assert alice.post(f"/api/tasks/{task['id']}/heartbeat").status_code == 200
    assert ReviewTask.objects.get(pk=task["id"]).lease_expires_at >= before
    assert alice.post(f"/api/tasks/{task['id']}/skip", {"reason": ""}).status_code == 400
    assert alice.post(f"/api/tasks/{task['id']}/skip", {"reason": "blurry"}).status_code == 204
    assert ReviewTask.objects.get(pk=task["id"]).status == TaskStatus.OPEN
    offered = {next_task(alice, review_round).json()["instance"]["id"]}
    assert task["instance"]["id"] not in offered


# --- review capture -------------------------------------------------------------------------


def test_blind_first_two_phases_and_reveal(world):
    review_round = make_round(world)
    alice = world.client(world.experts[0])
    task = next_task(alice, review_round).json()
    assert task["phase"] == "expectation"
    assert task["revealed"] is False
    for hidden in ("prediction", "ground_truth", "saliency"):
        assert hidden not in task
    early = submit(alice, task["id"], "verdict", VERDICT)
    assert early.status_code == 409
    assert "blind-first" in early.json()["phase"][0]
    revealed = submit(alice, task["id"], "expectation", EXPECTATION).json()
    assert revealed["phase"] == "verdict"
    assert revealed["prediction"]["label"] in ("cat", "dog", "bird")
    assert revealed["ground_truth"] is not None
    done = submit(alice, task["id"], "verdict", VERDICT | {"client_seconds": 12.5})
    assert done.status_code == 200, done.content
    review = Review.objects.get()
    assert (review.expected_label, review.severity, review.acceptable) == ("cat", 3, False)
    assert review.evidence == [{"type": "box", "points": [[1.0, 1.0], [10.0, 12.0]]}]
    assert review.client_seconds == 12.5
    assert review.server_seconds is not None
    assert review.server_seconds >= 0
    assert ReviewTask.objects.get(pk=task["id"]).status == TaskStatus.SUBMITTED


def test_without_blind_first_one_submit_carries_everything(world):
    review_round = make_round(world, blind_first=False)
    alice = world.client(world.experts[0])
    task = next_task(alice, review_round).json()
    assert task["revealed"] is True
    assert "prediction" in task
    response = submit(alice, task["id"], "verdict", EXPECTATION | VERDICT)
    assert response.status_code == 200, response.content
    assert Review.objects.get().expected_label == "cat"


def test_idempotent_submit(world):
    review_round = make_round(world)
    alice = world.client(world.experts[0])
    task = next_task(alice, review_round).json()
    first = submit(alice, task["id"], "expectation", EXPECTATION, key="k-exp")
    retry = submit(alice, task["id"], "expectation", EXPECTATION, key="k-exp")
    assert retry.status_code == first.status_code == 200
    assert retry["Idempotent-Replayed"] == "true"
    one = submit(alice, task["id"], "verdict", VERDICT, key="k-ver")
    two = submit(alice, task["id"], "verdict", VERDICT, key="k-ver")
    assert one.json() == two.json()
    assert Review.objects.count() == 1
    assert ReviewVersion.objects.count() == 0
    # The key belongs to that request: reusing it elsewhere is refused.
    other = submit(alice, task["id"], "expectation", EXPECTATION, key="k-ver")
    assert other.status_code == 422


def test_a_retry_that_could_succeed_again_replays_and_changes_nothing(world):
    """The second attempt runs, collides on the key and is rolled back: its body is ignored."""
    review_round = make_round(world)
    alice = world.client(world.experts[0])
    task = next_task(alice, review_round).json()
    first = submit(alice, task["id"], "expectation", EXPECTATION, key="k1")
    changed = EXPECTATION | {"expected_label": "dog"}
    retry = submit(alice, task["id"], "expectation", changed, key="k1")
    assert retry["Idempotent-Replayed"] == "true"
    assert retry.json() == first.json()
    assert Review.objects.get().expected_label == "cat"


def test_blind_first_expectation_is_final_once_revealed(world):
    review_round = make_round(world)
    alice = world.client(world.experts[0])
    task = next_task(alice, review_round).json()
    assert submit(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    again = submit(alice, task["id"], "expectation", EXPECTATION | {"expected_label": "dog"})
    assert again.status_code == 409
    assert "revealed" in again.json()["phase"][0]
    assert Review.objects.get().expected_label == "cat"


def test_without_blind_first_the_expectation_may_change_before_the_verdict(world):
    review_round = make_round(world, blind_first=False)
    alice = world.client(world.experts[0])
    task = next_task(alice, review_round).json()
    assert submit(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    changed = EXPECTATION | {"expected_label": "dog"}
    assert submit(alice, task["id"], "expectation", changed).status_code == 200
    assert Review.objects.get().expected_label == "dog"


def test_an_instance_revealed_to_an_expert_is_not_offered_to_them_again(world):
    """After the reveal their view is no longer blind: an expired lease does not bring the
    instance back to them (others still get it)."""
    review_round = make_round(world, lease_seconds=60)
    alice, bob = (world.client(u) for u in world.experts[:2])
    task = next_task(alice, review_round).json()
    assert submit(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    ReviewTask.objects.filter(pk=task["id"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    reviews.leases_expire()
    offered = []
    while (response := next_task(alice, review_round)).status_code == 200:
        body = response.json()
        offered.append(body["instance"]["id"])
        assert submit(alice, body["id"], "expectation", EXPECTATION).status_code == 200
        assert submit(alice, body["id"], "verdict", VERDICT).status_code == 200
    assert task["instance"]["id"] not in offered
    assert len(offered) == len(world.instances) - 1
    assert next_task(bob, review_round).json()["instance"]["id"] == task["instance"]["id"]


def test_a_closed_round_takes_no_more_work(world):
    review_round = make_round(world)
    alice = world.client(world.experts[0])
    task = next_task(alice, review_round).json()
    reviews.round_close(review_round=review_round)
    for method, path, body in [
        ("post", f"/api/tasks/{task['id']}/heartbeat", None),
        ("put", f"/api/tasks/{task['id']}/draft", {"expected_label": "dog"}),
        ("post", f"/api/tasks/{task['id']}/expectation", EXPECTATION),
        ("post", f"/api/tasks/{task['id']}/verdict", EXPECTATION | VERDICT),
    ]:
        response = getattr(alice, method)(path, body, format="json")
        assert response.status_code == 409, (path, response.content)
        assert "closed" in response.json()["round"][0]
    assert not Review.objects.exists()
    assert next_task(alice, review_round).status_code == 409


def test_another_experts_task_is_404(world):
    review_round = make_round(world)
    task = next_task(world.client(world.experts[0]), review_round).json()
    bob = world.client(world.experts[1])
    assert bob.get(f"/api/tasks/{task['id']}/").status_code == 404
    assert submit(bob, task["id"], "expectation", EXPECTATION).status_code == 404
    assert bob.put(f"/api/tasks/{task['id']}/draft", {}, format="json").status_code == 404
    assert bob.post(f"/api/tasks/{task['id']}/skip", {"reason": "x"}).status_code == 404


@pytest.mark.parametrize(
    ("phase", "change", "field"),
    [
        ("expectation", {"expected_label": "horse"}, "expected_label"),
        ("expectation", {"expected_confidence": 6}, "expected_confidence"),
        ("expectation", {"evidence": [{"type": "box", "points": [[1, 1], [40, 5]]}]}, "evidence"),
        (
            "expectation",
            {"evidence": [{"type": "polygon", "points": [[1, 1], [2, 2]]}]},
            "evidence",
        ),
        ("expectation", {"concepts": ["wings"]}, "concepts"),
        ("verdict", {"severity": 5}, "severity"),
        ("verdict", {"severity": 0}, "severity"),
        ("verdict", {"prediction_verdict": "maybe"}, "prediction_verdict"),
        ("verdict", {"feature_verdict": "nice"}, "feature_verdict"),
        ("verdict", {"acceptable": "yes"}, "acceptable"),
        ("verdict", {"reason": "because"}, "reason"),
    ],
)
def test_bad_review_input_names_the_field_and_loses_nothing(world, phase, change, field):
    review_round = make_round(world)
    alice = world.client(world.experts[0])
    task = next_task(alice, review_round).json()
    alice.put(f"/api/tasks/{task['id']}/draft", {"note": "keep me"}, format="json")
    if phase == "verdict":
        assert submit(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    body = (EXPECTATION if phase == "expectation" else VERDICT) | change
    response = submit(alice, task["id"], phase, body)
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert ReviewDraft.objects.get(expert=world.experts[0]).data == {"note": "keep me"}
    assert ReviewTask.objects.get(pk=task["id"]).status == TaskStatus.LEASED
    if phase == "verdict":
        assert Review.objects.get().expected_label == "cat"  # the expectation stays


def test_edit_keeps_versions_until_the_round_closes(world):
    review_round = make_round(world)
    alice = world.client(world.experts[0])
    task = next_task(alice, review_round).json()
    submit(alice, task["id"], "expectation", EXPECTATION)
    review_id = submit(alice, task["id"], "verdict", VERDICT).json()["id"]
    edited = alice.patch(
        f"/api/reviews/{review_id}/", {"severity": 1, "comment": "minor"}, format="json"
    )
    assert edited.status_code == 200, edited.content
    assert edited.json()["version"] == 2
    old = ReviewVersion.objects.get()
    assert (old.version, old.data["severity"], old.data["comment"]) == (1, 3, "odd")
    bad = alice.patch(f"/api/reviews/{review_id}/", {"severity": 9}, format="json")
    assert bad.status_code == 400
    assert Review.objects.get().severity == 1
    bob = world.client(world.experts[1])
    assert (
        bob.patch(f"/api/reviews/{review_id}/", {"severity": 2}, format="json").status_code == 404
    )
    world.client(world.scientist).post(f"/api/rounds/{review_round.pk}/close/")
    closed = alice.patch(f"/api/reviews/{review_id}/", {"severity": 2}, format="json")
    assert closed.status_code == 409
    assert next_task(alice, review_round).status_code == 409


def test_completion_mail_progress_and_digest(world, django_capture_on_commit_callbacks):
    review_round = make_round(world)
    mail.outbox.clear()
    assert reviews.digests_send() == 3
    assert f"Review round {review_round.pk}:" in mail.outbox[0].body  # not the name "r1"
    mail.outbox.clear()
    clients = [world.client(u) for u in world.experts]
    done = 0
    while done < len(world.instances):
        for client in clients:
            response = next_task(client, review_round)
            if response.status_code == 204:
                continue
            task = response.json()
            submit(client, task["id"], "expectation", EXPECTATION)
            with django_capture_on_commit_callbacks(execute=True):
                submit(client, task["id"], "verdict", VERDICT)
            done += 1
    progress = world.client(world.scientist).get(f"/api/rounds/{review_round.pk}/progress/").json()
    assert progress["submitted"] == progress["total"] == len(world.instances)
    assert sum(r["submitted"] for r in progress["experts"]) == len(world.instances)
    completion = [m for m in mail.outbox if "complete" in m.subject]
    assert len(completion) == 1
    assert completion[0].to == [world.scientist.email]
    reviews.round_check_complete(round_id=review_round.pk)
    assert len([m for m in mail.outbox if "complete" in m.subject]) == 1  # said once


def test_expert_sees_only_own_progress_row(world):
    review_round = make_round(world)
    body = world.client(world.experts[0]).get(f"/api/rounds/{review_round.pk}/progress/").json()
    assert [r["expert"] for r in body["experts"]] == [world.experts[0].pk]


@pytest.mark.parametrize("how", ["expiry", "skip"])
def test_an_expectation_never_reaches_the_next_expert(world, how):
    review_round = make_round(world, lease_seconds=60)
    alice, bob = (world.client(u) for u in world.experts[:2])
    task = next_task(alice, review_round).json()
    assert submit(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    if how == "expiry":
        ReviewTask.objects.filter(pk=task["id"]).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
    else:
        alice.post(f"/api/tasks/{task['id']}/skip", {"reason": "unsure"})
    bob_task = next_task(bob, review_round).json()
    assert bob_task["id"] == task["id"]
    assert bob_task["review"] is None
    assert bob_task["revealed"] is False
    assert "whiskers" not in str(bob_task)
    # Alice's answers are kept as her draft, not lost.
    assert ReviewDraft.objects.get(expert=world.experts[0]).data["expected_label"] == "cat"
    assert not Review.objects.exists()


def test_review_data_is_what_the_review_serializer_gives(world):
    """The hot path writes reviews out without building DRF's serializer; both must agree,
    whatever state the review is in."""
    from annotations.api.review_serializers import ReviewOutput, review_data

    review_round = make_round(world, blind_first=False)
    alice = world.client(world.experts[0])
    task = next_task(alice, review_round).json()
    assert submit(alice, task["id"], "expectation", EXPECTATION).status_code == 200
    states = [Review.objects.get()]  # expectation only: verdict fields empty, times None
    verdict = submit(alice, task["id"], "verdict", VERDICT | {"client_seconds": 12.5})
    assert verdict.status_code == 200
    states.append(Review.objects.get())
    assert verdict.json() == ReviewOutput(states[-1]).data
    for review in states:
        assert review_data(review) == ReviewOutput(review).data
    assert states[-1].submitted_at is not None
    assert states[-1].severity == 3


def test_the_last_verdict_tells_the_scientist_even_when_slots_were_leased_at_once(
    world, django_capture_on_commit_callbacks
):
    """A verdict checks completion only once no slot is open; the last of several leased
    slots to be submitted still sends the one completion mail."""
    review_round = reviews.round_create(
        model_version=world.mv,
        name="two",
        sampling_strategy={"parts": [{"kind": "ids", "ids": [i.pk for i in world.instances[:2]]}]},
        created_by=world.scientist,
        experts=world.experts,
        explanation_method="",
    )
    alice, bob = (world.client(u) for u in world.experts[:2])
    a, b = (next_task(c, review_round).json() for c in (alice, bob))  # nothing open now
    mail.outbox.clear()
    for client, task in ((alice, a), (bob, b)):
        assert submit(client, task["id"], "expectation", EXPECTATION).status_code == 200
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            assert submit(client, task["id"], "verdict", VERDICT).status_code == 200
        assert len(callbacks) == 1  # the completion check
        sent = [m for m in mail.outbox if "complete" in m.subject]
        assert len(sent) == (1 if task is b else 0)


def test_no_completion_check_while_slots_are_open(world, django_capture_on_commit_callbacks):
    review_round = make_round(world)
    alice = world.client(world.experts[0])
    task = next_task(alice, review_round).json()
    submit(alice, task["id"], "expectation", EXPECTATION)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        assert submit(alice, task["id"], "verdict", VERDICT).status_code == 200
    assert callbacks == []
    assert ReviewTask.objects.filter(round=review_round, status=TaskStatus.OPEN).count() == 5
