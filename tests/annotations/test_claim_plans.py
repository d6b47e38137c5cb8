"""The hand-out statements stay cheap as a round fills up and as an expert's history grows.

They read the open slots through the partial index ``task_open_idx`` in hand-out order and
stop at the first that fits. Slots handed out earlier sit first in the table, so a plan
that scans the table or an expert's whole history costs more with every review done:
before this index, the claim read all of the expert's tasks and the verdict's "is a slot
still open" check scanned every submitted task. These tests read the plans (PostgreSQL:
``EXPLAIN (ANALYZE, BUFFERS)``, as a custom and as a generic plan, which is what a
prepared statement runs; SQLite: ``EXPLAIN QUERY PLAN``) on a round where one expert has
had 3,000 of 4,000 slots."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from annotations.models import Instance, ReviewTask, TaskStatus
from annotations.services import reviews
from tests.annotations.review_fixtures import build_world, make_round

# Committed rows (not one test transaction), so the table can be VACUUMed as autovacuum
# would: the plans are then read as a server in use runs them.
pytestmark = pytest.mark.django_db(transaction=True)

SLOTS = 4000
HAD = 3000
# Pages a check may read on PostgreSQL; a scan of the 3,000 handed-out slots reads 40.
MAX_CHECK_BUFFERS = 15
# How many more pages a claim may read for an expert who had HAD slots than for a new one;
# reading their history reads about 16 more.
MAX_HISTORY_BUFFERS = 4


@pytest.fixture
def busy_round():
    world = build_world(n=2, experts=2)
    review_round = make_round(world)
    template = world.instances[0]
    instances = Instance.objects.bulk_create(
        Instance(
            project=world.project,
            dataset=template.dataset,
            image=template.image.name,
            width=32,
            height=32,
            label=template.label,
            split="test",
            content_hash=f"bulk-{i}",
        )
        for i in range(SLOTS)
    )
    ReviewTask.objects.filter(round=review_round).delete()
    ReviewTask.objects.bulk_create(
        ReviewTask(round=review_round, instance=inst, slot=0, priority=i)
        for i, inst in enumerate(instances)
    )
    expert, other = world.experts
    now = timezone.now()
    first = ReviewTask.objects.filter(round=review_round).order_by("slot", "priority", "id")
    ReviewTask.objects.filter(pk__in=list(first.values_list("pk", flat=True)[:HAD])).update(
        status=TaskStatus.SUBMITTED, expert=expert, leased_at=now, submitted_at=now
    )
    with connection.cursor() as cursor:
        analyze = "VACUUM ANALYZE" if connection.vendor == "postgresql" else "ANALYZE"
        cursor.execute(f"{analyze} {ReviewTask._meta.db_table}")
    return review_round, expert, other


def _claim_params(review_round, expert) -> dict:
    now = timezone.now()
    adapt = connection.ops.adapt_datetimefield_value
    return {
        "expert": expert.pk,
        "round": review_round.pk,
        "now": adapt(now),
        "until": adapt(now + timedelta(minutes=30)),
    }


def _statements(review_round, expert):
    skip_locked = connection.features.has_select_for_update_skip_locked
    task = ReviewTask.objects.filter(round=review_round, status=TaskStatus.SUBMITTED).first()
    adapt = connection.ops.adapt_datetimefield_value
    return {
        "claim": (
            reviews._claim_sql(connection.vendor, skip_locked),
            _claim_params(review_round, expert),
        ),
        "verdict's open-slot check": (
            reviews._mark_submitted_sql(connection.vendor),
            {
                "task": task.pk,
                "round": review_round.pk,
                "submitted_at": adapt(task.submitted_at),
                "expectation_at": adapt(task.submitted_at),
            },
        ),
        "round-complete check": (
            reviews._slots_left_sql(connection.vendor),
            {"round": review_round.pk},
        ),
    }


def _walk(node: dict):
    yield node
    for child in node.get("Plans", []):
        yield from _walk(child)


def _postgres_plan(statement, params: dict, generic: bool) -> tuple[int, list[str]]:
    """(shared buffers read, scans of the task table) of one run of the statement, planned
    for these values (custom) or for any (generic, as a prepared statement may run)."""
    # EXPLAIN ANALYZE runs the statement: in a transaction that is rolled back.
    with transaction.atomic(), connection.cursor() as cursor:
        if generic:
            cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            cursor.execute(f"PREPARE plan_check AS {statement.positional_sql}")
            args = ", ".join(["%s"] * len(statement.params))
            cursor.execute(
                f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE plan_check({args})",
                [params[name] for name in statement.params],
            )
        else:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement.sql}", params)
        raw = cursor.fetchone()[0]
        if generic:
            cursor.execute("DEALLOCATE plan_check")
        transaction.set_rollback(True)
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    table = ReviewTask._meta.db_table
    buffers = plan.get("Shared Hit Blocks", 0) + plan.get("Shared Read Blocks", 0)
    scans = [
        f"{n['Node Type']} {n.get('Index Name', '')}".strip()
        for n in _walk(plan)
        if n.get("Relation Name") == table
    ]
    return buffers, scans


def _sqlite_plan(statement, params: dict) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN QUERY PLAN {statement.sql}", params)
        return " | ".join(row[-1] for row in cursor.fetchall())


def test_open_slot_checks_stop_at_the_first_open_slot(busy_round):
    review_round, expert, _ = busy_round
    statements = _statements(review_round, expert)
    for what in ("verdict's open-slot check", "round-complete check"):
        statement, params = statements[what]
        if connection.vendor == "sqlite":
            plan = _sqlite_plan(statement, params)
            assert "task_open_idx" in plan, f"{what}: {plan}"
            continue
        for generic in (False, True):
            buffers, scans = _postgres_plan(statement, params, generic)
            label = f"{what} ({'generic' if generic else 'custom'} plan): {scans}"
            assert not any(s.startswith("Seq Scan") for s in scans), label
            assert buffers <= MAX_CHECK_BUFFERS, f"{buffers} buffers; {label}"


def test_the_claim_costs_the_same_whatever_the_experts_history(busy_round):
    review_round, expert, fresh = busy_round
    statement, _ = _statements(review_round, expert)["claim"]
    if connection.vendor == "sqlite":
        plan = _sqlite_plan(statement, _claim_params(review_round, expert))
        assert "task_open_idx" in plan, plan
        return
    for generic in (False, True):
        kind = "generic" if generic else "custom"
        busy, scans = _postgres_plan(statement, _claim_params(review_round, expert), generic)
        new, _ = _postgres_plan(statement, _claim_params(review_round, fresh), generic)
        assert not any(s.startswith("Seq Scan") for s in scans), scans
        # Reading the history costs a page per few hundred tasks had.
        assert busy - new <= MAX_HISTORY_BUFFERS, (
            f"{kind} plan: {busy} buffers for an expert who had {HAD} slots, {new} for a new "
            f"one; {scans}"
        )
