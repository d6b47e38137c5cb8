"""Logins and tokens (issue 16, defect 9): the login page and the token endpoint are
throttled per client address and per username; tokens expire; a password change revokes
the user's tokens."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "pw-123456"  # tests.factories.make_user's default


@pytest.fixture(autouse=True)
def _fresh_throttles(settings):
    settings.LOGIN_RATE_PER_IP = "100/min"
    settings.LOGIN_RATE_PER_USER = "3/min"
    cache.clear()
    yield
    cache.clear()


def _token(client, username, password=PASSWORD, addr="10.0.0.1"):
    return client.post(
        "/api/auth/token/",
        {"username": username, "password": password},
        format="json",
        REMOTE_ADDR=addr,
    )


def test_token_attempts_are_throttled_per_username_whatever_the_address():
    make_user("ann")
    client = APIClient()
    answers = [_token(client, "ann", "wrong", addr=f"10.0.0.{i}").status_code for i in range(4)]
    assert answers == [400, 400, 400, 429]
    refused = _token(client, "ann", PASSWORD, addr="10.0.0.9")
    assert refused.status_code == 429  # even the right password waits
    assert int(refused["Retry-After"]) > 0
    assert _token(client, "bob-unknown", "x").status_code == 400  # another account is not


def test_token_attempts_are_throttled_per_address(settings):
    settings.LOGIN_RATE_PER_IP = "3/min"
    settings.LOGIN_RATE_PER_USER = "100/min"
    client = APIClient()
    answers = [_token(client, f"user{i}", "x").status_code for i in range(4)]
    assert answers == [400, 400, 400, 429]
    assert _token(client, "user9", "x", addr="10.9.9.9").status_code == 400


def test_the_login_page_is_throttled_and_does_not_check_the_password_then():
    make_user("cat")
    client = Client(REMOTE_ADDR="10.1.1.1")
    for _ in range(3):
        assert (
            client.post("/accounts/login/", {"username": "cat", "password": "no"}).status_code
            == 200
        )
    refused = client.post("/accounts/login/", {"username": "cat", "password": PASSWORD})
    assert refused.status_code == 429
    assert "Too many login attempts" in refused.content.decode()
    assert "_auth_user_id" not in client.session


def test_an_expired_token_is_refused_and_a_new_one_issued(settings):
    user = make_user("dan")
    client = APIClient()
    key = _token(client, "dan").json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/projects/").status_code == 200
    Token.objects.filter(key=key).update(
        created=Token.objects.get(key=key).created - timedelta(days=31)
    )
    from annotations.api.authentication import token_cache

    token_cache.clear()
    refused = client.get("/api/projects/")
    assert refused.status_code == 401
    assert "expired" in refused.json()["detail"]
    new_key = _token(APIClient(), "dan").json()["token"]
    assert new_key != key
    assert Token.objects.filter(user=user).count() == 1
    settings.TOKEN_LIFETIME_DAYS = 0  # never expires
    Token.objects.filter(key=new_key).update(
        created=Token.objects.get(key=new_key).created - timedelta(days=999)
    )
    token_cache.clear()
    client.credentials(HTTP_AUTHORIZATION=f"Token {new_key}")
    assert client.get("/api/projects/").status_code == 200


def test_a_password_change_revokes_the_users_tokens():
    user = make_user("eve")
    other = make_user("fay")
    key = _token(APIClient(), "eve").json()["token"]
    Token.objects.create(user=other)
    user.last_name = "unchanged password"
    user.save()
    assert Token.objects.filter(key=key).exists()
    user.set_password("a-new-password-1")
    user.save()
    assert not Token.objects.filter(user=user).exists()
    assert Token.objects.filter(user=other).exists()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get("/api/projects/").status_code == 401
