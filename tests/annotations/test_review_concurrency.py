"""Many experts asking for tasks at once, each in its own thread and database connection:
no slot may be handed out twice (PostgreSQL in CI, with row locks; SQLite locally)."""

import threading
from collections import Counter

import pytest
from django.db import connection

from annotations.models import Review, ReviewTask
from annotations.services import reviews
from tests.annotations.review_fixtures import build_world

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
