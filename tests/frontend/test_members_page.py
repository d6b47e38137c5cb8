"""The members page: scientists see who holds which role, add a member by username and
remove one (issue 16, defect 3: there was no page to remove a member)."""

from __future__ import annotations

import pytest
from django.test import Client

from annotations.models import Membership, ReviewTask, Role, TaskStatus
from annotations.services import reviews
from tests.annotations.review_fixtures import build_world, make_round
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_scientists_add_and_remove_members_from_the_page(media_root):
    world = build_world()
    url = f"/projects/{world.project.pk}/members/"
    client = _client(world.scientist)
    page = client.get(url).content.decode()
    assert world.experts[0].username in page
    assert f'href="{url}"' in client.get(f"/projects/{world.project.pk}/").content.decode()

    make_user("newcomer")
    added = client.post(url, {"action": "add", "username": "newcomer", "role": "expert"})
    assert added.status_code == 302
    assert Membership.objects.filter(user__username="newcomer", role=Role.EXPERT).exists()

    review_round = make_round(world)
    expert = world.experts[0]
    task = reviews.task_next(review_round=review_round, expert=expert)
    removed = client.post(url, {"action": "remove", "username": expert.username, "role": "expert"})
    assert removed.status_code == 302
    assert not Membership.objects.filter(user=expert, project=world.project).exists()
    assert ReviewTask.objects.get(pk=task.pk).status == TaskStatus.OPEN
    assert "no longer expert" in client.get(url).content.decode()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"action": "add", "username": "ghost", "role": "expert"}, "No user with that username"),
        ({"action": "add", "username": "", "role": "expert"}, "This field is required"),
        (
            {"action": "remove", "username": "SCIENTIST", "role": "scientist"},
            "at least one scientist",
        ),
    ],
)
def test_bad_member_changes_say_why_and_change_nothing(media_root, body, message):
    world = build_world()
    if body["username"] == "SCIENTIST":
        body = body | {"username": world.scientist.username}
    before = Membership.objects.count()
    response = _client(world.scientist).post(f"/projects/{world.project.pk}/members/", body)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert Membership.objects.count() == before


@pytest.mark.parametrize("role", ["approver", "viewer", "expert"])
def test_only_scientists_reach_the_members_page(media_root, role):
    world = build_world()
    user = world.experts[0] if role == "expert" else getattr(world, role)
    assert _client(user).get(f"/projects/{world.project.pk}/members/").status_code == 403
    assert (
        _client(make_user("outsider")).get(f"/projects/{world.project.pk}/members/").status_code
        == 404
    )
