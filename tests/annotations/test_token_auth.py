"""Token authentication (``annotations.api.authentication``): scripts send
``Authorization: Token <key>``; one prepared lookup, kept ``TOKEN_CACHE_SECONDS`` per process,
forgotten at once when the token or its user changes in this process."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import make_project, make_user

pytestmark = pytest.mark.django_db


def token_client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_a_token_from_the_login_endpoint_authenticates_its_user():
    user = make_user("alice", password="pw-alice-1")
    make_project(owner=user, slug="mine")
    make_project(slug="theirs")
    got = APIClient().post("/api/auth/token/", {"username": "alice", "password": "pw-alice-1"})
    assert got.status_code == 200
    client = token_client(got.json()["token"])
    listed = client.get("/api/projects/")
    assert listed.status_code == 200
    assert [p["slug"] for p in listed.json()["results"]] == ["mine"]
    created = client.post("/api/projects/", {"name": "New", "slug": "new", "labels": ["a", "b"]})
    assert created.status_code == 201, created.content
    assert Token.objects.get(key=got.json()["token"]).user == user
    assert user.memberships.get(project__slug="new").role == "scientist"


def _statements(client) -> list[str]:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get("/api/architectures/").status_code == 200
    # The endpoint itself reads nothing; on PostgreSQL the lookup is prepared once per
    # connection and then EXECUTEd.
    return [q["sql"] for q in ctx.captured_queries if not q["sql"].startswith("PREPARE ")]


def test_the_lookup_is_one_query_then_cached(settings):
    settings.TOKEN_CACHE_SECONDS = 30
    user = make_user("alice")
    client = token_client(Token.objects.create(user=user).key)
    assert len(_statements(client)) == 1
    assert _statements(client) == []
    settings.TOKEN_CACHE_SECONDS = 0
    assert len(_statements(client)) == 1
    assert len(_statements(client)) == 1


def test_changes_elsewhere_are_noticed_within_the_cache_time(settings, monkeypatch):
    """Another process's change sends no signal here (a queryset update sends none either):
    the cached entry serves until it is TOKEN_CACHE_SECONDS old, then the lookup refuses."""
    from annotations.api import authentication

    settings.TOKEN_CACHE_SECONDS = 10
    clock = [1000.0]
    monkeypatch.setattr(authentication.token_cache, "clock", lambda: clock[0])
    user = make_user("alice")
    client = token_client(Token.objects.create(user=user).key)
    assert client.get("/api/projects/").status_code == 200
    type(user).objects.filter(pk=user.pk).update(is_active=False)
    clock[0] += 9
    assert client.get("/api/projects/").status_code == 200
    clock[0] += 2
    refused = client.get("/api/projects/")
    assert refused.status_code == 401
    assert refused.json() == {"detail": "User inactive or deleted."}


def test_each_request_gets_its_own_user_object(settings):
    from annotations.api.authentication import PreparedTokenAuthentication

    settings.TOKEN_CACHE_SECONDS = 30
    user = make_user("alice")
    key = Token.objects.create(user=user).key
    first, _ = PreparedTokenAuthentication().authenticate_credentials(key)
    first.first_name = "changed by one request"
    second, token = PreparedTokenAuthentication().authenticate_credentials(key)
    assert second is not first
    assert second.pk == user.pk
    assert second.first_name == ""
    assert token.key == key


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("Token not-a-key", "Invalid token."),
        ("Token", "Invalid token header. No credentials provided."),
        ("Token a b", "Invalid token header. Token string should not contain spaces."),
    ],
)
def test_bad_tokens_are_refused_with_drfs_messages(header, detail):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get("/api/projects/")
    assert response.status_code == 401
    assert response.json() == {"detail": detail}
    assert response["WWW-Authenticate"] == "Token"


def test_revocation_and_deactivation_take_effect_on_the_next_request(settings):
    settings.TOKEN_CACHE_SECONDS = 30  # this process's own changes clear its cache
    user = make_user("alice")
    token = Token.objects.create(user=user)
    client = token_client(token.key)
    assert client.get("/api/projects/").status_code == 200
    user.is_active = False
    user.save()
    refused = client.get("/api/projects/")
    assert refused.status_code == 401
    assert refused.json() == {"detail": "User inactive or deleted."}
    user.is_active = True
    user.save()
    assert client.get("/api/projects/").status_code == 200
    token.delete()
    gone = client.get("/api/projects/")
    assert gone.status_code == 401
    assert gone.json() == {"detail": "Invalid token."}
