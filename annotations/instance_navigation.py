"""Previous / next on the instance page, within the list the page was opened from.

A list is named by the instance page's query parameters, which the pages that link to it
write:

- a confusion-matrix cell: ``from=cell&model_version=ID&true=LABEL&predicted=LABEL&split=S``
  (``split`` one of the splits or ``all``), in the cell page's order (most confident first);
- a round's reviews: ``from=round&round=ID`` plus the review table's filters, in the review
  table's order (``annotations.review_table``), each instance once.

A list is only walked for a user who may read it (the same ``access_*_by_id`` helpers the
pages use); otherwise, or for a list that names nothing, there is no navigation, and the
instance page shows the instance as if it had been opened directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple
from urllib.parse import urlencode

from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404
from django.urls import reverse

from annotations import analysis, review_table
from annotations import permissions as access
from annotations.models import Split


class Neighbours(NamedTuple):
    prev_url: str | None
    next_url: str | None
    # 1-based place of the instance in the list; None when it is not (or no longer) in it.
    position: int | None
    total: int


NO_LIST = Neighbours(None, None, None, 0)


@dataclass(frozen=True)
class InstanceList:
    """A list the instance page can walk: its instance ids in order, the query string that
    names it (carried by the previous/next links) and a link back to it."""

    ids: list[int]
    query: str
    title: str
    back_url: str


def _param(params: Mapping[str, Any], key: str) -> str:
    value = params.get(key)
    return value if isinstance(value, str) else ""


def _int(params: Mapping[str, Any], key: str) -> int | None:
    value = _param(params, key)
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    return int(value) if value.isascii() and value.isdecimal() else None


def _cell_list(user: Any, params: Mapping[str, Any]) -> InstanceList | None:
    mv_id = _int(params, "model_version")
    if mv_id is None:
        return None
    mv = access.access_model_version_by_id(user, mv_id)
    true_label, predicted = _param(params, "true"), _param(params, "predicted")
    split = _param(params, "split") or Split.TEST
    if split != "all" and split not in Split.values:
        return None
    if not true_label or not predicted:
        return None
    qs = analysis.confusion_cell_instances(
        model_version=mv,
        true_label=true_label,
        predicted_label=predicted,
        split=None if split == "all" else split,
    )
    ids = list(qs.values_list("instance_id", flat=True))
    query = urlencode(
        {
            "from": "cell",
            "model_version": mv.pk,
            "true": true_label,
            "predicted": predicted,
            "split": split,
        }
    )
    back = (
        reverse("matrix", args=[mv.pk])
        + "?"
        + urlencode({"split": split, "true": true_label, "pred": predicted})
    )
    return InstanceList(
        ids=ids,
        query=query,
        title=f"v{mv.version}: true {true_label}, predicted {predicted}",
        back_url=back + "#cell",
    )


def _round_list(user: Any, params: Mapping[str, Any]) -> InstanceList | None:
    round_id = _int(params, "round")
    if round_id is None:
        return None
    # Reviews are details: scientists and approvers read them (experts only their own, and
    # they never reach the instance page).
    review_round = access.access_round_by_id(user, round_id, allowed=access.READ_DETAILS)
    try:
        filters = review_table.parse_review_filters(params, review_round)
    except ValidationError:
        return None
    rows = review_table.round_reviews(review_round, filters).values_list("instance_id", flat=True)
    ids = list(dict.fromkeys(rows))  # an instance reviewed by several experts: once, in order
    query = urlencode({"from": "round", "round": review_round.pk, **filters.as_params()})
    back = reverse("round", args=[review_round.pk])
    if filters.as_params():
        back += "?" + filters.querystring()
    return InstanceList(
        ids=ids,
        query=query,
        title=f"reviews of round {review_round.name}",
        back_url=back + "#reviews",
    )


def instance_list(user: Any, params: Mapping[str, Any]) -> InstanceList | None:
    """The list named by ``params`` (a ``QueryDict`` or a plain dict of strings) as ``user``
    may see it, or None: no list named, a malformed one, or one the user may not read."""
    source = _param(params, "from")
    try:
        if source == "cell":
            return _cell_list(user, params)
        if source == "round":
            return _round_list(user, params)
    except (Http404, PermissionDenied):
        return None
    return None


def _instance_url(instance_id: int, query: str) -> str:
    return reverse("instance", args=[instance_id]) + "?" + query


def neighbours_in(found: InstanceList | None, instance_id: int) -> Neighbours:
    """Previous and next of ``instance_id`` in an already loaded list."""
    if found is None:
        return NO_LIST
    total = len(found.ids)
    try:
        k = found.ids.index(instance_id)
    except ValueError:
        return Neighbours(None, None, None, total)
    prev_url = _instance_url(found.ids[k - 1], found.query) if k > 0 else None
    next_url = _instance_url(found.ids[k + 1], found.query) if k + 1 < total else None
    return Neighbours(prev_url, next_url, k + 1, total)


def neighbours(user: Any, params: Mapping[str, Any], instance_id: int) -> Neighbours:
    """(previous page URL or None, next page URL or None, 1-based position, list length) of
    ``instance_id`` in the list ``params`` name, as ``user`` may see it. The URLs carry the
    same list parameters, so the walk continues. Costs the list's queries once: its ids are
    read in one query (a cell or a round holds at most a few thousand instances)."""
    return neighbours_in(instance_list(user, params), instance_id)
