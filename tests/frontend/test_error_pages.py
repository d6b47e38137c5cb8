"""403, 404 and 500 answer in the app's layout with a way back (pages) or in JSON (API), with
DEBUG off, which is the default everywhere; the embedded mode works without SECRET_KEY and
serves static files without DEBUG."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client
from django.urls import path, reverse

from feedback_service import settings as settings_module
from feedback_service import urls as project_urls
from tests.annotations.review_fixtures import build_world, make_round

ROOT = Path(__file__).resolve().parents[2]


def _boom(request):
    raise RuntimeError("secret-internal-detail")


# This module is also the URLconf of the 500 tests (pytest.mark.urls): the project's URLs,
# its error handlers, and one view that raises.
urlpatterns = [path("boom/", _boom), path("api/boom/", _boom), *project_urls.urlpatterns]
handler403 = project_urls.handler403
handler404 = project_urls.handler404
handler500 = project_urls.handler500


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def assert_in_layout(html: str) -> None:
    assert '<a href="/" class="brand">Expert feedback</a>' in html
    assert "/static/frontend/app.css" in html
    assert '<main id="main"' in html


def settings_in_subprocess(env: dict[str, str], expression: str) -> subprocess.CompletedProcess:
    """Import the settings in a fresh interpreter with only ``env`` set (plus PATH)."""
    code = f"import feedback_service.settings as s; print({expression})"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", "")} | env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_debug_is_off_unless_asked_for(tmp_path):
    base = {"SECRET_KEY_FILE": str(tmp_path / "key")}
    assert settings_in_subprocess(base, "s.DEBUG").stdout.strip() == "False"
    assert settings_in_subprocess(base | {"DEBUG": "1"}, "s.DEBUG").stdout.strip() == "True"


def test_embedded_mode_needs_no_secret_key_and_keeps_the_one_it_made(tmp_path):
    key_file = tmp_path / "var" / "secret_key"
    env = {"SECRET_KEY_FILE": str(key_file)}
    first = settings_in_subprocess(env, "s.SECRET_KEY")
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.strip()) >= 50
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert settings_in_subprocess(env, "s.SECRET_KEY").stdout == first.stdout
    # A server database with DEBUG off still needs an explicit key.
    server = settings_in_subprocess(
        env | {"DATABASE_URL": "postgres://u@127.0.0.1:1/x"}, "s.SECRET_KEY"
    )
    assert server.returncode != 0
    assert "SECRET_KEY must be set" in server.stderr


def test_secret_key_file_is_made_once(tmp_path):
    target = tmp_path / "k"
    key = settings_module._embedded_secret_key(target)
    assert settings_module._embedded_secret_key(target) == key
    assert target.read_text().strip() == key


@pytest.mark.django_db
def test_static_files_are_served_with_debug_off(settings):
    assert settings.DEBUG is False
    response = Client().get("/static/frontend/app.css")
    assert response.status_code == 200
    assert b"--accent" in b"".join(response.streaming_content)


@pytest.mark.django_db
def test_404_page_in_the_layout_with_a_link_home():
    world = build_world(n=1, experts=1)
    response = logged_in(world.scientist).get("/no/such/page/")
    assert response.status_code == 404
    html = response.content.decode()
    assert_in_layout(html)
    assert "Page not found (404)" in html
    assert '<a href="/">Back to the home page</a>' in html
    assert "/no/such/page/" in html
    assert "URLconf" not in html


@pytest.mark.django_db
def test_404_of_an_object_links_back_to_the_project_only_for_members():
    world = build_world(n=1, experts=1)
    url = reverse("round", args=[999_999])
    html = logged_in(world.scientist).get(url).content.decode()
    assert "Back to the project" not in html  # no such round: no project known
    instance_url = reverse("instance", args=[999_999])
    assert logged_in(world.scientist).get(instance_url).status_code == 404
    # A member asking for a missing page of their project gets the way back to it.
    response = logged_in(world.scientist).get(
        reverse("project", args=[world.project.pk]) + "nothing/"
    )
    assert response.status_code == 404
    other = build_world(n=1, experts=1, slug="cars")
    outsider = logged_in(other.scientist).get(reverse("project", args=[world.project.pk]))
    assert outsider.status_code == 404
    assert world.project.name not in outsider.content.decode()


@pytest.mark.django_db
def test_403_page_in_the_layout_with_links_to_the_project_and_home():
    world = build_world(n=2, experts=1)
    # A viewer may read the project but not create rounds in it.
    response = logged_in(world.viewer).get(reverse("round-new", args=[world.project.pk]))
    assert response.status_code == 403
    html = response.content.decode()
    assert_in_layout(html)
    assert "Not allowed (403)" in html
    assert f'<a href="/projects/{world.project.pk}/">Back to the project Pets</a>' in html
    assert '<a href="/">Back to the home page</a>' in html


@pytest.mark.django_db
def test_403_of_a_round_names_the_reason_and_the_project():
    world = build_world(n=2, experts=1)
    review_round = make_round(world)
    response = logged_in(world.viewer).get(reverse("review", args=[review_round.pk]))
    assert response.status_code == 403
    html = response.content.decode()
    assert "You are not an expert of this round." in html
    assert "Back to the project Pets" in html


@pytest.mark.django_db
def test_csrf_failure_gets_the_403_page():
    world = build_world(n=1, experts=1)
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.scientist)
    response = client.post(reverse("logout"))
    assert response.status_code == 403
    html = response.content.decode()
    assert_in_layout(html)
    assert "expired or came from another site" in html


@pytest.mark.django_db
def test_api_paths_keep_answering_json():
    world = build_world(n=1, experts=1)
    client = logged_in(world.scientist)
    missing = client.get("/api/no-such-endpoint/")
    assert missing.status_code == 404
    assert missing["Content-Type"] == "application/json"
    assert missing.json() == {"detail": "Not found."}
    other = build_world(n=1, experts=1, slug="cars")
    forbidden = client.get(reverse("api-round-detail", args=[make_round(other).pk]))
    assert forbidden.status_code == 404
    assert forbidden["Content-Type"] == "application/json"


@pytest.mark.django_db
@pytest.mark.urls("tests.frontend.test_error_pages")
def test_500_page_in_the_layout_without_internals():
    world = build_world(n=1, experts=1)
    client = Client(raise_request_exception=False)
    client.force_login(world.scientist)
    response = client.get("/boom/")
    assert response.status_code == 500
    html = response.content.decode()
    assert_in_layout(html)
    assert "Something went wrong on our side (500)" in html
    assert '<a href="/">Back to the home page</a>' in html
    assert "secret-internal-detail" not in html
    assert "Traceback" not in html
    assert "RuntimeError" not in html

    api = client.get("/api/boom/")
    assert api.status_code == 500
    assert api.json() == {"detail": "Server error."}


def test_console_log_keeps_tracebacks_for_server_errors_only():
    def record(status: int | None) -> logging.LogRecord:
        try:
            raise RuntimeError("x")
        except RuntimeError:
            rec = logging.LogRecord(
                "django.request", logging.WARNING, "", 0, "m", (), sys.exc_info()
            )
        if status is not None:
            rec.status_code = status
        return rec

    forbidden, failed, other = record(403), record(500), record(None)
    for rec in (forbidden, failed, other):
        assert settings_module._no_traceback_below_500(rec)
    assert forbidden.exc_info is None
    assert failed.exc_info is not None
    assert other.exc_info is not None
