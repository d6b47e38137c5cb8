"""Accessibility basics on every page, checked in the browser: every visible form control
has an accessible name, every image a text alternative, the document a language, one h1,
and Tab reaches the main content first through the skip link."""

from __future__ import annotations

import pytest

from annotations.services import reviews
from tests.annotations.review_fixtures import add_saliency, build_world, make_round

pytestmark = pytest.mark.django_db(transaction=True)

AUDIT = """() => {
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length);
  const problems = [];
  for (const el of document.querySelectorAll('input, select, textarea, button')) {
    if (!visible(el) || el.type === 'hidden') continue;
    const named = (el.labels && el.labels.length) || el.getAttribute('aria-label')
      || el.getAttribute('aria-labelledby') || el.getAttribute('title')
      || (el.tagName === 'BUTTON' && el.textContent.trim());
    if (!named) problems.push('unnamed ' + el.outerHTML.slice(0, 120));
  }
  for (const img of document.querySelectorAll('img')) {
    if (!img.hasAttribute('alt')) problems.push('no alt ' + img.outerHTML.slice(0, 120));
  }
  if (!document.documentElement.lang) problems.push('no lang');
  if (document.querySelectorAll('h1').length !== 1) problems.push('h1 count');
  return problems;
}"""


def test_every_page_names_its_controls_and_images(page, login, media_root):
    world = build_world(n=6, experts=1, with_files=True)
    review_round = make_round(world)
    add_saliency(world)
    reviews.task_next(review_round=review_round, expert=world.experts[0])
    instance = world.instances[1]
    pages = {
        world.scientist.username: [
            "/",
            f"/projects/{world.project.pk}/",
            f"/projects/{world.project.pk}/rounds/new/",
            f"/rounds/{review_round.pk}/",
            f"/model-versions/{world.mv.pk}/matrix/",
            f"/model-versions/{world.mv.pk}/matrix/?true={instance.label}"
            f"&pred={instance.predictions.get().label}",
            f"/instances/{instance.pk}/",
            f"/projects/{world.project.pk}/readiness/",
        ],
        world.experts[0].username: ["/", f"/rounds/{review_round.pk}/review/"],
    }
    for username, paths in pages.items():
        page.context.clear_cookies()
        login(page, username)
        for path in paths:
            page.goto(path)
            page.wait_for_load_state("networkidle")
            assert page.evaluate(AUDIT) == [], (username, path)
            if page.evaluate("document.activeElement !== document.body"):
                continue  # the page moved focus to what it opened (a matrix cell's grid)
            # The first Tab stop is the skip link, and it moves focus to the main content.
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.className") == "skip-link", path
            page.keyboard.press("Enter")
            assert page.evaluate("document.activeElement.id") == "main", path
