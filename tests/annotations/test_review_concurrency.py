"""Many experts asking for tasks at once, each in its own thread and database connection:
no slot may be handed out twice (PostgreSQL in CI, with row locks; SQLite locally)."""

import threading
from collections import Counter

import pytest
from django.db import connection

from annotations.models import Review, ReviewTask
from annotations.services import reviews
from tests.annotations.review_fixtures import build_world, make_round

pytestmark = pytest.mark.django_db(transaction=True)


def test_concurrent_experts_never_share_a_slot(media_root):
    world = build_world(n=30, experts=8, slug="busy")
    review_round = reviews.round_create(
        model_version=world.mv,
        name="rush",
        created_by=world.scientist,
        sampling_strategy={"parts": [{"kind": "all_errors"}, {"kind": "control", "n": 100}]},
        experts=world.experts,
        overlap=2,
        blind_first=False,
        explanation_method="",
        questions=["prediction_verdict"],
    )
    slots = ReviewTask.objects.filter(round=review_round).count()
    assert slots == 60
    handed: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(len(world.experts))

    def expert_loop(expert) -> None:
        try:
            start.wait()
            while True:
                task = reviews.task_next(review_round=review_round, expert=expert)
                if task is None:
                    return
                with lock:
                    handed.append((task.pk, expert.pk))
                reviews.verdict_submit(
                    task=task, expert=expert, data={"prediction_verdict": "correct"}
                )
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=expert_loop, args=(e,)) for e in world.experts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    per_task = Counter(task_id for task_id, _ in handed)
    assert max(per_task.values()) == 1, "a slot was handed to two experts"
    assert len(handed) == slots
    pairs = ReviewTask.objects.filter(round=review_round).values_list("instance_id", "expert_id")
    assert len(set(pairs)) == slots  # never the same instance twice to one expert
    assert Counter(i for i, _ in pairs).most_common(1)[0][1] == 2  # overlap is the ceiling
    assert Review.objects.filter(round=review_round).count() == slots


def _run_threads(target, args_list) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrapped(*args) -> None:
        try:
            target(*args)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=wrapped, args=args) for args in args_list]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return errors


def test_experts_through_the_api_at_once_never_share_a_slot(media_root):
    """The whole hot path over HTTP handlers: access with the lease state, claim, and the
    submits that lock the task in their access query."""
    world = build_world(n=24, experts=6, slug="api-busy")
    review_round = reviews.round_create(
        model_version=world.mv,
        name="rush",
        created_by=world.scientist,
        sampling_strategy={"parts": [{"kind": "ids", "ids": [i.pk for i in world.instances]}]},
        experts=world.experts,
        overlap=2,
        explanation_method="",
    )
    handed: list[tuple[int, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(len(world.experts))

    def expert_loop(expert) -> None:
        client = world.client(expert)
        start.wait()
        while True:
            got = client.post(f"/api/rounds/{review_round.pk}/tasks/next")
            if got.status_code == 204:
                return
            assert got.status_code == 200, got.content
            task = got.json()
            with lock:
                handed.append((task["id"], expert.pk))
            label = task["label_set"][0]
            exp = client.post(
                f"/api/tasks/{task['id']}/expectation",
                {"expected_label": label, "expected_confidence": 3, "evidence": []},
                format="json",
                HTTP_IDEMPOTENCY_KEY=f"e-{task['id']}",
            )
            assert exp.status_code == 200, exp.content
            verdict = client.post(
                f"/api/tasks/{task['id']}/verdict",
                {"prediction_verdict": "correct", "feature_verdict": "relevant"},
                format="json",
                HTTP_IDEMPOTENCY_KEY=f"v-{task['id']}",
            )
            assert verdict.status_code == 200, verdict.content

    errors = _run_threads(expert_loop, [(e,) for e in world.experts])
    assert not errors, errors
    assert len(handed) == len({t for t, _ in handed}) == 48  # every slot once, none twice
    pairs = ReviewTask.objects.filter(round=review_round).values_list("instance_id", "expert_id")
    assert len(set(pairs)) == 48
    assert Review.objects.filter(round=review_round, submitted_at__isnull=False).count() == 48


@pytest.mark.parametrize("same_key", [True, False])
def test_simultaneous_submits_of_one_task_make_one_review(media_root, same_key):
    """Retries racing each other (same Idempotency-Key) all get the first answer; separate
    submits (other keys) find the task submitted (409). Either way one review, version 1:
    the submit reads the task under its row lock."""
    world = build_world(n=2, experts=1, slug="race")
    review_round = reviews.round_create(
        model_version=world.mv,
        name="race",
        created_by=world.scientist,
        sampling_strategy={"parts": [{"kind": "ids", "ids": [world.instances[0].pk]}]},
        experts=world.experts,
        blind_first=False,
        explanation_method="",
    )
    expert = world.experts[0]
    task_id = world.client(expert).post(f"/api/rounds/{review_round.pk}/tasks/next").json()["id"]
    body = {
        "expected_label": "cat",
        "expected_confidence": 2,
        "evidence": [],
        "prediction_verdict": "correct",
        "feature_verdict": "relevant",
    }
    codes: list[int] = []
    bodies: list[dict] = []
    start = threading.Barrier(6)

    def submit(n: int) -> None:
        client = world.client(expert)
        start.wait()
        got = client.post(
            f"/api/tasks/{task_id}/verdict",
            body,
            format="json",
            HTTP_IDEMPOTENCY_KEY="one-key" if same_key else f"key-{n}",
        )
        codes.append(got.status_code)
        if got.status_code == 200:
            bodies.append(got.json())

    errors = _run_threads(submit, [(n,) for n in range(6)])
    assert not errors, errors
    if same_key:
        assert codes == [200] * 6
        assert all(b == bodies[0] for b in bodies)
    else:
        assert sorted(codes) == [200] + [409] * 5
    review = Review.objects.get(task_id=task_id)
    assert review.version == 1
    assert review.submitted_at is not None


def test_one_expert_asking_several_times_at_once_gets_one_task(media_root):
    """A double-clicked "next" (or a client retrying while its first call is in flight)
    sends several claims of one expert at once: each answers with the same task, and the
    expert holds one lease (task_one_lease_per_expert), not one per request."""
    world = build_world(n=12, experts=1, slug="double")
    review_round = make_round(world, overlap=1)
    expert = world.experts[0]
    got: list[tuple[int, int]] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def ask(_: int) -> None:
        client = world.client(expert)
        start.wait()
        response = client.post(f"/api/rounds/{review_round.pk}/tasks/next")
        with lock:
            got.append((response.status_code, response.json()["id"]))

    errors = _run_threads(ask, [(n,) for n in range(6)])
    assert not errors, errors
    assert {code for code, _ in got} == {200}
    assert len({task_id for _, task_id in got}) == 1, got
    leased = ReviewTask.objects.filter(round=review_round, expert=expert, status="leased")
    assert list(leased.values_list("id", flat=True)) == [got[0][1]]
