"""Access checks: one ``access_*_by_id`` helper per object type, used by every view.

A user who is not a member of an object's project gets 404 (the object's existence is not
revealed); a member whose roles do not allow the action gets 403. Superusers pass.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import cache
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404
from django.utils import timezone

from annotations import selectors
from annotations.models import (
    Dataset,
    Explanation,
    Instance,
    Job,
    Membership,
    ModelVersion,
    Project,
    Review,
    ReviewRound,
    ReviewTask,
    Role,
)
from annotations.prepared import Joined, Statement, names

User = AbstractBaseUser | AnonymousUser


# The largest id a bigint primary key can hold. The ORM answers "no such row" for a larger
# one (Django >= 5.0); the hot path's hand-written statements would send it to the database,
# which fails (500), so they check first.
MAX_ID = 2**63 - 1


def _real_id(value: int | str) -> bool:
    """Whether ``value`` (an int, or digits from a ``re_path``) can be a primary key."""
    try:
        return 0 < int(value) <= MAX_ID
    except (TypeError, ValueError):
        return False


def _one(queryset: QuerySet) -> Any:
    """The single row of a primary-key lookup, or None. Unlike ``.first()`` it adds no ORDER
    BY (the models' default orderings), which is measurable CPU on the experts' hot path."""
    return next(iter(queryset.order_by()[:1]), None)


# Who may do what. Experts get task-scoped access through review rounds (a later issue),
# so for now they see the project but none of its instances or predictions.
MANAGE: frozenset[str] = frozenset({Role.SCIENTIST})
READ_DETAILS: frozenset[str] = frozenset({Role.SCIENTIST, Role.APPROVER})
READ_AGGREGATES: frozenset[str] = frozenset(Role.values)


def roles_in_project(user: User, project_id: int) -> set[str]:
    if not user.is_authenticated:
        return set()
    if user.is_superuser:
        return set(Role.values)
    return set(user.memberships.filter(project_id=project_id).values_list("role", flat=True))


def is_expert_only(roles: set[str]) -> bool:
    """Whether these roles (``roles_in_project``) are expert alone: such users see their own
    work and nothing that would prime a blind judgement (other experts, how samples were
    drawn)."""
    return roles == {Role.EXPERT}


def projects_for_user(user: User) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def _check(user: User, project_id: int, allowed: Collection[str], what: str) -> None:
    roles = roles_in_project(user, project_id)
    if not roles:
        raise Http404(f"No {what} with that id.")
    if not roles & set(allowed):
        needed = " or ".join(sorted(allowed))
        raise PermissionDenied(f"This needs the {needed} role in the project.")


def access_project_by_id(
    user: User, project_id: int, *, allowed: Collection[str] = READ_AGGREGATES
) -> Project:
    project = _one(Project.objects.filter(pk=project_id))
    if project is None:
        raise Http404("No project with that id.")
    _check(user, project.pk, allowed, "project")
    return project


def access_dataset_by_id(
    user: User, dataset_id: int, *, allowed: Collection[str] = READ_DETAILS
) -> Dataset:
    dataset = _one(Dataset.objects.select_related("project").filter(pk=dataset_id))
    if dataset is None:
        raise Http404("No dataset with that id.")
    _check(user, dataset.project_id, allowed, "dataset")
    return dataset


def access_instance_by_id(
    user: User, instance_id: int, *, allowed: Collection[str] = READ_DETAILS
) -> Instance:
    instance = _one(Instance.objects.select_related("dataset").filter(pk=instance_id))
    if instance is None:
        raise Http404("No instance with that id.")
    _check(user, instance.project_id, allowed, "instance")
    return instance


def access_model_version_by_id(
    user: User, model_version_id: int, *, allowed: Collection[str] = READ_DETAILS
) -> ModelVersion:
    mv = _one(ModelVersion.objects.select_related("project").filter(pk=model_version_id))
    if mv is None:
        raise Http404("No model version with that id.")
    _check(user, mv.project_id, allowed, "model version")
    return mv


def access_job_by_id(user: User, job_id: int, *, allowed: Collection[str] = READ_AGGREGATES) -> Job:
    job = _one(Job.objects.filter(pk=job_id))
    if job is None:
        raise Http404("No job with that id.")
    _check(user, job.project_id, allowed, "job")
    return job


def access_explanation_by_id(
    user: User, explanation_id: int, *, allowed: Collection[str] = READ_DETAILS
) -> Explanation:
    exp = (
        Explanation.objects.select_related("instance", "model_version")
        .filter(pk=explanation_id)
        .first()
    )
    if exp is None:
        raise Http404("No explanation with that id.")
    _check(user, exp.model_version.project_id, allowed, "explanation")
    return exp


def access_round_by_id(
    user: User, round_id: int, *, allowed: Collection[str] = READ_AGGREGATES
) -> ReviewRound:
    """Experts reach only the rounds they are in; other roles every round of the project."""
    review_round = _one(
        ReviewRound.objects.select_related("project", "model_version").filter(pk=round_id)
    )
    if review_round is None:
        raise Http404("No review round with that id.")
    _check(user, review_round.project_id, allowed, "review round")
    roles = roles_in_project(user, review_round.project_id)
    if is_expert_only(roles) and not review_round.experts.filter(pk=user.pk).exists():
        raise Http404("No review round with that id.")
    return review_round


@cache
def _expert_round_statement(using: str = "default") -> tuple[Joined, Statement]:
    """``access_expert_round_by_id``'s one query (see ``annotations.prepared``), with the
    expert's ``selectors.LeaseState`` in the round."""
    j = Joined(
        using,
        extra={"is_expert": None, "is_member": None, "own_task_id": None, "any_expired": None},
        r=(ReviewRound, selectors.ROUND_FIELDS),
        p=(Project, selectors.PROJECT_FIELDS),
        mv=(ModelVersion, selectors.MODEL_VERSION_FIELDS),
    )
    experts, e = names(ReviewRound.experts.through, using)
    members, m = names(Membership, using)
    sql = (
        f"SELECT {j.columns}, "
        f"EXISTS (SELECT 1 FROM {experts} e "
        f"WHERE e.{e['reviewround']} = {j.column('r', 'id')} AND e.{e['user']} = %(user)s), "
        f"EXISTS (SELECT 1 FROM {members} m "
        f"WHERE m.{m['project']} = {j.column('r', 'project')} AND m.{m['user']} = %(user)s), "
        f"{selectors.lease_state_columns(j.column('r', 'id'))} "
        f"FROM {j.table('r')} "
        f"JOIN {j.table('p')} ON {j.column('p', 'id')} = {j.column('r', 'project')} "
        f"JOIN {j.table('mv')} ON {j.column('mv', 'id')} = {j.column('r', 'model_version')} "
        f"WHERE {j.column('r', 'id')} = %(round)s"
    )
    return j, Statement(sql)


def access_expert_round_by_id(user: User, round_id: int) -> ReviewRound:
    """A round the user reviews in, with its project and model version, checked in one
    prepared query: this is the next-task hot path, so the same query also reads the
    user's ``selectors.LeaseState`` in the round (set as ``review_round.lease_state`` for
    ``services.reviews.task_next``). A project member who is not one of the round's
    experts gets 403, anyone else 404."""
    if not user.is_authenticated or not _real_id(round_id):
        raise Http404("No review round with that id.")
    joined, statement = _expert_round_statement()
    now = timezone.now()
    params = {"round": round_id, **selectors.lease_state_params(expert_id=user.pk, now=now)}
    found = joined.fetch_one(statement, params)
    if found is not None:
        extra = found["extra"]
        if extra["is_expert"] and (extra["is_member"] or user.is_superuser):
            review_round = found["r"]
            review_round.project = found["p"]
            review_round.model_version = found["mv"]
            review_round.lease_state = selectors.LeaseState(
                user.pk, extra["own_task_id"], bool(extra["any_expired"]), now
            )
            return review_round
    # The slow path only decides between 404 and 403.
    access_round_by_id(user, round_id)
    raise PermissionDenied("You are not an expert of this round.")


def access_task_by_id(
    user: User, task_id: int, *, own: bool = True, lock: bool = False
) -> ReviewTask:
    """A task: its expert reaches it; with ``own=False`` scientists and approvers too.
    Anyone else gets 404, another expert's task included.

    The task comes from ``selectors.task_in_context`` (one query: the payload needs no more
    reads). ``lock=True`` (inside a transaction) also locks the task row, as the submits
    need: the state checked here is then the one they act on."""
    if not user.is_authenticated or not _real_id(task_id):
        raise Http404("No task with that id.")
    task = selectors.task_in_context(task_id=task_id, user=user, lock=lock)
    if task is None:
        raise Http404("No task with that id.")
    if not (task.asker_is_member or user.is_superuser):
        # A removed member loses their tasks at once, the ones they hold included.
        raise Http404("No task with that id.")
    if task.expert_id == user.pk:
        return task
    if not own and roles_in_project(user, task.round.project_id) & READ_DETAILS:
        return task
    raise Http404("No task with that id.")


def access_review_by_id(user: User, review_id: int, *, own: bool = False) -> Review:
    """Experts reach their own reviews; scientists and approvers every review of their
    projects (unless ``own``, for edits)."""
    review = _one(Review.objects.select_related("round__project", "task").filter(pk=review_id))
    if review is None or not user.is_authenticated:
        raise Http404("No review with that id.")
    roles = roles_in_project(user, review.round.project_id)
    if review.expert_id == user.pk and roles:  # not once their membership is gone
        return review
    if not own and roles & READ_DETAILS:
        return review
    raise Http404("No review with that id.")
