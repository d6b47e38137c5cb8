"""Reads. Views and commands call these instead of building querysets themselves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connections
from django.db.models import Count, Exists, OuterRef, QuerySet

from annotations.models import (
    Dataset,
    Explanation,
    Instance,
    Job,
    Membership,
    ModelVersion,
    Prediction,
    Project,
    Review,
    ReviewDraft,
    ReviewRound,
    ReviewTask,
    TaskStatus,
)
from annotations.prepared import Joined, Statement, literal, names
from explain_worker import methods


def dataset_list(*, project: Project) -> QuerySet[Dataset]:
    return project.datasets.annotate(instance_count=Count("instances")).order_by("name")


def instance_list(*, dataset: Dataset) -> QuerySet[Instance]:
    return dataset.instances.order_by("id")


def model_version_list(*, project: Project) -> QuerySet[ModelVersion]:
    return project.model_versions.annotate(prediction_count=Count("predictions")).order_by(
        "version"
    )


def prediction_list(*, model_version: ModelVersion) -> QuerySet[Prediction]:
    # The embedding is large and only the compute side reads it.
    return (
        model_version.predictions.select_related("instance")
        .defer("embedding")
        .order_by("instance_id")
    )


def job_list(*, project: Project) -> QuerySet[Job]:
    return project.jobs.order_by("-created_at")


def instances_missing_predictions(*, model_version: ModelVersion) -> QuerySet[Instance]:
    """Instances of the model's project that have no prediction by it yet, oldest first.

    Selecting by state (not by a cursor kept in the job) is what makes a re-run or a second
    worker after a crash pick up exactly the remaining work.
    """
    return (
        Instance.objects.filter(project_id=model_version.project_id)
        .exclude(predictions__model_version=model_version)
        .order_by("id")
    )


def project_known_hashes(*, dataset: Dataset) -> set[str]:
    return set(dataset.instances.values_list("content_hash", flat=True))


def instance_count(*, project: Project) -> int:
    return Instance.objects.filter(project=project).count()


def model_version_summary(*, model_version: ModelVersion) -> dict[str, dict[str, float | int]]:
    """Per split: instances with a prediction, correct ones, accuracy and mean confidence."""
    return model_version_summaries(model_versions=[model_version]).get(model_version.pk, {})


def model_version_summaries(
    *, model_versions: Sequence[ModelVersion]
) -> dict[int, dict[str, dict[str, float | int]]]:
    """``model_version_summary`` of several versions in one query (pages list every version
    of a project): {model version id: {split: summary}}."""
    from django.db.models import Avg, F, Q

    rows = (
        Prediction.objects.filter(model_version__in=[mv.pk for mv in model_versions])
        .exclude(instance__label="")
        .values("model_version_id", "instance__split")
        .annotate(
            n=Count("id"),
            correct=Count("id", filter=Q(label=F("instance__label"))),
            mean_confidence=Avg("confidence"),
        )
        .order_by("model_version_id", "instance__split")
    )
    summaries: dict[int, dict[str, dict[str, float | int]]] = {mv.pk: {} for mv in model_versions}
    for r in rows:
        summaries[r["model_version_id"]][r["instance__split"]] = {
            "predictions": r["n"],
            "correct": r["correct"],
            "accuracy": round(r["correct"] / r["n"], 4) if r["n"] else 0.0,
            "mean_confidence": round(r["mean_confidence"] or 0.0, 4),
        }
    return summaries


def dataset_split_counts(*, project: Project) -> list[dict]:
    return list(
        Instance.objects.filter(project=project)
        .values("dataset__name", "split")
        .annotate(n=Count("id"))
        .order_by("dataset__name", "split")
    )


def explanation_scope(*, model_version: ModelVersion, params: dict) -> QuerySet[Instance]:
    """The instances an explanation job covers (its ``params``: instance_ids, split)."""
    qs = Instance.objects.filter(project_id=model_version.project_id)
    if params.get("instance_ids") is not None:
        qs = qs.filter(pk__in=params["instance_ids"])
    if params.get("split"):
        qs = qs.filter(split=params["split"])
    return qs


def explanation_settings_key(model_version: ModelVersion, config: methods.AttributionConfig) -> str:
    """The ``settings_key`` of the maps ``config`` makes for ``model_version`` ("" for the
    method's defaults, which rounds show); computed from a job's own settings, so jobs
    queued before the key existed write under the right one."""
    return methods.settings_key(config.params(), model_version.default_layer or None)


def instances_missing_explanations(
    *, model_version: ModelVersion, params: dict
) -> QuerySet[Instance]:
    """Instances of a job's scope without a map yet, annotated with ``predicted_label`` (None
    when not predicted yet). With no fixed target, the target is each instance's predicted
    class, so "done" means a map exists for exactly that class."""
    from django.db.models import Exists, OuterRef, Subquery

    from annotations.models import Explanation

    predicted = Prediction.objects.filter(
        instance=OuterRef("pk"), model_version=model_version
    ).values("label")[:1]
    qs = explanation_scope(model_version=model_version, params=params).annotate(
        predicted_label=Subquery(predicted)
    )
    target = params.get("target")
    done = Explanation.objects.filter(
        instance=OuterRef("pk"),
        model_version=model_version,
        method=params["method"],
        target=target if target is not None else OuterRef("predicted_label"),
        settings_key=explanation_settings_key(
            model_version, methods.AttributionConfig(**params["config"])
        ),
    )
    return qs.exclude(Exists(done)).order_by("id")


def explanation_list(*, model_version: ModelVersion) -> QuerySet:
    return model_version.explanations.order_by("instance_id", "method", "target")


# --- Review rounds ------------------------------------------------------------------------


def rounds_for_user(*, project: Project, user) -> QuerySet:
    """Scientists, approvers and viewers see every round of the project; experts theirs."""
    from annotations.models import ReviewRound
    from annotations.permissions import READ_AGGREGATES, roles_in_project

    rounds = ReviewRound.objects.filter(project=project).select_related("model_version")
    roles = roles_in_project(user, project.pk)
    if roles & (set(READ_AGGREGATES) - {"expert"}):
        return rounds
    return rounds.filter(experts=user)


def open_slots_for_expert(*, review_round, expert) -> QuerySet:
    """Open slots of instances the expert has neither had nor skipped (unordered). The
    claim in ``services.reviews`` runs the same selection as hand-written SQL."""
    from annotations.models import ReviewTask, TaskSkip, TaskStatus

    same_instance = {"round": review_round, "instance_id": OuterRef("instance_id")}
    return (
        ReviewTask.objects.filter(round=review_round, status=TaskStatus.OPEN)
        .exclude(Exists(ReviewTask.objects.filter(expert=expert, **same_instance)))
        .exclude(Exists(TaskSkip.objects.filter(expert=expert, **same_instance)))
    )


def tasks_available_count(*, review_round, expert) -> int:
    """Instances the expert could still be given (each counted once, whatever the overlap)."""
    return (
        open_slots_for_expert(review_round=review_round, expert=expert)
        .values("instance_id")
        .distinct()
        .count()
    )


def round_progress(*, review_round) -> dict:
    """Overall and per-expert progress: assigned, in progress, submitted, expired, ETA."""
    from django.db.models import Min
    from django.utils import timezone

    from annotations.models import LeaseExpiry, ReviewTask, TaskSkip, TaskStatus

    now = timezone.now()
    tasks = ReviewTask.objects.filter(round=review_round)
    by_status = dict(tasks.values_list("status").annotate(n=Count("id")).order_by())
    live = tasks.filter(status=TaskStatus.LEASED, lease_expires_at__gt=now)
    total = sum(by_status.values())
    submitted = by_status.get(TaskStatus.SUBMITTED, 0)
    first_lease = tasks.aggregate(t=Min("leased_at"))["t"]
    eta = None
    if submitted and first_lease and submitted < total:
        rate = submitted / max((now - first_lease).total_seconds(), 1e-6)
        eta = round((total - submitted) / rate, 1)
    per_expert: dict[int, dict] = {}

    def row(user_id: int) -> dict:
        return per_expert.setdefault(
            user_id,
            {
                "expert": user_id,
                "assigned": 0,
                "in_progress": 0,
                "submitted": 0,
                "expired": 0,
                "skipped": 0,
            },
        )

    for user_id, username in review_round.experts.values_list("id", "username"):
        row(user_id)["username"] = username
    expired = LeaseExpiry.objects.filter(task__round=review_round)
    counted = {
        "in_progress": live,
        "submitted": tasks.filter(status=TaskStatus.SUBMITTED),
        "expired": expired,
        "skipped": TaskSkip.objects.filter(round=review_round),
    }
    for key, rows in counted.items():
        for user_id, n in rows.values_list("expert").annotate(n=Count("id")).order_by():
            row(user_id)[key] = n
    for r in per_expert.values():
        r["assigned"] = r["in_progress"] + r["submitted"] + r["expired"] + r["skipped"]
    return {
        "total": total,
        "open": by_status.get(TaskStatus.OPEN, 0),
        "in_progress": live.count(),
        "submitted": submitted,
        "expired": expired.count(),
        "eta_seconds": eta,
        "experts": sorted(per_expert.values(), key=lambda r: r["expert"]),
    }


# --- Expert inbox -------------------------------------------------------------------------


def expert_inbox(*, user) -> list[dict]:
    """The rounds ``user`` is an expert in, open ones first (then by due date, soonest first,
    rounds without one last), each a dict: ``round``, ``available`` (as
    ``tasks_available_count`` counts it), the expert's own ``submitted``, ``in_progress``,
    ``expired``, ``skipped`` and ``assigned`` (as their row of ``round_progress``), ``is_open``
    and ``overdue`` (open and past its due date).

    Five queries whatever the number of rounds: the per-round selectors would cost several
    queries a round, which the home page cannot afford (it lists every round).
    """
    from django.db.models import Exists, OuterRef, Q
    from django.utils import timezone

    from annotations.models import (
        LeaseExpiry,
        Membership,
        ReviewRound,
        ReviewTask,
        TaskSkip,
        TaskStatus,
    )

    now = timezone.now()
    # Only rounds of projects the user still belongs to (as the access helpers require).
    member = Membership.objects.filter(project_id=OuterRef("project_id"), user=user)
    rounds = list(
        ReviewRound.objects.filter(Exists(member), experts=user).select_related(
            "project", "model_version"
        )
    )
    if not rounds:
        return []
    ids = [r.pk for r in rounds]
    own = dict.fromkeys(ids, (0, 0))
    for round_id, submitted, live in (
        ReviewTask.objects.filter(round_id__in=ids, expert=user)
        .values("round_id")
        .annotate(
            submitted=Count("id", filter=Q(status=TaskStatus.SUBMITTED)),
            live=Count("id", filter=Q(status=TaskStatus.LEASED, lease_expires_at__gt=now)),
        )
        .values_list("round_id", "submitted", "live")
    ):
        own[round_id] = (submitted, live)
    expired = dict(
        LeaseExpiry.objects.filter(task__round_id__in=ids, expert=user)
        .values("task__round_id")
        .annotate(n=Count("id"))
        .values_list("task__round_id", "n")
    )
    skipped = dict(
        TaskSkip.objects.filter(round_id__in=ids, expert=user)
        .values("round_id")
        .annotate(n=Count("id"))
        .values_list("round_id", "n")
    )
    same_instance = {"round_id": OuterRef("round_id"), "instance_id": OuterRef("instance_id")}
    available = dict(
        ReviewTask.objects.filter(round_id__in=ids, status=TaskStatus.OPEN)
        .exclude(Exists(ReviewTask.objects.filter(expert=user, **same_instance)))
        .exclude(Exists(TaskSkip.objects.filter(expert=user, **same_instance)))
        .values("round_id")
        .annotate(n=Count("instance_id", distinct=True))
        .values_list("round_id", "n")
    )
    entries = []
    for r in rounds:
        submitted, in_progress = own[r.pk]
        entry = {
            "round": r,
            "available": available.get(r.pk, 0),
            "submitted": submitted,
            "in_progress": in_progress,
            "expired": expired.get(r.pk, 0),
            "skipped": skipped.get(r.pk, 0),
            "is_open": r.status == "open",
            "overdue": r.status == "open" and r.due_at is not None and r.due_at < now,
        }
        # As in round_progress: every task the expert has held, whatever became of it.
        entry["assigned"] = submitted + in_progress + entry["expired"] + entry["skipped"]
        entries.append(entry)
    entries.sort(
        key=lambda e: (
            not e["is_open"],
            e["round"].due_at is None,
            e["round"].due_at or now,
            -e["round"].created_at.timestamp(),
        )
    )
    return entries


# --- The expert's hot path ----------------------------------------------------------------


@dataclass(frozen=True)
class LeaseState:
    """An expert's standing in a round at ``now``: their oldest live lease, and whether any
    lease of the round has expired (``services.reviews.task_next`` returns the first, and
    sweeps the second before claiming)."""

    expert_id: int
    own_task_id: int | None
    any_expired: bool
    now: datetime


def lease_state_columns(round_id_sql: str) -> str:
    """The two ``LeaseState`` columns as SQL, for the round ``round_id_sql`` (a column or a
    parameter), with the parameters ``%(user)s`` and ``%(now)s``."""
    leased = literal(TaskStatus.LEASED)
    table, col = names(ReviewTask)
    return (
        f"(SELECT o.{col['id']} FROM {table} o WHERE o.{col['round']} = {round_id_sql} "
        f"AND o.{col['expert']} = %(user)s AND o.{col['status']} = {leased} "
        f"AND o.{col['lease_expires_at']} > %(now)s ORDER BY o.{col['leased_at']} LIMIT 1), "
        f"EXISTS (SELECT 1 FROM {table} x WHERE x.{col['round']} = {round_id_sql} "
        f"AND x.{col['status']} = {leased} AND x.{col['lease_expires_at']} <= %(now)s)"
    )


def lease_state_params(*, expert_id: int, now: datetime) -> dict[str, Any]:
    return {
        "user": expert_id,
        "now": connections["default"].ops.adapt_datetimefield_value(now),
    }


@cache
def _lease_state_statement() -> Statement:
    return Statement(f"SELECT {lease_state_columns('%(round)s')}")


def lease_state(*, round_id: int, expert_id: int, now: datetime) -> LeaseState:
    """``LeaseState`` in one prepared statement."""
    with connections["default"].cursor() as cursor:
        _lease_state_statement().execute(
            cursor, {"round": round_id, **lease_state_params(expert_id=expert_id, now=now)}
        )
        own_id, any_expired = cursor.fetchone()
    return LeaseState(expert_id, own_id, bool(any_expired), now)


# What the hot path reads of a task's round, project, model version and instance: their
# other fields (a round's sampling strategy and counts, a model's preprocessing, an
# instance's metadata) are deferred, since decoding their JSON on every request cost more
# than the query. A deferred field still loads when read, with a query of its own.
ROUND_FIELDS = (
    *("project", "model_version", "name", "status", "overlap", "due_at", "blind_first"),
    *("explanation_method", "questions", "lease_seconds", "created_at", "closed_at"),
)
PROJECT_FIELDS = ("name", "slug", "labels", "concept_vocabulary")
MODEL_VERSION_FIELDS = ("project", "version", "name", "kind", "label_order", "status")
INSTANCE_FIELDS = ("project", "dataset", "image", "width", "height", "label", "split")


@cache
def _task_statement(lock: bool, using: str = "default") -> tuple[Joined, Statement]:
    """``task_in_context``'s one query: the task with its round, project, model version
    and instance, the review of the task's expert, the asking user's draft, the round's
    model's prediction and its saliency map for the predicted class (outer joins on unique
    keys), and with ``lock`` the task row locked for the transaction."""
    j = Joined(
        using,
        extra={"draft": ReviewDraft._meta.get_field("data"), "is_member": None},
        t=ReviewTask,
        r=(ReviewRound, ROUND_FIELDS),
        p=(Project, PROJECT_FIELDS),
        mv=(ModelVersion, MODEL_VERSION_FIELDS),
        i=(Instance, INSTANCE_FIELDS),
        rv=Review,
        pr=(Prediction, ("label", "confidence", "probabilities")),  # not the embedding
        ex=Explanation,
    )
    drafts, dc = names(ReviewDraft, using)
    d = {name: f"d.{dc[name]}" for name in ("round", "instance", "expert", "data")}
    members, m = names(Membership, using)
    features = connections[using].features
    lock_clause = " FOR UPDATE OF t" if lock and features.has_select_for_update_of else ""
    sql = (
        f"SELECT {j.columns}, {d['data']}, "
        # Whether the asking user is still a member of the project: a removed member loses
        # their tasks at once (permissions.access_task_by_id).
        f"EXISTS (SELECT 1 FROM {members} m WHERE m.{m['project']} = {j.column('r', 'project')} "
        f"AND m.{m['user']} = %(user)s) "
        f"FROM {j.table('t')} "
        f"JOIN {j.table('r')} ON {j.column('r', 'id')} = {j.column('t', 'round')} "
        f"JOIN {j.table('p')} ON {j.column('p', 'id')} = {j.column('r', 'project')} "
        f"JOIN {j.table('mv')} ON {j.column('mv', 'id')} = {j.column('r', 'model_version')} "
        f"JOIN {j.table('i')} ON {j.column('i', 'id')} = {j.column('t', 'instance')} "
        f"LEFT JOIN {j.table('rv')} ON {j.column('rv', 'task')} = {j.column('t', 'id')} "
        f"AND {j.column('rv', 'expert')} = {j.column('t', 'expert')} "
        f"LEFT JOIN {drafts} d ON {d['round']} = {j.column('t', 'round')} "
        f"AND {d['instance']} = {j.column('t', 'instance')} AND {d['expert']} = %(user)s "
        f"LEFT JOIN {j.table('pr')} ON {j.column('pr', 'instance')} = {j.column('t', 'instance')} "
        f"AND {j.column('pr', 'model_version')} = {j.column('r', 'model_version')} "
        f"LEFT JOIN {j.table('ex')} ON {j.column('ex', 'instance')} = {j.column('t', 'instance')} "
        f"AND {j.column('ex', 'model_version')} = {j.column('r', 'model_version')} "
        f"AND {j.column('ex', 'method')} = {j.column('r', 'explanation_method')} "
        f"AND {j.column('ex', 'target')} = {j.column('pr', 'label')} "
        f"AND {j.column('ex', 'settings_key')} = '' "  # the default settings' map
        f"WHERE {j.column('t', 'id')} = %(task)s{lock_clause}"
    )
    return j, Statement(sql)


def task_in_context(*, task_id: int, user: Any, lock: bool = False) -> ReviewTask | None:
    """The task with ``round`` (with its ``project`` and ``model_version``) and ``instance``
    loaded, and set on it: ``loaded_review`` (the review of the task's expert),
    ``loaded_draft`` (``user``'s draft data), ``loaded_prediction`` (the round's model's
    prediction: label, confidence, probabilities) and ``loaded_saliency`` (the round's
    explanation method's map for the predicted class), each None when there is none:
    everything a task payload reads, in one prepared query. Loading the prediction shows
    it to nobody: the payload decides what the expert sees (blind-first).

    ``lock=True`` locks the task row (inside a transaction; on SQLite the transaction's
    write lock does it). None when there is no such task. Access is the caller's business
    (``permissions.access_task_by_id``)."""
    joined, statement = _task_statement(lock)
    found = joined.fetch_one(statement, {"user": user.pk, "task": task_id})
    if found is None:
        return None
    task, review_round = found["t"], found["r"]
    review_round.project = found["p"]
    review_round.model_version = found["mv"]
    task.round = review_round
    task.instance = found["i"]
    task.loaded_review = found["rv"]
    task.loaded_draft = found["extra"]["draft"]
    task.asker_is_member = bool(found["extra"]["is_member"])
    task.loaded_prediction = found["pr"]
    task.loaded_saliency = found["ex"]
    return task
