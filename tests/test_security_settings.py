"""Transport security and Content-Security-Policy (issue 16, defect 10): the settings that
production gets from its environment, `check --deploy` without a warning under them, and a
policy on every response."""

from __future__ import annotations

import re
import runpy
import secrets
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from django.test import Client, override_settings

from tests.factories import make_project, make_user

SETTINGS_FILE = Path(__file__).resolve().parent.parent / "feedback_service" / "settings.py"
# Every variable the transport settings read; a developer's shell must not leak into a test.
SECURITY_VARIABLES = [
    "DEBUG",
    "HTTPS",
    "SECURE_SSL_REDIRECT",
    "TRUST_X_FORWARDED_PROTO",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "CSP_REPORT_URI",
]
SECURITY_SETTINGS = [
    "SECURE_SSL_REDIRECT",
    "SECURE_REDIRECT_EXEMPT",
    "SECURE_HSTS_SECONDS",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS",
    "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE",
    "CSRF_COOKIE_SECURE",
    "SILENCED_SYSTEM_CHECKS",
]
PRODUCTION = {
    "DEBUG": "0",
    "HTTPS": "1",  # what docker-compose.yml and .ci/run's deploy check set
    "SECRET_KEY": secrets.token_urlsafe(60),
    "ALLOWED_HOSTS": "feedback.example.org",
    "DATABASE_URL": "postgres://feedback:pw@db.example.org:5432/feedback",
}


def load_settings(monkeypatch: pytest.MonkeyPatch, **variables: str) -> dict[str, Any]:
    """feedback_service/settings.py run afresh with exactly these security variables set."""
    for name in SECURITY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    return runpy.run_path(str(SETTINGS_FILE))


def test_production_variables_turn_on_https_everything(monkeypatch):
    prod = load_settings(monkeypatch, **PRODUCTION)
    assert prod["DEBUG"] is False
    assert prod["SECURE_SSL_REDIRECT"] is True
    assert prod["SECURE_HSTS_SECONDS"] == 365 * 24 * 3600
    assert prod["SECURE_HSTS_INCLUDE_SUBDOMAINS"] is True
    assert prod["SECURE_HSTS_PRELOAD"] is False  # opt-in only (see settings.py)
    assert prod["SESSION_COOKIE_SECURE"] is True
    assert prod["CSRF_COOKIE_SECURE"] is True
    assert prod["SECURE_PROXY_SSL_HEADER"] == ("HTTP_X_FORWARDED_PROTO", "https")
    # The container's healthcheck talks plain HTTP from inside, past the proxy.
    assert any(re.search(p, "healthz") for p in prod["SECURE_REDIRECT_EXEMPT"])


def test_without_https_the_site_still_works_on_plain_http(monkeypatch):
    """`make run` and the tests (SQLite or PostgreSQL, DEBUG off) serve http://127.0.0.1."""
    for database in ("sqlite:////tmp/h7-never-created.sqlite3", PRODUCTION["DATABASE_URL"]):
        local = load_settings(monkeypatch, DEBUG="0", SECRET_KEY="x" * 60, DATABASE_URL=database)
        assert local["SECURE_SSL_REDIRECT"] is False
        assert local["SECURE_HSTS_SECONDS"] == 0
        assert local["SESSION_COOKIE_SECURE"] is False
        assert local["CSRF_COOKIE_SECURE"] is False
        assert "SECURE_PROXY_SSL_HEADER" not in local


def test_each_https_setting_can_be_overridden_alone(monkeypatch):
    prod = load_settings(
        monkeypatch,
        **PRODUCTION,
        SECURE_SSL_REDIRECT="0",
        TRUST_X_FORWARDED_PROTO="0",
        SECURE_HSTS_SECONDS="600",
        SECURE_HSTS_PRELOAD="1",
    )
    assert prod["SECURE_SSL_REDIRECT"] is False
    assert "SECURE_PROXY_SSL_HEADER" not in prod
    assert prod["SECURE_HSTS_SECONDS"] == 600
    assert prod["SECURE_HSTS_PRELOAD"] is True
    assert prod["SILENCED_SYSTEM_CHECKS"] == []
    assert prod["SESSION_COOKIE_SECURE"] is True  # the others still follow HTTPS


def test_violation_reports_go_where_csp_report_uri_says(monkeypatch):
    directives = load_settings(monkeypatch, **PRODUCTION)["CONTENT_SECURITY_POLICY"]["DIRECTIVES"]
    assert directives["report-uri"] is None
    url = "https://csp.example.org/report"
    reported = load_settings(monkeypatch, **PRODUCTION, CSP_REPORT_URI=url)
    assert reported["CONTENT_SECURITY_POLICY"]["DIRECTIVES"]["report-uri"] == url


def deploy_check(monkeypatch: pytest.MonkeyPatch, values: dict[str, Any]) -> None:
    """`manage.py check --deploy --fail-level WARNING` under these settings."""
    # Set by the browser tests' conftest for Playwright; async.E001 rightly refuses it.
    monkeypatch.delenv("DJANGO_ALLOW_ASYNC_UNSAFE", raising=False)
    overrides = {name: values[name] for name in SECURITY_SETTINGS}
    overrides["SECURE_PROXY_SSL_HEADER"] = values.get("SECURE_PROXY_SSL_HEADER")
    with override_settings(
        DEBUG=values["DEBUG"],
        SECRET_KEY=values["SECRET_KEY"],
        ALLOWED_HOSTS=values["ALLOWED_HOSTS"],
        **overrides,
    ):
        call_command("check", deploy=True, fail_level="WARNING")


def test_check_deploy_is_clean_under_the_production_variables(monkeypatch):
    deploy_check(monkeypatch, load_settings(monkeypatch, **PRODUCTION))


def test_check_deploy_names_what_is_missing_without_https(monkeypatch):
    """The same check fails once HTTPS is off, so the test above can fail."""
    plain = load_settings(monkeypatch, **{**PRODUCTION, "HTTPS": "0"})
    with pytest.raises(SystemCheckError) as raised:
        deploy_check(monkeypatch, plain)
    for code in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert code in str(raised.value)


@pytest.mark.django_db
@override_settings(
    SECURE_PROXY_SSL_HEADER=("HTTP_X_FORWARDED_PROTO", "https"),
    SECURE_SSL_REDIRECT=True,
    SECURE_HSTS_SECONDS=31536000,
    SECURE_HSTS_INCLUDE_SUBDOMAINS=True,
    SESSION_COOKIE_SECURE=True,
    CSRF_COOKIE_SECURE=True,
)
def test_behind_the_proxy_https_is_required_and_announced():
    client = Client()
    plain = client.get("/accounts/login/")
    assert plain.status_code == 301
    assert plain["Location"].startswith("https://")
    # /healthz answers over plain HTTP for the container healthcheck (200 or 503, no redirect).
    assert client.get("/healthz").status_code in (200, 503)

    secure = client.get("/accounts/login/", headers={"X-Forwarded-Proto": "https"})
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert "secure" in str(secure.cookies["csrftoken"]).lower()


def policy(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: values for name, *values in directives}


def assert_strict(response) -> dict[str, list[str]]:
    directives = policy(response)
    assert directives["default-src"] == ["'self'"]
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "'unsafe-eval'" not in directives["script-src"]
    assert "'unsafe-inline'" not in directives["style-src"]
    assert directives["object-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"]
    return directives


@pytest.mark.django_db
def test_every_response_carries_the_policy(client):
    anonymous = [
        client.get("/accounts/login/"),  # a page
        client.get("/api/projects/"),  # an API refusal
        client.get("/no-such-page/"),  # the 404 page
        client.get("/healthz"),
    ]
    user = make_user("sci")
    project = make_project(owner=user)
    client.force_login(user)
    signed_in = [
        client.get("/"),
        client.get(f"/projects/{project.pk}/"),
        client.get("/api/projects/"),
        client.get(f"/api/projects/{project.pk}/"),
    ]
    for response in anonymous + signed_in:
        assert response.status_code != 500, response  # /healthz: 503 without a worker
        directives = assert_strict(response)
        # A nonce only where a page uses one (the API docs, below).
        assert not any(v.startswith("'nonce-") for v in directives["script-src"])
    assert signed_in[2].status_code == 200
    assert signed_in[2]["Content-Type"].startswith("application/json")


@pytest.mark.django_db
def test_the_api_docs_inline_script_runs_by_its_nonce_alone(client):
    client.force_login(make_user("sci"))
    response = client.get("/api/docs/")
    assert response.status_code == 200
    directives = assert_strict(response)
    nonces = {v for v in directives["script-src"] if v.startswith("'nonce-")}
    assert len(nonces) == 1
    nonce = nonces.pop()[len("'nonce-") : -1]
    html = response.content.decode()
    inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", html)
    assert inline, "the Swagger set-up script is inline"
    assert all(f'nonce="{nonce}"' in attrs for attrs in inline)
    assert all(f'nonce="{nonce}"' in attrs for attrs in re.findall(r"<style([^>]*)>", html))
    # Another request, another nonce.
    again = policy(client.get("/api/docs/"))["script-src"]
    assert f"'nonce-{nonce}'" not in again
