"""``{{ round|round_title:request.user }}``: what to call a review round for the user seeing
the page. A user who is only an expert of the round's project sees a neutral title in a
blind-first round ("Review round 12") unless its scientist chose to show the name, because a
name like "test-split errors" tells them what to expect before their blind judgement (the
API's round output does the same; ``ReviewRound.title_for``)."""

from __future__ import annotations

from typing import Any

from django import template

from annotations import permissions as access
from annotations.models import ReviewRound

register = template.Library()


def _expert_only(user: Any, project_id: int) -> bool:
    # Cached on the user object for the request: an inbox lists many rounds of few projects.
    cache = user.__dict__.setdefault("_expert_only_by_project", {})
    if project_id not in cache:
        cache[project_id] = access.is_expert_only(access.roles_in_project(user, project_id))
    return cache[project_id]


def _neutral(review_round: ReviewRound, user: Any) -> bool:
    if review_round.title_for(as_expert=True) == review_round.name:
        return False  # the name is shown to everyone: no roles to look up
    return _expert_only(user, review_round.project_id)


@register.filter
def round_title(review_round: ReviewRound, user: Any) -> str:
    return review_round.title_for(as_expert=_neutral(review_round, user))


@register.filter
def round_description(review_round: ReviewRound, user: Any) -> str:
    """The description, or "" where the title is neutral (it would say what the name says)."""
    return "" if _neutral(review_round, user) else review_round.description
