"""The expert's pages with Django's test client: the inbox on the home page, access to the
review page, and the alignment the revealed task payload carries for the page."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from django.test import Client
from django.utils import timezone

from annotations import selectors
from annotations.models import ReviewRound
from annotations.services import reviews
from tests.annotations.review_fixtures import (
    EXPECTATION,
    VERDICT,
    add_explanation,
    build_world,
    make_round,
    make_round_with_saliency,
)
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def browser_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def named_round(world, name: str, *, experts=None, **kwargs) -> ReviewRound:
    # These tests are about the inbox's order and counts: the names are shown to experts
    # (test_blind_first_round_names_are_neutral_for_experts checks the default).
    kwargs.setdefault("show_name_to_experts", True)
    if kwargs.get("due_at") is not None:
        # Created a month before it is due: an overdue round was not overdue when it started.
        kwargs.setdefault("now", kwargs["due_at"] - timedelta(days=30))
    review_round = reviews.round_create(
        model_version=world.mv,
        name=name,
        sampling_strategy={"parts": [{"kind": "ids", "ids": [i.pk for i in world.instances]}]},
        created_by=world.scientist,
        experts=world.experts if experts is None else experts,
        explanation_method="",
        **kwargs,
    )
    return review_round


def submit_one(review_round, expert) -> None:
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)
    reviews.verdict_submit(task=task, expert=expert, data=VERDICT)


def test_inbox_shows_own_rounds_with_counts_and_nothing_else():
    world = build_world(n=4, experts=2)
    mine = named_round(world, "Kitchen errors")
    not_mine = named_round(world, "Only for expert one", experts=[world.experts[1]])
    other = build_world(n=2, experts=1, slug="cars")
    named_round(other, "Cars round")
    expert = world.experts[0]
    submit_one(mine, expert)
    reviews.task_next(review_round=mine, expert=expert)  # one in progress
    reviews.task_next(review_round=mine, expert=world.experts[1])  # another expert's lease

    response = browser_for(expert).get("/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Kitchen errors" in html
    assert not_mine.name not in html
    assert "Cars round" not in html
    [entry] = response.context["inbox"]
    assert entry["round"] == mine
    # 4 instances, overlap 1: one submitted and one held by the expert, one by another.
    assert (entry["available"], entry["submitted"], entry["in_progress"]) == (1, 1, 1)
    assert entry["assigned"] == 2
    assert "1 submitted of 2 assigned, 1 in progress" in html
    assert f'href="/rounds/{mine.pk}/review/"' in html
    assert ">Continue<" in html
    # The project list stays for every role.
    assert 'href="/projects/' in html


def test_inbox_forgets_rounds_of_a_project_the_expert_left():
    world = build_world(n=2, experts=1)
    named_round(world, "Kitchen errors")
    expert = world.experts[0]
    assert "Kitchen errors" in browser_for(expert).get("/").content.decode()
    world.project.memberships.filter(user=expert).delete()
    response = browser_for(expert).get("/")
    assert "Kitchen errors" not in response.content.decode()
    assert response.context["inbox"] == []


def test_inbox_counts_agree_with_the_per_round_selectors():
    world = build_world(n=5, experts=2)
    review_round = make_round(world, overlap=2)
    expert = world.experts[0]
    submit_one(review_round, expert)
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.task_skip(task=task, expert=expert, reason="unclear")
    reviews.task_next(review_round=review_round, expert=expert)

    [entry] = selectors.expert_inbox(user=expert)

    assert entry["available"] == selectors.tasks_available_count(
        review_round=review_round, expert=expert
    )
    [row] = [
        r
        for r in selectors.round_progress(review_round=review_round)["experts"]
        if r["expert"] == expert.pk
    ]
    for key in ("assigned", "in_progress", "submitted", "expired", "skipped"):
        assert entry[key] == row[key], key


def test_inbox_puts_open_rounds_first_soonest_due_first_and_marks_overdue():
    world = build_world(n=2, experts=1)
    now = timezone.now()
    later = named_round(world, "Due later", due_at=now + timedelta(days=5))
    overdue = named_round(world, "Overdue", due_at=now - timedelta(days=1))
    undated = named_round(world, "No date")
    closed = named_round(world, "Closed one", due_at=now - timedelta(days=9))
    reviews.round_close(review_round=closed)

    response = browser_for(world.experts[0]).get("/")

    order = [e["round"] for e in response.context["inbox"]]
    assert order == [overdue, later, undated, closed]
    assert [e["overdue"] for e in response.context["inbox"]] == [True, False, False, False]
    html = response.content.decode()
    assert html.count("overdue-badge") == 1
    assert html.index("Overdue") < html.index("Due later") < html.index("Closed one")


def test_home_without_rounds_keeps_the_project_list():
    world = build_world(n=1, experts=0)
    response = browser_for(world.scientist).get("/")
    assert response.context["inbox"] == []
    assert "Your review rounds" not in response.content.decode()
    assert world.project.name in response.content.decode()


@pytest.mark.parametrize("rounds", [1, 6])
def test_inbox_query_count_does_not_grow_with_rounds(rounds, django_assert_max_num_queries):
    world = build_world(n=3, experts=2)
    for k in range(rounds):
        review_round = named_round(world, f"Round {k}")
        submit_one(review_round, world.experts[0])
    client = browser_for(world.experts[0])
    # Session and user, the inbox's five queries, the project list, and the navigation's
    # project list: nine, for one round or six.
    with django_assert_max_num_queries(9):
        response = client.get("/")
    assert len(response.context["inbox"]) == rounds


def test_review_page_for_the_rounds_expert_only():
    world = build_world(n=2, experts=2)
    review_round = named_round(world, "r", experts=[world.experts[0]])
    url = f"/rounds/{review_round.pk}/review/"

    response = browser_for(world.experts[0]).get(url)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="review-config"' in html
    assert "Keyboard shortcuts" in html
    assert 'role="status"' in html
    assert "frontend/review.js" in html
    # Nothing of the model's view is in the page itself: the API decides when to reveal.
    assert "confidence 80%" not in html
    assert "0.8" not in html

    outsider = make_user("outsider")
    assert browser_for(outsider).get(url).status_code == 404
    # The other expert of the project, not in this round: the round is hidden from them.
    assert browser_for(world.experts[1]).get(url).status_code == 404
    # A scientist sees the round but reviews nothing in it.
    assert browser_for(world.scientist).get(url).status_code == 403
    assert Client().get(url).status_code == 302


def test_review_page_query_count(django_assert_max_num_queries):
    world = build_world(n=2, experts=1)
    review_round = make_round(world)
    client = browser_for(world.experts[0])
    # Session, user, the round with the expert check, and the navigation's roles and
    # projects.
    with django_assert_max_num_queries(5):
        assert client.get(f"/rounds/{review_round.pk}/review/").status_code == 200


def test_page_assets_stay_small():
    from pathlib import Path

    static = Path(__file__).resolve().parents[2] / "frontend" / "static" / "frontend"
    total = sum((static / name).stat().st_size for name in ("review.js", "review.css", "app.css"))
    assert total < 100_000


# --- The alignment in the revealed payload ---------------------------------------------


def quadrant_map() -> np.ndarray:
    values = np.zeros((32, 32))
    values[:16, :16] = 1.0
    return values


def test_revealed_payload_carries_the_alignment_of_the_experts_regions(media_root):
    world = build_world(n=1, experts=1)
    review_round = make_round_with_saliency(world)
    add_explanation(world, world.instances[0], quadrant_map())
    client = world.client(world.experts[0])
    task = client.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
    assert "alignment" not in task
    assert "saliency" not in task

    body = EXPECTATION | {"evidence": [{"type": "box", "points": [[4, 4], [20, 12]]}]}
    revealed = client.post(f"/api/tasks/{task['id']}/expectation", body, format="json").json()

    assert revealed["saliency"]["ready"] is True
    assert revealed["saliency"]["legend_height"] > 0
    # E: 16 x 8 cells; S: the 16 x 16 quarter (ties at the 20 % threshold included).
    assert revealed["alignment"] == {
        "iou": round(96 / 288, 4),
        "ground_truth_coverage": 0.75,
        "saliency_coverage": 0.375,
        "top_fraction": 0.2,
        "evidence_cells": 128,
        "saliency_cells": 256,
        "grid": [32, 32],
    }
    again = client.get(f"/api/tasks/{task['id']}/").json()
    assert again["alignment"] == revealed["alignment"]


def test_no_alignment_without_regions_or_without_a_map(media_root):
    world = build_world(n=2, experts=1)
    review_round = make_round_with_saliency(world)
    add_explanation(world, world.instances[0], quadrant_map())
    client = world.client(world.experts[0])
    for _ in range(2):
        task = client.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
        has_map = task["instance"]["id"] == world.instances[0].pk
        body = EXPECTATION | ({"evidence": []} if has_map else {})
        revealed = client.post(f"/api/tasks/{task['id']}/expectation", body, format="json").json()
        assert revealed["alignment"] is None
        assert revealed["saliency"]["ready"] is has_map
        client.post(f"/api/tasks/{task['id']}/verdict", VERDICT, format="json")


def test_a_damaged_map_file_costs_the_alignment_not_the_submit(media_root):
    """A truncated map must not turn the expectation into a 500 the page would retry."""
    world = build_world(n=1, experts=1)
    review_round = make_round_with_saliency(world)
    exp = add_explanation(world, world.instances[0], quadrant_map())
    with exp.raw.storage.open(exp.raw.name, "wb") as fh:
        fh.write(b"PK\x03\x04 truncated")
    client = world.client(world.experts[0])
    task = client.post(f"/api/rounds/{review_round.pk}/tasks/next").json()
    body = EXPECTATION | {"evidence": [{"type": "box", "points": [[4, 4], [20, 12]]}]}
    response = client.post(f"/api/tasks/{task['id']}/expectation", body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["alignment"] is None
    assert response.json()["saliency"]["ready"] is True


def test_blind_first_round_names_are_neutral_for_experts():
    """Issue 15, item 5: the demo's "test-split errors" told experts the images were the
    model's mistakes. Experts of a blind-first round see "Review round N" by default."""
    world = build_world(n=2, experts=1)
    hidden = named_round(world, "test-split errors", show_name_to_experts=False)
    shown = named_round(world, "Kitchen scenes", show_name_to_experts=True)
    html = browser_for(world.experts[0]).get("/").content.decode()
    assert "test-split errors" not in html
    assert f"Review round {hidden.pk}" in html
    assert shown.name in html
    review_page = browser_for(world.experts[0]).get(f"/rounds/{hidden.pk}/review/")
    assert "test-split errors" not in review_page.content.decode()
    round_page = browser_for(world.experts[0]).get(f"/rounds/{hidden.pk}/").content.decode()
    assert "test-split errors" not in round_page
    assert f"Review round {hidden.pk}" in round_page
    # The scientist sees the real name.
    assert (
        "test-split errors"
        in browser_for(world.scientist).get(f"/rounds/{hidden.pk}/").content.decode()
    )
