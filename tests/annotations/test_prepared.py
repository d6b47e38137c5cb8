"""``annotations.prepared``: hand-written hot-path statements must load exactly what the ORM
loads, and on PostgreSQL be prepared once per connection."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotations import selectors
from annotations.models import (
    Explanation,
    Instance,
    ModelVersion,
    Prediction,
    Project,
    Review,
    ReviewRound,
    ReviewTask,
)
from annotations.prepared import Joined, Statement
from annotations.services import reviews
from tests.annotations.review_fixtures import EXPECTATION, add_saliency, build_world, make_round

pytestmark = pytest.mark.django_db


def values(obj) -> dict:
    """Every loaded concrete field as the ORM would give it (files by name)."""
    deferred = obj.get_deferred_fields()
    out = {}
    for f in obj._meta.concrete_fields:
        if f.attname in deferred:
            continue
        value = getattr(obj, f.attname)
        out[f.attname] = value.name if hasattr(value, "storage") else value
    return out


def test_task_in_context_loads_what_the_orm_loads(media_root):
    world = build_world(with_files=True)
    add_saliency(world)
    review_round = make_round(world, explanation_method="gradcam")
    expert = world.experts[0]
    task = reviews.task_next(review_round=review_round, expert=expert)
    reviews.draft_save(task=task, expert=expert, data={"note": "half done", "n": [1, 2]})
    reviews.expectation_submit(task=task, expert=expert, data=EXPECTATION)

    loaded = selectors.task_in_context(task_id=task.pk, user=expert)

    assert values(loaded) == values(ReviewTask.objects.get(pk=task.pk))
    assert values(loaded.loaded_review) == values(Review.objects.get(task=task))
    # Round, project, model version and instance: the hot path's fields, the rest deferred
    # (and still loaded, by a query, when read).
    for got, orm, fields in (
        (loaded.round, ReviewRound.objects.get(pk=review_round.pk), selectors.ROUND_FIELDS),
        (loaded.round.project, Project.objects.get(pk=world.project.pk), selectors.PROJECT_FIELDS),
        (
            loaded.round.model_version,
            ModelVersion.objects.get(pk=world.mv.pk),
            selectors.MODEL_VERSION_FIELDS,
        ),
        (loaded.instance, Instance.objects.get(pk=task.instance_id), selectors.INSTANCE_FIELDS),
    ):
        wanted = {f.attname for f in orm._meta.concrete_fields if f.primary_key or f.name in fields}
        assert set(values(got)) == wanted
        assert values(got) == {k: v for k, v in values(orm).items() if k in wanted}
    with CaptureQueriesContext(connection) as ctx:
        assert loaded.round.sampling == review_round.sampling
    assert len(ctx.captured_queries) == 1
    assert loaded.loaded_draft == {"note": "half done", "n": [1, 2]}
    prediction = Prediction.objects.get(instance_id=task.instance_id, model_version=world.mv)
    # Only what the payload shows is loaded (never the embedding).
    assert values(loaded.loaded_prediction) == {
        k: v
        for k, v in values(prediction).items()
        if k in ("id", "label", "confidence", "probabilities")
    }
    assert "embedding" in loaded.loaded_prediction.get_deferred_fields()
    saliency = Explanation.objects.get(instance_id=task.instance_id, target=prediction.label)
    assert values(loaded.loaded_saliency) == values(saliency)
    # Typed like the ORM's: JSON decoded, datetimes aware, booleans real.
    assert isinstance(loaded.round.project.labels, list)
    assert loaded.leased_at.tzinfo is not None
    assert loaded.round.blind_first is True


def test_what_is_missing_loads_as_none(media_root):
    world = build_world()
    review_round = make_round(world)
    expert = world.experts[0]
    task = reviews.task_next(review_round=review_round, expert=expert)
    Prediction.objects.filter(instance_id=task.instance_id).delete()
    loaded = selectors.task_in_context(task_id=task.pk, user=expert)
    assert loaded.loaded_review is None
    assert loaded.loaded_draft is None
    assert loaded.loaded_prediction is None
    assert loaded.loaded_saliency is None
    # Another user's view of the task carries no draft of the expert's.
    reviews.draft_save(task=task, expert=expert, data={"mine": True})
    other = selectors.task_in_context(task_id=task.pk, user=world.scientist)
    assert other.loaded_draft is None
    assert selectors.task_in_context(task_id=task.pk + 10_000, user=expert) is None


def test_statements_are_prepared_once_per_connection():
    joined = Joined(p=Project)
    statement = Statement(
        f"SELECT {joined.columns} FROM {joined.table('p')} "
        f"WHERE {joined.column('p', 'slug')} = %(slug)s AND {joined.column('p', 'id')} > %(min)s"
    )
    project = build_world(n=1, experts=1).project

    def run() -> list[str]:
        with CaptureQueriesContext(connection) as ctx:
            found = joined.fetch_one(statement, {"slug": project.slug, "min": 0})
            missing = joined.fetch_one(statement, {"slug": "no-such", "min": 0})
        assert found["p"].pk == project.pk
        assert missing is None
        return [q["sql"] for q in ctx.captured_queries]

    first, second = run(), run()
    if connection.vendor == "postgresql":
        assert first[0].startswith(f"PREPARE {statement.name} AS SELECT")
        assert "$1" in first[0]
        assert "$2" in first[0]
        assert all(sql.startswith(f"EXECUTE {statement.name}(") for sql in first[1:] + second)
        assert len(second) == 2
    else:
        assert first == second
        assert all(sql.startswith("SELECT") for sql in first)


@pytest.mark.django_db(transaction=True)
def test_a_new_connection_prepares_again():
    joined = Joined(p=Project)
    statement = Statement(f"SELECT {joined.columns} FROM {joined.table('p')} WHERE 1 = %(one)s")

    def run() -> list[str]:
        with CaptureQueriesContext(connection) as ctx:
            joined.fetch_one(statement, {"one": 1})
        return [q["sql"] for q in ctx.captured_queries]

    run()
    connection.close()  # e.g. CONN_MAX_AGE ran out, or the database restarted
    again = run()
    if connection.vendor == "postgresql":
        assert [sql.split(" ", 1)[0] for sql in again] == ["PREPARE", "EXECUTE"]
    else:
        assert len(again) == 1


def test_prepared_writes_store_what_model_save_stores():
    from annotations.prepared import insert_object, update_object

    world = build_world(n=2, experts=1)
    review_round = make_round(world)
    tasks = list(ReviewTask.objects.filter(round=review_round).order_by("id"))
    common = {
        "round_id": review_round.pk,
        "expert": world.experts[0],
        "expected_label": "cat",
        "expected_confidence": 4,
        "evidence": [{"type": "box", "points": [[1.0, 2.0], [3.0, 4.0]]}],
        "concepts": ["fur"],
        "acceptable": False,
        "client_seconds": 1.5,
    }
    by_orm = Review(task=tasks[0], instance_id=tasks[0].instance_id, **common)
    by_orm.save(force_insert=True)
    ours = Review(task=tasks[1], instance_id=tasks[1].instance_id, **common)
    insert_object(ours)
    assert ours.pk is not None
    assert ours._state.adding is False
    stored = {r.pk: values(r) for r in Review.objects.all()}
    differ = {"id", "task_id", "instance_id", "updated_at"}
    assert {k: v for k, v in stored[ours.pk].items() if k not in differ} == {
        k: v for k, v in stored[by_orm.pk].items() if k not in differ
    }
    assert stored[ours.pk]["updated_at"] is not None  # auto_now applied
    before = stored[ours.pk]["updated_at"]
    ours.severity, ours.comment = 2, "edited"
    update_object(ours, ("severity", "comment", "updated_at"))
    again = Review.objects.get(pk=ours.pk)
    assert (again.severity, again.comment) == (2, "edited")
    assert again.updated_at >= before
    assert again.expected_label == "cat"  # fields not named stay as they were


def test_the_task_queue_table_is_vacuumed_early_on_postgresql():
    """Dead row versions slow every claim; the migration makes autovacuum come at 1 %."""
    if connection.vendor != "postgresql":
        assert connection.vendor == "sqlite"  # nothing to set there
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reloptions FROM pg_class WHERE relname = %s", [ReviewTask._meta.db_table]
        )
        options = set(cursor.fetchone()[0])
    assert "autovacuum_vacuum_scale_factor=0.01" in options
    assert "autovacuum_vacuum_threshold=500" in options


def test_prepared_statements_can_be_turned_off(settings):
    """For a pooler in transaction mode: the same SQL, unprepared."""
    settings.DB_PREPARED_STATEMENTS = False
    joined = Joined(p=Project)
    statement = Statement(f"SELECT {joined.columns} FROM {joined.table('p')} WHERE 2 = %(two)s")
    with CaptureQueriesContext(connection) as ctx:
        joined.fetch_one(statement, {"two": 2})
    assert [q["sql"].split(" ", 1)[0] for q in ctx.captured_queries] == ["SELECT"]
