"""Review rounds: creation from a sampling strategy, leasing tasks to experts, the two-phase
review (expectation, then verdict), drafts, edits with history, lease expiry and progress.

Concurrency: a task slot is claimed in one statement, ``UPDATE ... WHERE id = (SELECT ...
LIMIT 1 FOR UPDATE SKIP LOCKED) AND status = 'open' RETURNING id`` (PostgreSQL): concurrent
claims pass over each other's locked slot instead of waiting, and the status re-check makes
the UPDATE conditional, so two experts never hold one slot. SQLite has no row locks, but the
one statement runs under its single writer lock, so the same claim holds there. A unique
constraint on (round, instance, expert) backs "never the same instance twice to one expert".
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.db.models import F
from django.http import Http404
from django.utils import timezone

from annotations import limits, prepared, sampling, selectors
from annotations.models import (
    EXPECTATION_QUESTIONS,
    ErrorReason,
    FeatureVerdict,
    LeaseExpiry,
    ModelVersion,
    PredictionVerdict,
    Question,
    Review,
    ReviewDraft,
    ReviewRound,
    ReviewTask,
    ReviewVersion,
    RoundStatus,
    TaskSkip,
    TaskStatus,
)
from annotations.prepared import Statement
from annotations.services._errors import check_text, field_error
from explain_worker import methods

logger = logging.getLogger(__name__)

CLAIM_ATTEMPTS = 8
TASK_BULK_BATCH = 5000


class Conflict(Exception):
    """The request is valid but clashes with the task's state; the API answers 409."""

    def __init__(self, message: str, *, field: str = "detail") -> None:
        super().__init__(message)
        self.message = message
        self.field = field


# --- Rounds -------------------------------------------------------------------------------


def _check_questions(questions: Sequence[str]) -> list[str]:
    unknown = [q for q in questions if q not in Question.values]
    if unknown:
        raise field_error(
            "questions", f"Unknown question(s) {unknown}; use {', '.join(Question.values)}."
        )
    # Keep the canonical order so pages can rely on it.
    return [q for q in Question.values if q in questions]


def round_create(
    *,
    model_version: ModelVersion,
    name: str,
    sampling_strategy: dict[str, Any],
    created_by: Any,
    experts: Sequence[Any] = (),
    overlap: int = 1,
    due_at: datetime | None = None,
    blind_first: bool = True,
    explanation_method: str = "gradcam",
    questions: Sequence[str] | None = None,
    lease_seconds: int | None = None,
    description: str = "",
    show_name_to_experts: bool = False,
    now: datetime | None = None,
) -> ReviewRound:
    """Sample the instances, create ``overlap`` task slots for each, queue the saliency maps
    the experts will see, and tell the experts. Raises ValidationError naming the field.

    A round that cannot work is refused rather than created: more reviews per instance than
    experts (no instance could ever be complete), a due date already past, a sample with no
    instance, a saliency method the model version cannot show (see
    ``explanations.method_refusal``)."""
    from annotations.services import explanations

    project = model_version.project
    if not name.strip():
        raise field_error("name", "Give the round a name.")
    check_text("name", name, limits.NAME)
    check_text("description", description, limits.ROUND_DESCRIPTION)
    if not 1 <= overlap <= 20:
        raise field_error("overlap", "Reviews per instance must be between 1 and 20.")
    if due_at is not None and due_at <= (now or timezone.now()):
        raise field_error("due_at", "The due date is in the past; choose a later one.")
    if lease_seconds is not None and not 60 <= lease_seconds <= 24 * 3600:
        raise field_error("lease_seconds", "A lease lasts between 60 seconds and 24 hours.")
    if explanation_method:
        if explanation_method != explanations.IMPORTED:
            try:
                explanation_method = methods.canonical_method(explanation_method)
            except methods.AttributionConfigError as exc:
                raise field_error("explanation_method", exc.message) from exc
        refusal = explanations.method_refusal(model_version, explanation_method)
        if refusal:
            raise field_error("explanation_method", refusal)
    chosen = _check_questions(questions if questions is not None else Question.values)
    _check_experts(project, experts, blind_first=blind_first)
    try:
        # Stored normalised, so the saved strategy carries its defaults and the part names
        # that key sampling_counts.
        sampling_strategy = sampling.validate_strategy(sampling_strategy, labels=project.labels)
        plan = sampling.plan_sample(model_version=model_version, strategy=sampling_strategy)
    except sampling.SamplingError as exc:
        raise field_error(exc.field, exc.message) from exc
    if plan.total == 0:
        raise field_error("sampling", "The strategy selects no instance.")
    _check_overlap(overlap, experts)
    with transaction.atomic():
        review_round = ReviewRound.objects.create(
            project=project,
            model_version=model_version,
            name=name,
            description=description,
            show_name_to_experts=show_name_to_experts,
            sampling=sampling_strategy,
            sampling_counts={"parts": plan.counts, "new": plan.new_counts, "total": plan.total},
            overlap=overlap,
            due_at=due_at,
            blind_first=blind_first,
            explanation_method=explanation_method,
            questions=chosen,
            lease_seconds=lease_seconds or settings.REVIEW_LEASE_SECONDS,
            created_by=created_by,
        )
        tasks = (
            ReviewTask(
                round=review_round,
                instance_id=item.instance_id,
                slot=slot,
                priority=item.priority,
            )
            for slot in range(overlap)
            for item in plan.items
        )
        ReviewTask.objects.bulk_create(tasks, batch_size=TASK_BULK_BATCH)
        round_add_experts(review_round=review_round, experts=experts)
        if explanation_method and explanation_method != explanations.IMPORTED:
            _queue_saliency(review_round, [item.instance_id for item in plan.items], created_by)
    return review_round


def _check_overlap(overlap: int, experts: Sequence[Any]) -> None:
    """Each instance needs ``overlap`` different experts, so a round with fewer could never
    be complete."""
    count = len({u.pk for u in experts})
    if overlap > count:
        need = "1 expert" if overlap == 1 else f"{overlap} experts"
        has = {0: "none", 1: "one"}.get(count, str(count))
        raise field_error(
            "overlap",
            f"{overlap} review(s) per instance need at least {need} in the round; it has "
            f"{has}. Choose more experts or fewer reviews per instance.",
        )


def _queue_saliency(review_round: ReviewRound, instance_ids: list[int], user: Any) -> None:
    from annotations.services import explanations

    spec = explanations.explain_spec(
        model_version=review_round.model_version, method=review_round.explanation_method
    )
    explanations.explanations_start(
        model_version=review_round.model_version,
        spec=spec,
        created_by=user,
        instance_ids=instance_ids,
    )


def _check_experts(project: Any, experts: Sequence[Any], *, blind_first: bool = False) -> None:
    from annotations.models import Membership, Role

    ids = {u.pk for u in experts}
    allowed = set(
        Membership.objects.filter(project=project, role=Role.EXPERT, user_id__in=ids).values_list(
            "user_id", flat=True
        )
    )
    missing = sorted(ids - allowed)
    if missing:
        raise field_error(
            "experts", f"Users {missing} are not experts of this project; add them first."
        )
    if blind_first:
        # A scientist, approver or viewer of the project can read its predictions and the
        # other experts' reviews at any time: their judgement could not be blind.
        seeing = (
            Membership.objects.filter(project=project, user_id__in=ids)
            .exclude(role=Role.EXPERT)
            .select_related("user")
            .order_by("user__username")
        )
        names = sorted({m.user.get_username() for m in seeing})
        if names:
            raise field_error(
                "experts",
                f"{', '.join(names)} can see the model's predictions in this project (another "
                "role than expert), so a blind-first judgement of theirs would not be blind; "
                "use an account that is only an expert, or turn blind-first off.",
            )


def round_add_experts(*, review_round: ReviewRound, experts: Sequence[Any]) -> list[Any]:
    """Add experts to a round; each new one gets an e-mail (sent after commit)."""
    _check_experts(review_round.project, experts, blind_first=review_round.blind_first)
    present = set(review_round.experts.values_list("pk", flat=True))
    new = [u for u in experts if u.pk not in present]
    review_round.experts.add(*new)
    for user in new:
        transaction.on_commit(lambda u=user: _mail_added(review_round, u))
    return new


def _mail_added(review_round: ReviewRound, user: Any) -> None:
    if not user.email:
        return
    due = f" It is due {review_round.due_at:%Y-%m-%d}." if review_round.due_at else ""
    send_mail(
        subject=f"You were added to the review round '{review_round.title_for(as_expert=True)}'",
        message=(
            f"{review_round.tasks.values('instance').distinct().count()} images of "
            f"{review_round.project.name} wait for your judgement.{due}\n"
            f"Start at {settings.SITE_URL}/rounds/{review_round.pk}/"
        ),
        from_email=None,
        recipient_list=[user.email],
        fail_silently=True,
    )


def round_close(*, review_round: ReviewRound) -> None:
    review_round.status = RoundStatus.CLOSED
    review_round.closed_at = timezone.now()
    review_round.save(update_fields=["status", "closed_at"])


# --- Leasing ------------------------------------------------------------------------------


# What a task returning to the pool resets (expiry, skip, an expert leaving the project).
_BACK_TO_POOL = {
    "status": TaskStatus.OPEN,
    "expert": None,
    "leased_at": None,
    "lease_expires_at": None,
    "expectation_at": None,
}


def leases_expire(*, review_round: ReviewRound | None = None, now: datetime | None = None) -> int:
    """Return expired leases to the pool, recording who let them lapse. Returns the count."""
    now = now or timezone.now()
    expired = ReviewTask.objects.filter(status=TaskStatus.LEASED, lease_expires_at__lte=now)
    if review_round is not None:
        expired = expired.filter(round=review_round)
    count = 0
    rows = expired.values_list(
        "id",
        "expert_id",
        "lease_expires_at",
        "expectation_at",
        "instance_id",
        "round_id",
        "round__blind_first",
    )
    for task_id, expert_id, expires, revealed_at, instance_id, round_id, blind in rows:
        with transaction.atomic():
            # Conditional: a heartbeat or a submit that came in meanwhile wins.
            changed = ReviewTask.objects.filter(
                pk=task_id,
                status=TaskStatus.LEASED,
                expert_id=expert_id,
                lease_expires_at=expires,
            ).update(**_BACK_TO_POOL)
            if changed:
                _release_unsubmitted_review(task_id, expert_id)
                LeaseExpiry.objects.create(task_id=task_id, expert_id=expert_id, expired_at=expires)
                if blind and revealed_at is not None:
                    # They have seen the model's view of this instance: it can never be a
                    # blind task for them again, so it is not offered to them again.
                    TaskSkip.objects.get_or_create(
                        round_id=round_id,
                        instance_id=instance_id,
                        expert_id=expert_id,
                        defaults={"reason": "lease expired after the reveal"},
                    )
                ReviewTask.objects.filter(pk=task_id).update(expired_count=F("expired_count") + 1)
                count += 1
    return count


def _release_unsubmitted_review(task_id: int, expert_id: int) -> None:
    """When a task leaves an expert before the verdict (expiry, skip), their expectation
    must not stay on the task, where the next expert would see it: it moves to their draft,
    from which it comes back if they get the task again."""
    review = Review.objects.filter(
        task_id=task_id, expert_id=expert_id, submitted_at__isnull=True
    ).first()
    if review is None:
        return
    kept = {
        name: getattr(review, name)
        for name in ("expected_label", "expected_confidence", "evidence", "concepts", "free_tags")
    }
    draft, _ = ReviewDraft.objects.get_or_create(
        round_id=review.round_id, instance_id=review.instance_id, expert_id=expert_id
    )
    draft.data = {**kept, **draft.data}
    draft.save(update_fields=["data", "updated_at"])
    review.delete()


def expert_leave_project(*, project: Any, expert: Any) -> int:
    """An expert leaves a project's rounds: the tasks they hold return to the pool (their
    unsubmitted expectation moves to their draft, as on expiry) and they are no longer one
    of the rounds' experts. Submitted reviews stay. Returns the number of tasks released."""
    released = 0
    held = ReviewTask.objects.filter(
        round__project=project, expert=expert, status=TaskStatus.LEASED
    ).values_list("id", flat=True)
    for task_id in list(held):
        _release_unsubmitted_review(task_id, expert.pk)
        released += ReviewTask.objects.filter(
            pk=task_id, expert=expert, status=TaskStatus.LEASED
        ).update(**_BACK_TO_POOL)
    for review_round in ReviewRound.objects.filter(project=project, experts=expert):
        review_round.experts.remove(expert)
    return released


def task_next(*, review_round: ReviewRound, expert: Any) -> ReviewTask | None:
    """Lease one task to ``expert``: their own unexpired lease if they hold one, else the
    best open slot of an instance they have not had. None when nothing is left for them.
    The returned task comes from ``selectors.task_in_context`` (with everything its payload
    shows)."""
    if review_round.status != RoundStatus.OPEN:
        raise Conflict("This round is closed.")
    # access_expert_round_by_id reads the lease state with the round (one query fewer on
    # the hot path); read once, so a reused round object never acts on a stale one.
    state = review_round.__dict__.pop("lease_state", None)
    if state is not None and state.expert_id == expert.pk:
        own_id, any_expired, now = state.own_task_id, state.any_expired, state.now
    else:
        now = timezone.now()
        state = selectors.lease_state(round_id=review_round.pk, expert_id=expert.pk, now=now)
        own_id, any_expired = state.own_task_id, state.any_expired
    if own_id is not None:
        return _loaded(own_id, review_round, expert)
    if any_expired:
        leases_expire(review_round=review_round, now=now)
    lease_until = now + timedelta(seconds=review_round.lease_seconds)
    for attempt in range(CLAIM_ATTEMPTS):
        if attempt:
            # Every candidate was locked by other experts' claims a moment ago; they commit
            # within milliseconds. A short random pause (at most ~5 ms x attempt) keeps the
            # retries from meeting the same locks again on a busy server.
            time.sleep(random.uniform(0, 0.005) * attempt)
        task_id = _claim(
            round_id=review_round.pk, expert_id=expert.pk, now=now, lease_until=lease_until
        )
        if task_id is not None:
            return _loaded(task_id, review_round, expert)
        # Nothing claimed. A parallel request of this expert (a double click, a retry) took
        # their one lease (task_one_lease_per_expert): answer with that task, so both
        # requests get the same one. Otherwise every candidate was locked by another
        # expert's claim at that instant (skipped, not waited for): try again; or nothing
        # is left.
        own_id = selectors.lease_state(
            round_id=review_round.pk, expert_id=expert.pk, now=now
        ).own_task_id
        if own_id is not None:
            return _loaded(own_id, review_round, expert)
        if not selectors.open_slots_for_expert(review_round=review_round, expert=expert).exists():
            return None
    raise Conflict("Too many experts asked at once; ask again.")


def _loaded(task_id: int, review_round: ReviewRound, expert: Any) -> ReviewTask:
    task = selectors.task_in_context(task_id=task_id, user=expert)
    if task is None:  # deleted with its round in between
        raise Http404("No task with that id.")
    task.round = review_round  # the caller's, access-checked copy
    return task


@lru_cache(maxsize=4)
def _claim_sql(vendor: str, skip_locked: bool) -> Statement:
    """The claim statement: ``selectors.open_slots_for_expert`` in hand-written SQL (keep
    the two in step), best slot first. Built once: compiling the equivalent querysets cost
    more CPU than running the statement (next-task is the hot path).

    It walks ``task_open_idx`` in hand-out order and stops at the first slot the expert may
    take; each candidate costs one probe of the unique (round, instance, expert) keys for
    "had it already" and of the skips. (A ``NOT IN`` over the expert's history read all of
    it on every claim: 0.75 ms of PostgreSQL CPU once an expert had 1,700 tasks.)"""
    table, col = prepared.names(ReviewTask)
    skips, skip_col = prepared.names(TaskSkip)
    lock = " FOR UPDATE SKIP LOCKED" if skip_locked else ""
    leased, open_ = prepared.literal(TaskStatus.LEASED), prepared.literal(TaskStatus.OPEN)
    return Statement(
        f"UPDATE {table} SET {col['status']} = {leased}, {col['expert']} = %(expert)s, "
        f"{col['leased_at']} = %(now)s, {col['lease_expires_at']} = %(until)s "
        f"WHERE {col['id']} = ("
        f"SELECT c.{col['id']} FROM {table} c "
        f"WHERE c.{col['round']} = %(round)s AND c.{col['status']} = {open_} "
        f"AND NOT EXISTS (SELECT 1 FROM {table} h WHERE h.{col['round']} = %(round)s "
        f"AND h.{col['instance']} = c.{col['instance']} AND h.{col['expert']} = %(expert)s) "
        f"AND NOT EXISTS (SELECT 1 FROM {skips} s WHERE s.{skip_col['round']} = %(round)s "
        f"AND s.{skip_col['instance']} = c.{col['instance']} "
        f"AND s.{skip_col['expert']} = %(expert)s) "
        f"ORDER BY c.{col['slot']}, c.{col['priority']}, c.{col['id']} LIMIT 1{lock}"
        f") AND {col['status']} = {open_} RETURNING {col['id']}"
    )


def _claim(*, round_id: int, expert_id: int, now: datetime, lease_until: datetime) -> int | None:
    """Claim the best open slot for the expert in ONE statement, ``UPDATE ... WHERE id =
    (SELECT ... LIMIT 1 FOR UPDATE SKIP LOCKED) AND status = 'open' RETURNING id``: the row
    lock makes concurrent claims pass over each other's slot instead of waiting, and the
    status re-check makes the UPDATE conditional. SQLite has no row locks, but one
    statement runs under its single writer lock, so the same statement is atomic there.

    Returns the claimed task's id, or None when nothing was claimed (see ``task_next``)."""
    connection = transaction.get_connection()
    ops = connection.ops
    statement = _claim_sql(connection.vendor, connection.features.has_select_for_update_skip_locked)
    params = {
        "expert": expert_id,
        "round": round_id,
        "now": ops.adapt_datetimefield_value(now),
        "until": ops.adapt_datetimefield_value(lease_until),
    }
    try:
        # Autocommit (a web request): the statement is its own transaction. Inside an outer
        # transaction (tests, callers): a savepoint, so a unique-key clash does not poison it.
        guard = nullcontext() if connection.get_autocommit() else transaction.atomic()
        with guard, connection.cursor() as cursor:
            statement.execute(cursor, params)
            row = cursor.fetchone()
    except IntegrityError:
        # A parallel request of the same expert leased them a task first (one lease per
        # expert and round), or a slot of this instance.
        return None
    return row[0] if row else None


def _own_task(task: ReviewTask, expert: Any) -> None:
    if task.expert_id != expert.pk:
        raise Http404("No task with that id.")


def _round_open(task: ReviewTask) -> None:
    if task.round.status != RoundStatus.OPEN:
        raise Conflict("This round is closed; its tasks can no longer change.", field="round")


def _live_lease(task: ReviewTask) -> None:
    _round_open(task)
    if task.status == TaskStatus.SUBMITTED:
        raise Conflict("This task was submitted already.")
    if task.lease_expires_at is None or task.lease_expires_at <= timezone.now():
        raise Conflict(
            "Your lease on this task has expired and the task went back to the pool; your "
            "draft is kept. Ask for the next task to continue.",
            field="lease",
        )


def task_heartbeat(*, task: ReviewTask, expert: Any) -> ReviewTask:
    """Extend a live lease by the round's lease length."""
    _own_task(task, expert)
    _live_lease(task)
    task.lease_expires_at = timezone.now() + timedelta(seconds=task.round.lease_seconds)
    changed = ReviewTask.objects.filter(pk=task.pk, status=TaskStatus.LEASED, expert=expert).update(
        lease_expires_at=task.lease_expires_at
    )
    if not changed:
        raise Conflict("Your lease on this task has expired.", field="lease")
    return task


@transaction.atomic
def task_skip(*, task: ReviewTask, expert: Any, reason: str) -> None:
    """Release the lease with a reason; the expert is not offered this instance again."""
    _own_task(task, expert)
    _round_open(task)
    if task.status == TaskStatus.SUBMITTED:
        raise Conflict("This task was submitted already.")
    check_text("reason", reason, limits.SKIP_REASON, required=True)
    TaskSkip.objects.get_or_create(
        round_id=task.round_id,
        instance_id=task.instance_id,
        expert=expert,
        defaults={"reason": reason},
    )
    _release_unsubmitted_review(task.pk, expert.pk)
    ReviewTask.objects.filter(pk=task.pk, expert=expert).exclude(
        status=TaskStatus.SUBMITTED
    ).update(**_BACK_TO_POOL)


# --- Review capture -----------------------------------------------------------------------


def draft_save(*, task: ReviewTask, expert: Any, data: dict[str, Any]) -> ReviewDraft:
    _own_task(task, expert)
    _round_open(task)
    if task.status == TaskStatus.SUBMITTED:
        raise Conflict("This task was submitted already; edit the review instead.")
    _check_draft(data)
    draft, _ = ReviewDraft.objects.update_or_create(
        round_id=task.round_id,
        instance_id=task.instance_id,
        expert=expert,
        defaults={"data": data},
    )
    return draft


def _check_draft(data: Any) -> None:
    """A draft is any JSON object the page keeps, but it must come back exactly as sent: no
    NUL character (PostgreSQL's jsonb refuses it) and a bounded size."""
    if not isinstance(data, dict):
        raise field_error("draft", "A draft is a JSON object.")
    encoded = json.dumps(data, ensure_ascii=False)
    if len(encoded.encode()) > limits.DRAFT_BYTES:
        raise field_error(
            "draft", f"A draft holds at most {limits.DRAFT_BYTES // 1024} KiB of JSON."
        )
    if _holds_nul(data):
        raise field_error("draft", "Text may not contain the NUL character (\\x00).")


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def draft_for(task: ReviewTask, expert: Any) -> dict[str, Any]:
    # Unique per (round, instance, expert): no ORDER BY needed (this runs on every payload).
    data = (
        ReviewDraft.objects.filter(
            round_id=task.round_id, instance_id=task.instance_id, expert=expert
        )
        .order_by()
        .values_list("data", flat=True)[:1]
    )
    return next(iter(data), {})


def _validate_regions(regions: Any, width: int, height: int) -> list[dict[str, Any]]:
    if not isinstance(regions, list):
        raise field_error("evidence", "Give a list of regions.")
    if len(regions) > limits.EVIDENCE_REGIONS:
        raise field_error(
            "evidence", f"At most {limits.EVIDENCE_REGIONS} regions; this has {len(regions)}."
        )
    clean = []
    for n, region in enumerate(regions):
        where = f"evidence[{n}]"
        if not isinstance(region, dict) or region.get("type") not in ("box", "polygon"):
            raise field_error("evidence", f"{where}: type must be 'box' or 'polygon'.")
        points = region.get("points")
        need = 2 if region["type"] == "box" else 3
        if (
            not isinstance(points, list)
            or len(points) < need
            or (region["type"] == "box" and len(points) != 2)
            or not all(
                isinstance(p, list | tuple)
                and len(p) == 2
                and all(isinstance(c, int | float) for c in p)
                for p in points
            )
        ):
            raise field_error(
                "evidence",
                f"{where}: a box has 2 points [[x0, y0], [x1, y1]], a polygon at least 3.",
            )
        if len(points) > limits.EVIDENCE_POINTS:
            raise field_error(
                "evidence", f"{where}: at most {limits.EVIDENCE_POINTS} points a region."
            )
        for x, y in points:
            if not (0 <= x <= width and 0 <= y <= height):
                raise field_error(
                    "evidence",
                    f"{where}: point ({x}, {y}) is outside the image ({width} x {height}).",
                )
        item = {"type": region["type"], "points": [[float(x), float(y)] for x, y in points]}
        unknown = sorted(set(region) - {"type", "points", "concept"})
        if unknown:
            raise field_error(
                "evidence",
                f"{where}: unknown key '{unknown[0]}'; a region has type, points "
                "and optionally concept.",
            )
        concept = region.get("concept")
        if concept is not None:
            if not isinstance(concept, str) or len(concept) > limits.REGION_CONCEPT:
                raise field_error(
                    "evidence",
                    f"{where}: the concept must be text of at most {limits.REGION_CONCEPT} "
                    "characters.",
                )
            item["concept"] = check_text("evidence", concept, limits.REGION_CONCEPT)
        clean.append(item)
    return clean


def _whole_number_in(value: Any, low: int, high: int) -> bool:
    # bool is an int subclass; True as a confidence is always a client bug.
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


# Which question each field of a submit answers; a field of a question the round does not
# ask, or a field no submit has, is refused rather than silently dropped.
_FIELD_QUESTION = {
    "expected_label": Question.EXPECTED_LABEL,
    "expected_confidence": Question.EXPECTED_CONFIDENCE,
    "evidence": Question.EVIDENCE,
    "concepts": Question.CONCEPTS,
    "free_tags": Question.CONCEPTS,
    "prediction_verdict": Question.PREDICTION_VERDICT,
    "feature_verdict": Question.FEATURE_VERDICT,
    "acceptable": Question.ACCEPTABILITY,
    "severity": Question.ACCEPTABILITY,
    "reason": Question.ACCEPTABILITY,
    "comment": Question.COMMENT,
}
EXPECTATION_FIELDS = ("expected_label", "expected_confidence", "evidence", "concepts", "free_tags")
VERDICT_FIELDS = ("prediction_verdict", "feature_verdict", "acceptable", "severity", "reason")
VERDICT_FIELDS += ("comment",)


def _check_fields(data: Any, allowed: Sequence[str], review_round: ReviewRound) -> None:
    """Refuse what would otherwise be dropped without a word: a body that is not an object,
    an unknown field (a typo like ``coment``), an answer to a question the round does not
    ask, or an acceptability answer for a prediction not judged incorrect."""
    if not isinstance(data, dict):
        raise field_error("detail", "Send a JSON object.")
    for key in data:
        if key not in allowed:
            raise field_error(key, f"Unknown field here; this request takes {', '.join(allowed)}.")
        question = _FIELD_QUESTION.get(key)
        value = data[key]
        if question is None or value in (None, "", []):
            continue
        if question not in review_round.questions:
            raise field_error(key, "This round does not ask this question; leave it out.")
        verdict = data.get("prediction_verdict")
        if (
            question == Question.ACCEPTABILITY
            and verdict in PredictionVerdict.values
            and verdict != PredictionVerdict.INCORRECT
        ):
            raise field_error(
                key, "Acceptability, severity and reason apply only to an incorrect prediction."
            )


def _expectation_fields(task: ReviewTask, data: dict[str, Any]) -> dict[str, Any]:
    review_round = task.round
    asked = set(review_round.questions)
    project = review_round.project
    fields: dict[str, Any] = {}
    if Question.EXPECTED_LABEL in asked:
        label = data.get("expected_label")
        if label not in project.labels:
            raise field_error(
                "expected_label", f"Choose a label from the label set: {', '.join(project.labels)}."
            )
        fields["expected_label"] = label
    if Question.EXPECTED_CONFIDENCE in asked:
        confidence = data.get("expected_confidence")
        if not _whole_number_in(confidence, 1, 5):
            raise field_error("expected_confidence", "Give a whole number from 1 to 5.")
        fields["expected_confidence"] = confidence
    if Question.EVIDENCE in asked:
        fields["evidence"] = _validate_regions(
            data.get("evidence", []), task.instance.width, task.instance.height
        )
    if Question.CONCEPTS in asked:
        concepts = data.get("concepts", [])
        if not isinstance(concepts, list) or not all(isinstance(c, str) for c in concepts):
            raise field_error("concepts", "Give a list of concept names.")
        unknown = [c for c in concepts if c not in project.concept_vocabulary]
        if unknown:
            raise field_error(
                "concepts",
                f"Not in the concept vocabulary: {', '.join(unknown)}; put new ones in free_tags.",
            )
        tags = data.get("free_tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and t.strip() for t in tags):
            raise field_error("free_tags", "Give a list of non-empty tags.")
        if len(tags) > limits.FREE_TAGS:
            raise field_error(
                "free_tags", f"At most {limits.FREE_TAGS} tags; this has {len(tags)}."
            )
        for tag in tags:
            if len(tag.strip()) > limits.FREE_TAG or "\x00" in tag:
                raise field_error(
                    "free_tags",
                    f"The tag '{tag[:30]}…' is too long or holds a NUL character: at most "
                    f"{limits.FREE_TAG} characters a tag. Nothing was saved.",
                )
        fields["concepts"] = sorted(set(concepts))
        fields["free_tags"] = sorted({t.strip() for t in tags})
    return fields


def _verdict_fields(task: ReviewTask, data: dict[str, Any]) -> dict[str, Any]:
    asked = set(task.round.questions)
    fields: dict[str, Any] = {}
    verdict = data.get("prediction_verdict", "")
    if Question.PREDICTION_VERDICT in asked:
        if verdict not in PredictionVerdict.values:
            raise field_error(
                "prediction_verdict", f"Use one of {', '.join(PredictionVerdict.values)}."
            )
        fields["prediction_verdict"] = verdict
    if Question.FEATURE_VERDICT in asked:
        feature = data.get("feature_verdict")
        if feature not in FeatureVerdict.values:
            raise field_error("feature_verdict", f"Use one of {', '.join(FeatureVerdict.values)}.")
        fields["feature_verdict"] = feature
    if Question.ACCEPTABILITY in asked and verdict == PredictionVerdict.INCORRECT:
        acceptable = data.get("acceptable")
        if not isinstance(acceptable, bool):
            raise field_error("acceptable", "For an error, say whether it is acceptable.")
        severity = data.get("severity")
        if not _whole_number_in(severity, 1, 4):
            raise field_error("severity", "Give the severity as a whole number from 1 to 4.")
        reason = data.get("reason", "")
        if reason not in ErrorReason.values:
            raise field_error("reason", f"Use one of {', '.join(ErrorReason.values)}.")
        fields.update(acceptable=acceptable, severity=severity, reason=reason)
    else:
        fields.update(acceptable=None, severity=None, reason="")
    if Question.COMMENT in asked:
        fields["comment"] = check_text("comment", data.get("comment", ""), limits.COMMENT)
    return fields


def _client_seconds(data: dict[str, Any]) -> float | None:
    value = data.get("client_seconds")
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value < 86400:
        raise field_error("client_seconds", "Give the time spent in seconds.")
    return float(value)


def _has_expectation_questions(review_round: ReviewRound) -> bool:
    return any(q in review_round.questions for q in EXPECTATION_QUESTIONS)


def _locked_live_task(task: ReviewTask, expert: Any, *, locked: bool) -> ReviewTask:
    """Lock the task row for this transaction, refresh its lease state on ``task`` (keeping
    the relations the caller loaded), and check it is the expert's and the lease lives.
    Call inside ``transaction.atomic``. ``locked``: the caller loaded ``task`` under its row
    lock in this transaction (``access_task_by_id(..., lock=True)``), so only the checks
    remain."""
    if locked:
        _own_task(task, expert)
        _live_lease(task)
        return task
    state = next(
        iter(
            ReviewTask.objects.select_for_update()
            .filter(pk=task.pk)
            .values("status", "expert_id", "leased_at", "lease_expires_at", "expectation_at")
        ),
        None,
    )
    if state is None:
        raise Http404("No task with that id.")
    for name, value in state.items():
        setattr(task, name, value)
    _own_task(task, expert)
    _live_lease(task)
    return task


def _review_upsert(
    task: ReviewTask, expert: Any, fields: dict[str, Any], *, locked: bool
) -> Review:
    """Create or update the task's review: one prepared statement (``annotations.prepared``),
    safe because the caller holds the task's row lock (``update_or_create`` would add a
    savepoint and a locking read). A task loaded under its lock brings its review along
    (``task.loaded_review``); otherwise one read finds it."""
    # One-to-one: no ORDER BY.
    review = task.loaded_review if locked else next(iter(Review.objects.filter(task=task)), None)
    if review is None:
        review = Review(
            task=task, round_id=task.round_id, instance_id=task.instance_id, expert=expert
        )
        for name, value in fields.items():
            setattr(review, name, value)
        prepared.insert_object(review)
        return review
    review.expert = expert
    for name, value in fields.items():
        setattr(review, name, value)
    prepared.update_object(review, ("expert", "updated_at", *fields))
    return review


def _transaction(locked: bool) -> Any:
    # A caller that locked the task holds the transaction already: no savepoint in it.
    return nullcontext() if locked else transaction.atomic()


def expectation_submit(
    *, task: ReviewTask, expert: Any, data: dict[str, Any], locked: bool = False
) -> Review:
    """Phase 1. After it, the task reveals the model's prediction and saliency, so in a
    blind-first round it is final: an expectation given after the reveal is not blind.
    ``locked``: see ``_locked_live_task``."""
    with _transaction(locked):
        return _expectation_submit(task, expert, data, locked=locked)


def _expectation_submit(
    task: ReviewTask, expert: Any, data: dict[str, Any], *, locked: bool
) -> Review:
    task = _locked_live_task(task, expert, locked=locked)
    if task.expectation_at is not None and task.round.blind_first:
        raise Conflict(
            "Your expectation is in and the model's view was revealed; in a blind-first round "
            "it can no longer change. Submit your verdict.",
            field="phase",
        )
    _check_fields(data, EXPECTATION_FIELDS, task.round)
    fields = _expectation_fields(task, data)
    now = timezone.now()
    review = _review_upsert(task, expert, {"expectation_at": now, **fields}, locked=locked)
    task.expectation_at = now
    prepared.update_object(task, ("expectation_at",))
    return review


def verdict_submit(
    *, task: ReviewTask, expert: Any, data: dict[str, Any], locked: bool = False
) -> Review:
    """Phase 2, which completes the review. With blind-first off, the expectation fields may
    come in the same request. ``locked``: see ``_locked_live_task``."""
    with _transaction(locked):
        return _verdict_submit(task, expert, data, locked=locked)


def _verdict_submit(task: ReviewTask, expert: Any, data: dict[str, Any], *, locked: bool) -> Review:
    task = _locked_live_task(task, expert, locked=locked)
    review_round = task.round
    allowed = (*VERDICT_FIELDS, "client_seconds")
    if not review_round.blind_first:
        allowed += EXPECTATION_FIELDS  # may come with the verdict
    expectation: dict[str, Any] = {}
    if (
        task.expectation_at is None
        and _has_expectation_questions(review_round)
        and review_round.blind_first
    ):
        raise Conflict(
            "This round is blind-first: submit your expectation before the verdict.",
            field="phase",
        )
    if (
        review_round.blind_first
        and isinstance(data, dict)
        and any(k in EXPECTATION_FIELDS for k in data)
    ):
        raise Conflict(
            "Your expectation is in and, in a blind-first round, final; send only the verdict.",
            field="phase",
        )
    _check_fields(data, allowed, review_round)
    if task.expectation_at is None and _has_expectation_questions(review_round):
        expectation = _expectation_fields(task, data) | {"expectation_at": timezone.now()}
    fields = _verdict_fields(task, data)
    now = timezone.now()
    review = _review_upsert(
        task,
        expert,
        {
            **expectation,
            **fields,
            "server_seconds": (now - task.leased_at).total_seconds() if task.leased_at else None,
            "client_seconds": _client_seconds(data),
            "submitted_at": now,
        },
        locked=locked,
    )
    task.status, task.submitted_at = TaskStatus.SUBMITTED, now
    task.expectation_at = task.expectation_at or now
    others_open = _mark_submitted(task)
    if not locked or task.loaded_draft is not None:
        # A task loaded under its lock says whether the expert has a draft to drop.
        ReviewDraft.objects.filter(
            round_id=task.round_id, instance_id=task.instance_id, expert=expert
        ).delete()
    if not others_open:
        # Only once no slot is open can this verdict be the round's last: then check after
        # commit, when concurrent last verdicts see each other (one of them tells).
        transaction.on_commit(lambda: round_check_complete(round_id=review_round.pk))
    return review


def _open_slot_exists(table: str, col: dict[str, str], other_than_task: bool = False) -> str:
    """SQL: whether the round ``%(round)s`` has an open slot (other than ``%(task)s``). The
    first open slot in hand-out order, so PostgreSQL walks ``task_open_idx``: a plain
    ``EXISTS`` let the planner pick a sequential scan (it expects most slots open), which
    reads every slot handed out so far, since hand-out order follows the table's order."""
    other = f" AND o.{col['id']} <> %(task)s" if other_than_task else ""
    return (
        f"(SELECT o.{col['id']} FROM {table} o WHERE o.{col['round']} = %(round)s "
        f"AND o.{col['status']} = {prepared.literal(TaskStatus.OPEN)}{other} "
        f"ORDER BY o.{col['slot']}, o.{col['priority']}, o.{col['id']} LIMIT 1) IS NOT NULL"
    )


@lru_cache(maxsize=4)
def _mark_submitted_sql(vendor: str) -> Statement:
    table, col = prepared.names(ReviewTask)
    return Statement(
        f"UPDATE {table} SET {col['status']} = {prepared.literal(TaskStatus.SUBMITTED)}, "
        f"{col['submitted_at']} = %(submitted_at)s, {col['expectation_at']} = %(expectation_at)s "
        f"WHERE {col['id']} = %(task)s "
        f"RETURNING {_open_slot_exists(table, col, other_than_task=True)}"
    )


def _mark_submitted(task: ReviewTask) -> bool:
    """Write the task's submitted state; returns whether another slot of the round is still
    open (the same statement asks, so the verdict needs no extra round trip for it)."""
    connection = transaction.get_connection()
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        _mark_submitted_sql(connection.vendor).execute(
            cursor,
            {
                "task": task.pk,
                "round": task.round_id,
                "submitted_at": adapt(task.submitted_at),
                "expectation_at": adapt(task.expectation_at),
            },
        )
        return bool(cursor.fetchone()[0])


_VERSIONED_FIELDS = (
    "expected_label",
    "expected_confidence",
    "evidence",
    "concepts",
    "free_tags",
    "prediction_verdict",
    "feature_verdict",
    "acceptable",
    "severity",
    "reason",
    "comment",
)


@transaction.atomic
def review_edit(*, review: Review, expert: Any, data: dict[str, Any]) -> Review:
    """The author changes a submitted review while the round is open; the previous state is
    kept as a ReviewVersion."""
    review = (
        Review.objects.select_for_update()
        .select_related("round__project", "task__instance", "task__round__project")
        .get(pk=review.pk)
    )
    if review.expert_id != expert.pk:
        raise Http404("No review with that id.")
    if review.round.status != RoundStatus.OPEN:
        raise Conflict("The round is closed; reviews can no longer change.")
    if review.submitted_at is None:
        raise Conflict("Submit the review before editing it.")
    _check_fields(data, _VERSIONED_FIELDS, review.round)
    snapshot = {name: getattr(review, name) for name in _VERSIONED_FIELDS}
    if review.round.blind_first:
        # The expectation was given blind; once the model's view was shown it can only be
        # rewritten with hindsight, and the export would call the rewrite "blind".
        changed = [k for k in EXPECTATION_FIELDS if k in data and data[k] != snapshot[k]]
        if changed:
            raise Conflict(
                f"In a blind-first round the expectation is final once the model's view was "
                f"revealed; '{changed[0]}' cannot change. Only the verdict can be edited.",
                field="phase",
            )
    merged = snapshot | {k: v for k, v in data.items() if k in _VERSIONED_FIELDS}
    fields = {}
    if _has_expectation_questions(review.round):
        fields.update(_expectation_fields(review.task, merged))
    fields.update(_verdict_fields(review.task, merged))
    ReviewVersion.objects.create(review=review, version=review.version, data=snapshot)
    for name, value in fields.items():
        setattr(review, name, value)
    review.version += 1
    review.save()
    return review


# --- Completion, progress, digests ------------------------------------------------------


@lru_cache(maxsize=4)
def _slots_left_sql(vendor: str) -> Statement:
    table, col = prepared.names(ReviewTask)
    return Statement(
        f"SELECT {_open_slot_exists(table, col)} OR EXISTS (SELECT 1 FROM {table} t "
        f"WHERE t.{col['round']} = %(round)s "
        f"AND t.{col['status']} = {prepared.literal(TaskStatus.LEASED)})"
    )


def round_check_complete(*, round_id: int) -> bool:
    """Tell the round's scientist once when every slot is submitted. Runs after every
    verdict whose task leaves no slot open: one prepared statement, which stops at the first
    open slot (``task_open_idx``) or lease (``task_one_lease_per_expert``)."""
    connection = transaction.get_connection()
    with connection.cursor() as cursor:
        _slots_left_sql(connection.vendor).execute(
            cursor,
            {"round": round_id},
        )
        if cursor.fetchone()[0]:
            return False
    claimed = ReviewRound.objects.filter(pk=round_id, completed_notified_at__isnull=True).update(
        completed_notified_at=timezone.now()
    )
    if claimed:
        review_round = ReviewRound.objects.select_related("created_by").get(pk=round_id)
        user = review_round.created_by
        if user is not None and user.email:
            send_mail(
                subject=f"Review round '{review_round.name}' is complete",
                message=(
                    f"All {review_round.tasks.count()} reviews of '{review_round.name}' are in.\n"
                    f"{settings.SITE_URL}/rounds/{review_round.pk}/"
                ),
                from_email=None,
                recipient_list=[user.email],
                fail_silently=True,
            )
    return True


def digests_send(*, now: datetime | None = None) -> int:
    """E-mail every expert a summary of the open rounds where tasks wait for them."""
    from django.contrib.auth import get_user_model

    sent = 0
    users = (
        get_user_model()
        .objects.filter(review_rounds__status=RoundStatus.OPEN, email__gt="")
        .distinct()
    )
    for user in users:
        lines = []
        for review_round in user.review_rounds.filter(status=RoundStatus.OPEN):
            waiting = selectors.tasks_available_count(review_round=review_round, expert=user)
            if waiting:
                due = f", due {review_round.due_at:%Y-%m-%d}" if review_round.due_at else ""
                title = review_round.title_for(as_expert=True)
                lines.append(f"- {title}: {waiting} task(s) for you{due}")
        if lines:
            send_mail(
                subject="Review tasks waiting for you",
                message="\n".join(lines) + f"\n\n{settings.SITE_URL}/",
                from_email=None,
                recipient_list=[user.email],
                fail_silently=True,
            )
            sent += 1
    return sent
