"""The 403 and 404 pages in Chromium, with DEBUG off: the app's layout with its stylesheet
applied, what happened, and links that lead back (home, and the project for a member)."""

from __future__ import annotations

import pytest

from tests.annotations.review_fixtures import build_world

pytestmark = pytest.mark.django_db(transaction=True)


def assert_styled_layout(page) -> None:
    # app.css is served without DEBUG and applied: the header is a flex row with a border.
    header = page.locator("header")
    assert header.evaluate("el => getComputedStyle(el).display") == "flex"
    assert page.get_by_role("link", name="Expert feedback").is_visible()
    assert page.get_by_role("navigation", name="Main").is_visible()


def test_404_page_leads_home(page, login):
    world = build_world(n=1, experts=1)
    login(page, world.scientist.username)

    response = page.goto("/no/such/page/")

    assert response.status == 404
    assert page.get_by_role("heading", name="Page not found (404)").is_visible()
    assert_styled_layout(page)
    assert page.get_by_text("URLconf").count() == 0
    page.get_by_role("link", name="Back to the home page").click()
    page.wait_for_url("**/")
    assert page.get_by_role("heading", name="Your projects").is_visible()


def test_403_page_leads_back_to_the_project(page, login):
    world = build_world(n=1, experts=1)
    login(page, world.viewer.username)

    response = page.goto(f"/projects/{world.project.pk}/rounds/new/")

    assert response.status == 403
    assert page.get_by_role("heading", name="Not allowed (403)").is_visible()
    assert page.get_by_text("This needs the scientist role in the project.").is_visible()
    assert_styled_layout(page)
    page.get_by_role("link", name=f"Back to the project {world.project.name}").click()
    page.wait_for_url(f"**/projects/{world.project.pk}/")
    assert page.get_by_role("heading", name=world.project.name).is_visible()
