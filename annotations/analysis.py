"""Reads for failure analysis: where a model version errs (its confusion matrix and the
instances of one cell), what the experts said about one instance and where they disagree, and
how far the review rounds have covered a model version.

These answer the first questions of PRODUCT.md's question bank ("Where does the model make
errors, into which classes, with high or low confidence?", "Is this inference really
incorrect?"). They are selectors like those in ``selectors.py``, kept in their own module
because the failure-analysis pages and the coming clustering issue grow them together.

Every function costs a fixed number of queries whatever the data's size; the page tests pin
those counts, so a template loop can never turn one of them into N+1.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce

from annotations import selectors
from annotations.models import (
    Explanation,
    Instance,
    InstanceComment,
    ModelVersion,
    Prediction,
    PredictionVerdict,
    Project,
    Review,
    ReviewRound,
    ReviewTask,
    TaskStatus,
)
from annotations.permissions import is_expert_only, roles_in_project

# --- Confusion matrix ---------------------------------------------------------------------


@dataclass(frozen=True)
class ConfusionCell:
    true_label: str
    predicted_label: str
    count: int
    # count / instances of this true label (the row): the recall of the class on the diagonal.
    share: float

    @property
    def diagonal(self) -> bool:
        return self.true_label == self.predicted_label


@dataclass(frozen=True)
class ConfusionRow:
    true_label: str
    total: int
    cells: list[ConfusionCell]


@dataclass(frozen=True)
class ConfusionMatrix:
    """Counts of (true label, predicted label) over one model version's predictions.

    ``labels`` orders both axes: the project's labels, then any label the data holds that the
    project does not (an import should never let one in, but a matrix that silently dropped
    it would misstate the totals). Unlabelled instances (deployment samples) have no true
    label and are left out.
    """

    labels: list[str]
    counts: dict[tuple[str, str], int]
    split: str | None

    def count(self, true_label: str, predicted_label: str) -> int:
        return self.counts.get((true_label, predicted_label), 0)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def correct(self) -> int:
        return sum(n for (t, p), n in self.counts.items() if t == p)

    @property
    def errors(self) -> int:
        return self.total - self.correct

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None

    @property
    def max_error_count(self) -> int:
        return max((n for (t, p), n in self.counts.items() if t != p), default=0)

    @property
    def max_correct_count(self) -> int:
        return max((n for (t, p), n in self.counts.items() if t == p), default=0)

    def column_totals(self) -> list[int]:
        return [sum(self.count(t, p) for t in self.labels) for p in self.labels]

    def rows(self) -> list[ConfusionRow]:
        out = []
        for t in self.labels:
            total = sum(self.count(t, p) for p in self.labels)
            cells = [
                ConfusionCell(t, p, self.count(t, p), self.count(t, p) / total if total else 0.0)
                for p in self.labels
            ]
            out.append(ConfusionRow(true_label=t, total=total, cells=cells))
        return out


def _scoped_predictions(model_version: ModelVersion, split: str | None) -> QuerySet[Prediction]:
    qs = Prediction.objects.filter(model_version=model_version).exclude(instance__label="")
    if split:
        qs = qs.filter(instance__split=split)
    return qs


def confusion_matrix(*, model_version: ModelVersion, split: str | None = None) -> ConfusionMatrix:
    """The confusion matrix of ``model_version`` on ``split`` (all splits when None).

    One aggregate query (GROUP BY true label, predicted label); the project's labels come
    from ``model_version.project``, which callers load with the model version.
    """
    rows = (
        _scoped_predictions(model_version, split)
        .values_list("instance__label", "label")
        .annotate(n=Count("id"))
        .order_by()
    )
    counts = {(t, p): n for t, p, n in rows}
    labels = list(model_version.project.labels)
    extra = sorted({label for pair in counts for label in pair} - set(labels))
    return ConfusionMatrix(labels=labels + extra, counts=counts, split=split or None)


def _explanation_of_prediction(
    model_version: ModelVersion, method: str | None, target: str | None = None
) -> Subquery:
    """The id of a map explaining the prediction itself (target = predicted class): the one
    that says what the model looked at for the answer it gave; or, with ``target``, the map
    of that class ("why P and not Q": what in the image speaks for Q)."""
    maps = Explanation.objects.filter(
        instance_id=OuterRef("instance_id"),
        model_version=model_version,
        target=OuterRef("label") if target is None else target,
        settings_key="",  # the default settings' map
    )
    if method:
        maps = maps.filter(method=method)
    return Subquery(maps.order_by("id").values("id")[:1])


def _submitted_review_count() -> Coalesce:
    reviewed = (
        Review.objects.filter(instance_id=OuterRef("instance_id"), submitted_at__isnull=False)
        .order_by()
        .values("instance_id")
        .annotate(n=Count("id"))
        .values("n")
    )
    return Coalesce(Subquery(reviewed, output_field=IntegerField()), Value(0))


def confusion_cell_instances(
    *,
    model_version: ModelVersion,
    true_label: str,
    predicted_label: str,
    split: str | None = None,
    method: str | None = None,
    target: str | None = None,
) -> QuerySet[Prediction]:
    """The predictions of one confusion cell, most confident first (a confident error is the
    likeliest unknown unknown), each with its ``instance`` loaded, ``explanation_id`` (a map
    of the predicted class, or of ``target`` when given, by ``method`` when given, else any;
    None when none exists yet) and ``review_count`` (submitted reviews of the instance in any
    round).

    One query per page of results, whatever the page size.
    """
    return (
        _scoped_predictions(model_version, split)
        .filter(instance__label=true_label, label=predicted_label)
        .select_related("instance")
        .only(
            "id",
            "label",
            "confidence",
            "instance_id",
            "instance__id",
            "instance__label",
            "instance__split",
            "instance__width",
            "instance__height",
            "instance__original_name",
        )
        .annotate(
            explanation_id=_explanation_of_prediction(model_version, method, target),
            review_count=_submitted_review_count(),
        )
        .order_by("-confidence", "instance_id")
    )


# --- One instance -------------------------------------------------------------------------


def instance_predictions(*, instance: Instance) -> list[Prediction]:
    """Every model version's prediction of the instance, oldest version first, each with
    ``explanation_id`` (a map of its predicted class, any method) for a saliency thumbnail."""
    maps = Explanation.objects.filter(
        instance_id=OuterRef("instance_id"),
        model_version_id=OuterRef("model_version_id"),
        target=OuterRef("label"),
        settings_key="",
    )
    return list(
        Prediction.objects.filter(instance=instance)
        .select_related("model_version")
        .defer("embedding")
        .annotate(explanation_id=Subquery(maps.order_by("id").values("id")[:1]))
        .order_by("model_version__version")
    )


def instance_explanations(*, instance: Instance) -> list[Explanation]:
    """The instance's maps with the default settings (the ones rounds and thumbnails show),
    of every model version, method and target, newest version first, with the model version
    loaded. One query."""
    return list(
        Explanation.objects.filter(instance=instance, settings_key="")
        .select_related("model_version")
        .order_by("-model_version__version", "method", "target", "id")
    )


def instance_reviews(*, instance: Instance) -> list[Review]:
    """The instance's submitted reviews in every round, with expert and round loaded.
    Unsubmitted ones are left out: a half-done expectation is the expert's draft, not yet a
    judgement anyone should read."""
    return list(
        Review.objects.filter(instance=instance, submitted_at__isnull=False)
        .select_related("expert", "round__model_version")
        .order_by("submitted_at", "id")
    )


def instance_comments(*, instance: Instance) -> QuerySet[InstanceComment]:
    return InstanceComment.objects.filter(instance=instance).select_related("author")


@dataclass(frozen=True)
class Disagreement:
    # "expert_vs_model", "expert_vs_ground_truth" or "expert_vs_expert".
    kind: str
    text: str
    experts: list[str] = field(default_factory=list)


def _grouped(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for value, who in pairs:
        out[value].append(who)
    return dict(out)


def _split_text(what: str, groups: dict[str, list[str]]) -> str:
    parts = [f"{value} ({', '.join(who)})" for value, who in sorted(groups.items())]
    return f"{what} differ: " + "; ".join(parts) + "."


def instance_disagreements(
    *,
    instance: Instance,
    reviews: Sequence[Review] | None = None,
    predictions: Sequence[Prediction] | None = None,
) -> list[Disagreement]:
    """Where the submitted reviews of ``instance`` disagree with the model, the ground truth
    or one another. Pass the reviews and predictions the caller already loaded (from
    ``instance_reviews`` and ``instance_predictions``) to spend no query; they are loaded
    otherwise.

    Verdicts judge one model version's prediction, so expert-vs-expert splits of verdicts are
    compared among the reviews of the same model version; expected labels do not depend on the
    model and are compared across all reviews.
    """
    if reviews is None:
        reviews = instance_reviews(instance=instance)
    if predictions is None:
        predictions = instance_predictions(instance=instance)
    predicted = {p.model_version_id: p for p in predictions}
    found: list[Disagreement] = []

    for r in reviews:
        who = r.expert.username
        mv = r.round.model_version
        prediction = predicted.get(mv.pk)
        if r.expected_label and prediction and r.expected_label != prediction.label:
            found.append(
                Disagreement(
                    "expert_vs_model",
                    f"{who} expected {r.expected_label}; v{mv.version} predicted "
                    f"{prediction.label} ({prediction.confidence:.0%}).",
                    [who],
                )
            )
        if r.prediction_verdict == PredictionVerdict.INCORRECT:
            judged = "an acceptable" if r.acceptable else "an unacceptable"
            if r.acceptable is None:
                judged = "an"
            severity = f", severity {r.severity}" if r.severity else ""
            found.append(
                Disagreement(
                    "expert_vs_model",
                    f"{who} judged v{mv.version}'s prediction {judged} error{severity}.",
                    [who],
                )
            )
        if r.expected_label and instance.label and r.expected_label != instance.label:
            found.append(
                Disagreement(
                    "expert_vs_ground_truth",
                    f"{who} expected {r.expected_label}; the ground truth says {instance.label}.",
                    [who],
                )
            )
        if r.prediction_verdict == PredictionVerdict.GROUND_TRUTH_WRONG:
            found.append(
                Disagreement(
                    "expert_vs_ground_truth",
                    f"{who} thinks the ground truth ({instance.label or 'none'}) is wrong.",
                    [who],
                )
            )

    expected = _grouped(
        [(r.expected_label, r.expert.username) for r in reviews if r.expected_label]
    )
    if len(expected) > 1:
        found.append(
            Disagreement(
                "expert_vs_expert",
                _split_text("Expected labels", expected),
                sorted({w for who in expected.values() for w in who}),
            )
        )
    by_model: dict[int, list[Review]] = defaultdict(list)
    for r in reviews:
        by_model[r.round.model_version_id].append(r)
    for mv_reviews in by_model.values():
        version = mv_reviews[0].round.model_version.version
        for attr, what in (
            ("prediction_verdict", "verdicts"),
            ("feature_verdict", "feature verdicts"),
            ("acceptable", "acceptability judgements"),
        ):
            values = [
                (_display(r, attr), r.expert.username)
                for r in mv_reviews
                if getattr(r, attr) not in ("", None)
            ]
            groups = _grouped(values)
            if len(groups) > 1:
                found.append(
                    Disagreement(
                        "expert_vs_expert",
                        _split_text(f"Experts' {what} on v{version}", groups),
                        sorted({who for _, who in values}),
                    )
                )
    return found


def _display(review: Review, attr: str) -> str:
    if attr == "acceptable":
        return "acceptable" if review.acceptable else "unacceptable"
    return str(getattr(review, f"get_{attr}_display")())


# --- Rounds and coverage ------------------------------------------------------------------


def rounds_with_progress(*, project: Project, user: Any) -> QuerySet[ReviewRound]:
    """The rounds ``user`` may see (``selectors.rounds_for_user``), newest first, with
    ``task_total`` and ``task_submitted`` counted in the same query, for lists that show a
    progress bar per round."""
    return (
        selectors.rounds_for_user(project=project, user=user)
        .annotate(
            task_total=Count("tasks", distinct=True),
            task_submitted=Count(
                "tasks", filter=Q(tasks__status=TaskStatus.SUBMITTED), distinct=True
            ),
        )
        .order_by("-created_at")
    )


def review_coverage(*, project: Project) -> dict[int, dict[str, int]]:
    """Per model version id: ``sampled`` (distinct instances in any of its rounds) and
    ``reviewed`` (those with at least one submitted review). One query."""
    rows = (
        ReviewTask.objects.filter(round__project=project)
        .values("round__model_version_id")
        .annotate(
            sampled=Count("instance_id", distinct=True),
            reviewed=Count("instance_id", filter=Q(status=TaskStatus.SUBMITTED), distinct=True),
        )
        .order_by()
    )
    return {
        r["round__model_version_id"]: {"sampled": r["sampled"], "reviewed": r["reviewed"]}
        for r in rows
    }


def round_progress_for_user(*, review_round: ReviewRound, user: Any) -> dict[str, Any]:
    """``selectors.round_progress`` as ``user`` may see it: an expert (and nothing else in
    the project) gets the overall figures and only their own row, since the other rows
    would tell them who else reviews and how fast. The page and the progress API agree."""
    progress = selectors.round_progress(review_round=review_round)
    if is_expert_only(roles_in_project(user, review_round.project_id)):
        progress["experts"] = [r for r in progress["experts"] if r["expert"] == user.pk]
    if any(r["expert"] == user.pk for r in progress["experts"]):  # no query: the rows say
        # "n left for you" on the review page: the images this expert can still be given
        # (open slots of instances they have neither had nor skipped) plus the one they hold.
        progress["available_to_you"] = selectors.tasks_available_count(
            review_round=review_round, expert=user
        )
    return progress
