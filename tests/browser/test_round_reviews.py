"""The round page's submitted reviews in Chromium: a filter applied with the keyboard, the
rows' links, the CSV download parsed back; the readiness page's accuracy table and the
review table fit at 1280 px (nothing clipped, the review table scrolls in its own box)."""

from __future__ import annotations

import csv
import io
import re

import pytest
from playwright.sync_api import expect

from annotations.services import reviews
from tests.annotations.review_fixtures import (
    EXPECTATION,
    VERDICT,
    add_saliency,
    build_world,
    make_round_with_saliency,
)

pytestmark = pytest.mark.django_db(transaction=True)

CORRECT = {"prediction_verdict": "correct", "feature_verdict": "relevant"}

# For every table in a .table-wrap box: how far it overflows its box, and how far the box
# reaches past the viewport's right edge. Both must be 0 for a table that fits.
OVERFLOW_JS = """
(selector) => Array.from(document.querySelectorAll(selector)).map((table) => {
  const box = table.closest('.table-wrap') || table.parentElement;
  const rect = box.getBoundingClientRect();
  return {
    overflow: table.scrollWidth - box.clientWidth,
    pastViewport: rect.right - document.documentElement.clientWidth,
    pageOverflow: document.documentElement.scrollWidth - document.documentElement.clientWidth,
  };
})
"""


def test_review_table_filter_and_csv_download(page, login, media_root):
    world = build_world(n=6, experts=2, with_files=True)
    review_round = make_round_with_saliency(world)
    add_saliency(world)
    done = []
    for k, verdict in enumerate([VERDICT, CORRECT, VERDICT, CORRECT]):
        expert = world.experts[k % 2]
        task = reviews.task_next(review_round=review_round, expert=expert)
        reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
        done.append(reviews.verdict_submit(task=task, expert=expert, data=verdict))

    login(page, world.scientist.username)
    page.goto(f"/rounds/{review_round.pk}/")
    table = page.locator("table.review-table")
    expect(table.locator("tbody tr")).to_have_count(4)
    expect(page.locator("#reviews-count")).to_contain_text("4 reviews")

    # With the keyboard only: choose "Prediction incorrect", then Apply.
    verdict = page.get_by_label("Prediction verdict")
    verdict.focus()
    verdict.select_option("incorrect")
    page.keyboard.press("Tab")  # to the next control: the filters are in tab order
    apply = page.get_by_role("button", name="Apply")
    apply.focus()
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"verdict=incorrect"))
    expect(table.locator("tbody tr")).to_have_count(2)
    expect(page.locator("#reviews-count")).to_contain_text("2 reviews match the filters")
    shown = [
        int(i)
        for i in table.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.reviewId)")
    ]
    assert sorted(shown) == sorted([done[0].pk, done[2].pk])
    # Saliency thumbnails and the alignment column are filled for these rows.
    expect(table.locator("tbody tr").first.get_by_role("cell").nth(7)).to_have_text(
        re.compile(r"^\d\.\d\d$")
    )
    # A row opens its instance with the list it came from.
    link = table.locator("tbody tr").first.get_by_role("link")
    href = link.get_attribute("href")
    assert f"from=round&round={review_round.pk}" in href
    assert "verdict=incorrect" in href

    # Keyboard: from Apply, Tab reaches Clear filters, the CSV link, the table's scroll box
    # (focusable, so arrow keys scroll it), the sorting headers and the rows' links, in
    # that order.
    page.get_by_role("button", name="Apply").focus()
    reached = []
    for _ in range(9):
        page.keyboard.press("Tab")
        reached.append(
            page.evaluate(
                "() => { const e = document.activeElement;"
                " return e.getAttribute('role') || e.textContent.trim().slice(0, 20); }"
            )
        )
    assert reached[:4] == ["Clear filters", reached[1], "region", "Expert: sort"]
    assert reached[1].startswith("Download CSV")
    assert reached[4:7] == ["Error: sort by sever", "Time spent: sort", "Submitted: sort"]
    assert reached[7].startswith("Instance #")
    assert reached[8].startswith("Instance #")

    # The table fits: it scrolls inside its own box, which stays inside the viewport.
    for fit in page.evaluate(OVERFLOW_JS, "table.review-table"):
        assert fit["pastViewport"] <= 0
        assert fit["pageOverflow"] <= 0

    with page.expect_download() as download_info:
        page.get_by_role("link", name=re.compile("Download CSV")).click()
    download = download_info.value
    assert download.suggested_filename == f"round-{review_round.pk}-reviews.csv"
    with open(download.path(), encoding="utf-8") as fh:
        rows = list(csv.DictReader(io.StringIO(fh.read())))
    assert [int(r["review"]) for r in rows] == shown  # same rows, same order
    assert {r["prediction_verdict"] for r in rows} == {"incorrect"}
    assert {r["free_tags"] for r in rows} == {"whiskers"}
    assert all(r["iou"] for r in rows)


def test_readiness_table_fits_at_1280(page, login):
    world = build_world(n=6, experts=0)
    login(page, world.approver.username)
    page.goto(f"/projects/{world.project.pk}/readiness/")
    expect(page.get_by_role("heading", name=re.compile("Accuracy by split"))).to_be_visible()
    assert page.viewport_size["width"] == 1280
    fits = page.evaluate(OVERFLOW_JS, "section.readiness table")
    assert fits
    for fit in fits:
        assert fit["overflow"] <= 0, fit  # no column hidden behind a scroll bar
        assert fit["pastViewport"] <= 0, fit
        assert fit["pageOverflow"] <= 0, fit
    # Every header cell is fully visible inside its box.
    for header in page.locator("section.readiness table th").all():
        box = header.bounding_box()
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= 1280
