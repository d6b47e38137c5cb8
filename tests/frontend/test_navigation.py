"""The navigation fits the role: Inbox and My reviews only for experts, Setup & data only for
scientists, Admin only for staff; the API docs page leads back to the app."""

from __future__ import annotations

import html as html_lib
import re

import pytest
from django.test import Client
from django.urls import reverse

from annotations.models import Role
from tests.annotations.review_fixtures import build_world, make_round
from tests.factories import add_member, make_user

pytestmark = pytest.mark.django_db


def nav_links(user, path: str) -> dict[str, str]:
    client = Client()
    client.force_login(user)
    response = client.get(path)
    assert response.status_code == 200, path
    html = response.content.decode()
    nav = html[html.index('<nav aria-label="Main"') : html.index("</nav>")]
    found = re.findall(r'<a href="([^"]+)"[^>]*>([^<]+)</a>', nav)
    return {html_lib.unescape(text.strip()): href for href, text in found}


def test_expert_gets_inbox_and_my_reviews():
    world = build_world(n=2, experts=1)
    make_round(world)
    links = nav_links(world.experts[0], "/")
    assert links["Inbox"] == "/"
    assert links["My reviews"] == reverse("my-reviews")
    # An expert of the project alone (no round yet) has an inbox too.
    other = build_world(n=1, experts=1, slug="cars")
    assert "Inbox" in nav_links(other.experts[0], "/")


@pytest.mark.parametrize("role", ["scientist", "approver", "viewer"])
def test_roles_without_an_inbox_get_no_inbox_link(role):
    world = build_world(n=2, experts=1)
    make_round(world)
    user = getattr(world, role)
    links = nav_links(user, reverse("project", args=[world.project.pk]))
    assert "Inbox" not in links
    assert "My reviews" not in links
    assert links["Projects"] == "/"


def test_setup_and_data_only_for_scientists():
    world = build_world(n=2, experts=1)
    project_url = reverse("project", args=[world.project.pk])
    scientist = nav_links(world.scientist, project_url)
    assert scientist["Setup & data"] == project_url
    assert "New round" in scientist
    approver = nav_links(world.approver, project_url)
    assert "Setup & data" not in approver
    assert approver["Overview"] == project_url
    assert "Readiness" in approver
    assert "Setup & data" not in nav_links(world.viewer, project_url)


def test_admin_link_only_for_active_staff():
    world = build_world(n=1, experts=1)
    assert "Admin" not in nav_links(world.scientist, "/")
    staff = add_member(world.project, "staffer", Role.SCIENTIST)
    staff.is_staff = True
    staff.save()
    assert nav_links(staff, "/")["Admin"] == reverse("admin:index")


def test_api_docs_lead_back_to_the_app_and_load_nothing_from_a_cdn():
    client = Client()
    client.force_login(make_user("someone"))
    response = client.get(reverse("api-docs"))
    assert response.status_code == 200
    html = response.content.decode()
    assert '<a href="/">&larr; Back to Expert feedback</a>' in html
    assert "swagger-ui-bundle.js" in html
    for url in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert url.startswith("/"), url  # served by this app (the sidecar), no CDN
