"""Inputs that answered 500 answer 400 or 404 (issue 16, defect 6): ids beyond bigint on
the hand-written SQL paths, NUL characters in free JSON, JSON nested too deeply, sampling ids
beyond int64."""

from __future__ import annotations

import pytest

from tests.annotations.review_fixtures import EXPECTATION, build_world, make_round

pytestmark = pytest.mark.django_db

HUGE = 2**63  # one past the largest bigint


@pytest.fixture
def world(media_root):
    return build_world()


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("post", f"/api/rounds/{HUGE}/tasks/next"),
        ("get", f"/api/tasks/{HUGE}/"),
        ("post", f"/api/tasks/{HUGE}/verdict"),
        ("post", f"/api/tasks/{HUGE}/expectation"),
        ("post", f"/api/tasks/{HUGE}/heartbeat"),
        ("get", f"/api/tasks/{HUGE}/image"),
        ("get", f"/api/reviews/{HUGE}/"),
        ("get", f"/api/rounds/{HUGE}/"),
        ("get", f"/rounds/{HUGE}/review/"),
    ],
)
@pytest.mark.parametrize("who", ["expert", "stranger"])
def test_ids_beyond_bigint_are_not_found(world, method, url, who):
    from tests.factories import make_user

    user = world.experts[0] if who == "expert" else make_user("zed")
    client = world.client(user)
    if url.startswith("/rounds/"):
        client.force_login(user)
    response = getattr(client, method)(url, {}, format="json")
    assert response.status_code == 404, (url, response.status_code)


@pytest.mark.parametrize(
    ("phase", "body", "field"),
    [
        ("draft", {"note": "a\x00b"}, "draft"),
        ("expectation", EXPECTATION | {"free_tags": ["x\x00"]}, "free_tags"),
        (
            "expectation",
            EXPECTATION
            | {"evidence": [{"type": "box", "points": [[1, 1], [4, 4]], "concept": "c\x00"}]},
            "evidence",
        ),
    ],
)
def test_nul_characters_in_free_json_are_a_400_naming_the_field(world, phase, body, field):
    review_round = make_round(world)
    alice = world.client(world.experts[0])
    task = alice.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
    method = alice.put if phase == "draft" else alice.post
    response = method(f"/api/tasks/{task['id']}/{phase}", body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()


@pytest.mark.parametrize(
    "url",
    ["/api/projects/", "/api/auth/token/", "/api/tasks/1/draft"],
)
def test_json_nested_too_deeply_is_a_400(world, url):
    client = world.client(world.scientist)
    body = "[" * 50_000 + "]" * 50_000
    response = client.generic("POST", url, body, content_type="application/json")
    assert response.status_code in (400, 404, 405), response.status_code
    if response.status_code == 400:
        assert "JSON" in str(response.json())


def test_json_nested_too_deeply_on_a_create_is_a_400(world):
    client = world.client(world.scientist)
    body = "[" * 50_000 + "]" * 50_000
    response = client.generic("POST", "/api/projects/", body, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]


def test_sampling_ids_beyond_int64_name_the_field(world):
    response = world.client(world.scientist).post(
        f"/api/projects/{world.project.pk}/rounds/preview/",
        {"model_version": world.mv.pk, "sampling": {"parts": [{"kind": "ids", "ids": [HUGE]}]}},
        format="json",
    )
    assert response.status_code == 400, response.content
    assert any(key.startswith("sampling") for key in response.json())


@pytest.mark.parametrize("key", ["round", "instance", "expert"])
def test_review_list_filters_do_not_tell_which_ids_exist(world, key):
    """Issue 16, defect 12: an existing id of another project answered 200, a missing one
    400: an existence oracle. Both are now an empty list."""
    other = build_world(slug="cars")
    review_round = make_round(other)
    foreign = {
        "round": review_round.pk,
        "instance": other.instances[0].pk,
        "expert": other.experts[0].pk,
    }[key]
    client = world.client(world.scientist)
    answers = [client.get(f"/api/reviews/?{key}={value}") for value in (foreign, 99_999_999)]
    assert [a.status_code for a in answers] == [200, 200]
    assert [a.json()["count"] for a in answers] == [0, 0]
    assert client.get(f"/api/reviews/?{key}=abc").status_code == 400
