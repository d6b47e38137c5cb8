"""A removed member loses access at once (issue 16, defect 3): after their membership is
deleted, their task (prediction, ground truth), its image and saliency, heartbeat, draft,
submits and review edits all answered 200, because task and review access checked only
``expert_id``. Now: 404 everywhere, their leases released, their submitted reviews kept."""

from __future__ import annotations

import pytest

from annotations.models import Membership, Review, ReviewDraft, ReviewTask, Role, TaskStatus
from tests.annotations.review_fixtures import EXPECTATION, VERDICT, build_world, make_round

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(media_root):
    return build_world(with_files=True)


def _remove(world, user, role=None):
    query = f"?role={role}" if role else ""
    return world.client(world.scientist).delete(
        f"/api/projects/{world.project.pk}/members/{user.username}/{query}"
    )


def test_a_removed_expert_reaches_nothing_and_their_lease_is_released(world):
    review_round = make_round(world)
    alice_user = world.experts[0]
    alice = world.client(alice_user)
    done = alice.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
    alice.post(f"/api/tasks/{done['id']}/expectation", EXPECTATION, format="json")
    review_id = alice.post(f"/api/tasks/{done['id']}/verdict", VERDICT, format="json").json()["id"]
    held = alice.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
    alice.post(f"/api/tasks/{held['id']}/expectation", EXPECTATION, format="json")

    response = _remove(world, alice_user)
    assert response.status_code == 200, response.content
    assert response.json() == {"username": alice_user.username, "removed_roles": ["expert"]}

    for method, url, body in [
        ("get", f"/api/tasks/{held['id']}/", None),
        ("get", f"/api/tasks/{held['id']}/image", None),
        ("get", f"/api/tasks/{held['id']}/saliency/overlay", None),
        ("post", f"/api/tasks/{held['id']}/heartbeat", None),
        ("put", f"/api/tasks/{held['id']}/draft", {"a": 1}),
        ("post", f"/api/tasks/{held['id']}/verdict", VERDICT),
        ("get", f"/api/tasks/{done['id']}/", None),
        ("get", f"/api/reviews/{review_id}/", None),
        ("patch", f"/api/reviews/{review_id}/", {"comment": "after removal"}),
        ("post", f"/api/rounds/{review_round.pk}/tasks/next", None),
    ]:
        got = (
            getattr(alice, method)(url, body, format="json")
            if body
            else getattr(alice, method)(url)
        )
        assert got.status_code == 404, (method, url, got.status_code)

    task = ReviewTask.objects.get(pk=held["id"])
    assert (task.status, task.expert_id, task.expectation_at) == (TaskStatus.OPEN, None, None)
    # Their blind expectation went to their draft (as on expiry), not to the next expert.
    assert not Review.objects.filter(task_id=held["id"]).exists()
    draft = ReviewDraft.objects.get(expert=alice_user, instance_id=task.instance_id)
    assert draft.data["expected_label"] == EXPECTATION["expected_label"]
    assert not review_round.experts.filter(pk=alice_user.pk).exists()
    assert Review.objects.get(pk=review_id).comment == VERDICT["comment"]  # kept, unchanged
    # Another expert can take the released task.
    bob = world.client(world.experts[1])
    assert bob.post(f"/api/rounds/{review_round.pk}/tasks/next").status_code == 200


def test_removing_one_role_keeps_the_others(world):
    user = world.experts[0]
    review_round = make_round(world, blind_first=False)
    Membership.objects.create(project=world.project, user=user, role=Role.VIEWER)
    task = world.client(user).post(f"/api/rounds/{review_round.pk}/tasks/next").json()
    assert _remove(world, user, "viewer").json()["removed_roles"] == ["viewer"]
    assert world.client(user).get(f"/api/tasks/{task['id']}/").status_code == 200


@pytest.mark.parametrize(
    ("who", "role", "status", "field"),
    [
        ("scientist", None, 400, "role"),  # the last scientist
        ("expert", "approver", 400, "role"),  # a role they do not hold
        ("expert", "boss", 400, "role"),
        ("nobody", None, 404, None),
    ],
)
def test_bad_removals_are_refused_and_change_nothing(world, who, role, status, field):
    from tests.factories import make_user

    user = {"scientist": world.scientist, "expert": world.experts[0]}.get(who) or make_user(who)
    before = Membership.objects.count()
    response = _remove(world, user, role)
    assert response.status_code == status, response.content
    if field:
        assert field in response.json()
    assert Membership.objects.count() == before


def test_only_scientists_remove_members_and_list_them(world):
    url = f"/api/projects/{world.project.pk}/members/{world.experts[0].username}/"
    for user in (world.approver, world.viewer, world.experts[1]):
        assert world.client(user).delete(url).status_code == 403
    listed = world.client(world.scientist).get(f"/api/projects/{world.project.pk}/members/")
    assert {"username": world.experts[0].username, "role": "expert"} in listed.json()
    assert (
        world.client(world.viewer).get(f"/api/projects/{world.project.pk}/members/").status_code
        == 403
    )
