"""Login, logout, the project switcher and role-aware navigation in a real browser."""

from __future__ import annotations

import pytest

from tests.annotations.review_fixtures import build_world

pytestmark = pytest.mark.django_db(transaction=True)


def test_login_switch_project_and_logout(page, login):
    world = build_world(n=2, experts=1)
    other = build_world(n=1, experts=0, slug="cars")
    other.project.memberships.create(user=world.scientist, role="scientist")

    login(page, world.scientist.username)
    page.locator(".switcher summary").click()
    page.locator(".switcher").get_by_role("link", name=other.project.name).click()
    assert page.get_by_role("heading", name=other.project.name).is_visible()
    assert page.get_by_role("link", name="New round", exact=True).is_visible()

    page.get_by_role("button", name="Log out").click()
    page.goto("/")
    assert "/accounts/login/" in page.url


def test_expert_sees_no_scientist_links(page, login):
    world = build_world(n=2, experts=1)
    login(page, world.experts[0].username)
    page.goto(f"/projects/{world.project.pk}/")
    assert page.get_by_role("link", name="New round", exact=True).count() == 0
    assert page.get_by_role("link", name="Setup & data").count() == 0
