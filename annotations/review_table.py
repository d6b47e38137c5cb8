"""A round's submitted reviews as a table: filters and sort parsed from query parameters, and
the one selector the round page, its JSON and CSV API and the instance page's previous/next
read them through, so all of them list the same reviews in the same order.

Query parameters (every one optional; unknown ones are ignored, so a link may carry others):

- ``verdict``: a prediction verdict (``correct``, ``incorrect``, ``ground_truth_wrong``,
  ``ambiguous``)
- ``acceptable``: ``yes``, ``no`` or ``unanswered`` (no answer: the prediction was not judged
  incorrect, or the round did not ask)
- ``expert``: the username of one of the round's experts
- ``true_label``, ``expected_label``, ``predicted_label``: a class of the project
- ``sort``: one of ``SORTS`` (``-`` first for descending); default ``-submitted``

Access is the caller's business: the table shows every expert's judgement, so only roles that
read details (scientists, approvers) may be shown it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlencode

from django.db.models import F, OuterRef, QuerySet, Subquery

from annotations.models import Explanation, Prediction, PredictionVerdict, Review, ReviewRound
from annotations.services._errors import field_error

PAGE_SIZE = 50

# sort key -> the field it orders by; empty values go last in both directions
SORTS: dict[str, str] = {
    "submitted": "submitted_at",
    "expert": "expert__username",
    "severity": "severity",
    "time": "server_seconds",
    "instance": "instance_id",
    "verdict": "prediction_verdict",
    "expected_label": "expected_label",
}
SORT_LABELS: dict[str, str] = {
    "-submitted": "Newest first",
    "submitted": "Oldest first",
    "expert": "Expert (A-Z)",
    "-expert": "Expert (Z-A)",
    "-severity": "Severity (highest first)",
    "severity": "Severity (lowest first)",
    "-time": "Time spent (longest first)",
    "time": "Time spent (shortest first)",
    "instance": "Instance id",
    "verdict": "Prediction verdict",
    "expected_label": "Expected label",
}
DEFAULT_SORT = "-submitted"
ACCEPTABLE_VALUES: dict[str, bool | None] = {"yes": True, "no": False, "unanswered": None}
LABEL_FILTERS = ("true_label", "expected_label", "predicted_label")


@dataclass(frozen=True)
class ReviewFilters:
    """What ``round_reviews`` selects and how it orders it; None means "any"."""

    verdict: str | None = None
    acceptable: str | None = None  # a key of ACCEPTABLE_VALUES
    expert: str | None = None  # a username
    true_label: str | None = None
    expected_label: str | None = None
    predicted_label: str | None = None
    sort: str = DEFAULT_SORT

    def as_params(self) -> dict[str, str]:
        """The parameters that give these filters back (defaults left out), in a fixed order."""
        params = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value != f.default:
                params[f.name] = value
        return params

    def querystring(self, **extra: Any) -> str:
        """``as_params`` (plus ``extra``, None values dropped) url-encoded, without "?"."""
        params: dict[str, Any] = self.as_params()
        params.update({k: v for k, v in extra.items() if v is not None})
        return urlencode(params)

    @property
    def active(self) -> bool:
        """Whether any filter (not the sort) narrows the list."""
        return any(v is not None for k, v in self.as_params().items() if k != "sort")


def parse_review_filters(params: Mapping[str, str], review_round: ReviewRound) -> ReviewFilters:
    """Read the filters and sort from query parameters (a QueryDict or a dict). Empty values
    mean "any". Raises ``field_error`` naming the parameter for a value that is not allowed:
    an unknown verdict, acceptability or sort, a label outside the project's classes, a user
    who is not one of the round's experts (one query, only when ``expert`` is given)."""

    def value(name: str) -> str | None:
        raw = params.get(name)
        if raw is None:
            return None
        raw = str(raw).strip()
        return raw or None

    verdict = value("verdict")
    if verdict is not None and verdict not in PredictionVerdict.values:
        raise field_error(
            "verdict", f"Unknown verdict {verdict!r}; use {', '.join(PredictionVerdict.values)}."
        )
    acceptable = value("acceptable")
    if acceptable is not None and acceptable not in ACCEPTABLE_VALUES:
        raise field_error("acceptable", f"Use {', '.join(ACCEPTABLE_VALUES)}, not {acceptable!r}.")
    labels = list(review_round.project.labels)
    found: dict[str, str | None] = {}
    for name in LABEL_FILTERS:
        label = value(name)
        if label is not None and label not in labels:
            raise field_error(
                name, f"{label!r} is not a class of this project ({', '.join(labels)})."
            )
        found[name] = label
    expert = value("expert")
    if expert is not None and not review_round.experts.filter(username=expert).exists():
        raise field_error("expert", f"{expert!r} is not an expert of this round.")
    sort = value("sort") or DEFAULT_SORT
    if sort.removeprefix("-") not in SORTS:
        raise field_error(
            "sort", f"Unknown sort {sort!r}; use {', '.join(SORTS)} (with - for descending)."
        )
    return ReviewFilters(verdict=verdict, acceptable=acceptable, expert=expert, sort=sort, **found)


def round_reviews(review_round: ReviewRound, filters: ReviewFilters) -> QuerySet[Review]:
    """The round's submitted reviews that pass ``filters``, in the filters' order with the
    review id as tie-breaker (same direction), so pages and previous/next are stable.

    Each review comes with ``instance`` and ``expert`` loaded and is annotated with
    ``predicted_label`` (the round's model's prediction, None if missing): one query for any
    number of rows."""
    predicted = Prediction.objects.filter(
        instance=OuterRef("instance_id"), model_version_id=review_round.model_version_id
    ).values("label")[:1]
    qs = (
        Review.objects.filter(round=review_round, submitted_at__isnull=False)
        .select_related("instance", "expert")
        .annotate(predicted_label=Subquery(predicted))
    )
    if filters.verdict is not None:
        qs = qs.filter(prediction_verdict=filters.verdict)
    if filters.acceptable is not None:
        wanted = ACCEPTABLE_VALUES[filters.acceptable]
        qs = qs.filter(acceptable__isnull=True) if wanted is None else qs.filter(acceptable=wanted)
    if filters.expert is not None:
        qs = qs.filter(expert__username=filters.expert)
    if filters.true_label is not None:
        qs = qs.filter(instance__label=filters.true_label)
    if filters.expected_label is not None:
        qs = qs.filter(expected_label=filters.expected_label)
    if filters.predicted_label is not None:
        qs = qs.filter(predicted_label=filters.predicted_label)
    descending = filters.sort.startswith("-")
    column = F(SORTS[filters.sort.removeprefix("-")])
    tie = F("id")
    if descending:
        return qs.order_by(column.desc(nulls_last=True), tie.desc())
    return qs.order_by(column.asc(nulls_last=True), tie.asc())


# --- Saliency and alignment of a page of rows ---------------------------------------------


def attach_saliency(
    reviews: Sequence[Review], review_round: ReviewRound, *, alignment: bool = True
) -> None:
    """Set ``saliency`` (the round's default-settings map for the predicted class, or None)
    and ``alignment`` (``evidence_alignment``'s dict: iou and both coverages, or None without
    a map or regions) on each review of ``reviews``: one query for the maps, then one read of
    each map that has regions to compare. Meant for a page of rows (or a chunk of an export),
    never a whole round at once: reading maps costs file reads."""
    from annotations.services.explanations import evidence_alignment

    for review in reviews:
        review.saliency = None
        review.alignment = None
    method = review_round.explanation_method
    if not method or not reviews:
        return
    maps = {
        (e.instance_id, e.target): e
        for e in Explanation.objects.filter(
            model_version_id=review_round.model_version_id,
            method=method,
            settings_key="",
            instance_id__in={r.instance_id for r in reviews},
        ).only("id", "instance_id", "target", "raw", "signed")
    }
    for review in reviews:
        exp = maps.get((review.instance_id, getattr(review, "predicted_label", None)))
        review.saliency = exp
        if exp is not None and alignment and review.evidence:
            review.alignment = evidence_alignment(
                explanation=exp,
                regions=review.evidence,
                width=review.instance.width,
                height=review.instance.height,
            )


def instance_page_url(review: Review, filters: ReviewFilters) -> str:
    """The instance page of a row, carrying the list it was opened from (the round and the
    same filters and sort), so the instance page can offer previous and next in it."""
    from django.urls import reverse

    query = urlencode({"from": "round", "round": review.round_id, **filters.as_params()})
    return f"{reverse('instance', args=[review.instance_id])}?{query}"


def review_row(review: Review, filters: ReviewFilters) -> dict[str, Any]:
    """One row as the JSON API gives it (and the CSV flattens): ``review`` comes from
    ``round_reviews`` with ``attach_saliency`` applied."""
    from django.urls import reverse

    saliency = getattr(review, "saliency", None)
    return {
        "id": review.pk,
        "task": review.task_id,
        "instance": review.instance_id,
        "expert": review.expert.username,
        "true_label": review.instance.label,
        "expected_label": review.expected_label,
        "expected_confidence": review.expected_confidence,
        "predicted_label": review.predicted_label,
        "prediction_verdict": review.prediction_verdict,
        "feature_verdict": review.feature_verdict,
        "acceptable": review.acceptable,
        "severity": review.severity,
        "reason": review.reason,
        "concepts": list(review.concepts or []),
        "free_tags": list(review.free_tags or []),
        "comment": review.comment,
        "alignment": getattr(review, "alignment", None),
        "server_seconds": review.server_seconds,
        "client_seconds": review.client_seconds,
        "submitted_at": review.submitted_at.isoformat() if review.submitted_at else None,
        "image_url": reverse("api-instance-image", args=[review.instance_id]),
        "saliency_thumbnail_url": reverse("api-explanation-file", args=[saliency.pk, "thumbnail"])
        if saliency is not None
        else None,
        "instance_page_url": instance_page_url(review, filters),
    }


CSV_COLUMNS = (
    *("review", "instance", "expert", "true_label", "expected_label", "expected_confidence"),
    *("predicted_label", "prediction_verdict", "feature_verdict", "acceptable", "severity"),
    *("reason", "concepts", "free_tags", "iou", "ground_truth_coverage", "saliency_coverage"),
    *("server_seconds", "client_seconds", "submitted_at", "comment"),
)


def csv_values(row: dict[str, Any]) -> list[Any]:
    """A ``review_row`` as the CSV's cells (``CSV_COLUMNS``): tags joined with "; ",
    acceptable as yes/no, alignment as its three metrics, empty for None."""
    alignment = row["alignment"] or {}
    acceptable = {True: "yes", False: "no"}.get(row["acceptable"], "")
    flat = row | {
        "review": row["id"],
        "acceptable": acceptable,
        "concepts": "; ".join(row["concepts"]),
        "free_tags": "; ".join(row["free_tags"]),
        **{k: alignment.get(k) for k in ("iou", "ground_truth_coverage", "saliency_coverage")},
    }
    return [_cell(flat[c]) for c in CSV_COLUMNS]


# A cell a spreadsheet would run as a formula (OWASP "CSV injection"): an expert's comment
# or tag starting with "=", "+", "-", "@" or a control character. Such text cells get a
# leading apostrophe, which spreadsheets show as text; numbers are left as they are.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def in_chunks(reviews: Iterable[Review], size: int) -> Iterator[list[Review]]:
    chunk: list[Review] = []
    for review in reviews:
        chunk.append(review)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
