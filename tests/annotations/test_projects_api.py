import pytest
from django.core.exceptions import ValidationError
from rest_framework.test import APIClient

from annotations import services
from annotations.models import Membership, Project, Role
from tests.factories import add_member, make_project, make_user

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_project_create_makes_creator_scientist():
    owner = make_user("ana")
    project = services.project_create(name="Rooms", labels=["a", "b"], created_by=owner)
    assert project.slug == "rooms"
    assert Membership.objects.filter(project=project, user=owner, role=Role.SCIENTIST).exists()


@pytest.mark.parametrize(
    ("labels", "field"),
    [(["a"], "labels"), (["a", "a"], "labels"), (["a", " "], "labels")],
)
def test_project_create_rejects_bad_labels(labels, field):
    with pytest.raises(ValidationError) as exc:
        services.project_create(name="X", labels=labels, created_by=make_user("u"))
    assert field in exc.value.message_dict


def test_api_create_project_and_duplicate_slug_names_field():
    client = client_for(make_user("ana"))
    ok = client.post("/api/projects/", {"name": "Rooms", "labels": ["a", "b"]}, format="json")
    assert ok.status_code == 201, ok.content
    again = client.post("/api/projects/", {"name": "Rooms", "labels": ["a", "b"]}, format="json")
    assert again.status_code == 400
    assert "slug" in again.json()
    assert Project.objects.count() == 1


def test_api_requires_authentication():
    assert APIClient().get("/api/projects/").status_code in (401, 403)


def test_non_member_gets_404_and_sees_no_project():
    project = make_project()
    stranger = client_for(make_user("stranger"))
    assert stranger.get(f"/api/projects/{project.pk}/").status_code == 404
    assert stranger.get("/api/projects/").json()["count"] == 0


@pytest.mark.parametrize(
    ("role", "project_code", "datasets_code", "import_code"),
    [
        (Role.SCIENTIST, 200, 200, 400),  # 400: the scientist may import; the body is empty
        (Role.APPROVER, 200, 200, 403),
        (Role.EXPERT, 200, 403, 403),
        (Role.VIEWER, 200, 403, 403),
    ],
)
def test_role_matrix(role, project_code, datasets_code, import_code):
    project = make_project()
    user = add_member(project, f"user-{role}", role)
    client = client_for(user)
    assert client.get(f"/api/projects/{project.pk}/").status_code == project_code
    assert client.get(f"/api/projects/{project.pk}/datasets/").status_code == datasets_code
    assert client.post(f"/api/projects/{project.pk}/datasets/import/").status_code == import_code


def test_add_member_by_scientist_only():
    project = make_project()
    scientist = project.memberships.get().user
    expert = add_member(project, "eve", Role.EXPERT)
    make_user("bob")
    denied = client_for(expert).post(
        f"/api/projects/{project.pk}/members/", {"username": "bob", "role": "viewer"}
    )
    assert denied.status_code == 403
    ok = client_for(scientist).post(
        f"/api/projects/{project.pk}/members/", {"username": "bob", "role": "viewer"}
    )
    assert ok.status_code == 201
    bad_role = client_for(scientist).post(
        f"/api/projects/{project.pk}/members/", {"username": "bob", "role": "boss"}
    )
    assert bad_role.status_code == 400
    assert "role" in bad_role.json()


def test_openapi_schema_is_served():
    client = client_for(make_user("ana"))
    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    assert "/api/projects/{project_id}/datasets/import/" in response.json()["paths"]


def test_api_docs_page_uses_no_cdn():
    client = client_for(make_user("ana"))
    html = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower()


def test_lists_are_paginated_and_filtered():
    owner = make_user("ana")
    for slug in ("a", "b", "c"):
        make_project(owner=owner, slug=slug)
    client = client_for(owner)
    body = client.get("/api/projects/?slug=b").json()
    assert body["count"] == 1
    assert body["results"][0]["slug"] == "b"
    assert {"count", "next", "previous", "results"} <= set(client.get("/api/projects/").json())
