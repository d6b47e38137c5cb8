"""Data steps of migrations, run on the models as they stood before them."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("annotations", "0004_reviewtask_autovacuum")]
AFTER = [("annotations", "0005_reviewtask_partial_indexes")]
AFTER_0006 = [("annotations", "0006_explanation_settings_key")]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _project_with_instances(apps, n: int):
    """A project, its model version and ``n`` instances, on a migration state's models."""
    project = apps.get_model("annotations", "Project").objects.create(
        name="p", slug="p", labels=["cat", "dog"]
    )
    dataset = apps.get_model("annotations", "Dataset").objects.create(project=project, name="d")
    mv = apps.get_model("annotations", "ModelVersion").objects.create(
        project=project, version=1, name="m", kind="architecture", default_layer="features.block4"
    )
    Instance = apps.get_model("annotations", "Instance")
    instances = [
        Instance.objects.create(
            project=project,
            dataset=dataset,
            image=f"i{i}.png",
            width=8,
            height=8,
            label="cat",
            content_hash=f"h{i}",
        )
        for i in range(n)
    ]
    return project, mv, instances


def test_extra_leases_of_one_expert_go_back_to_the_pool_keeping_their_work():
    """Before 0005 one expert could hold several leases in a round; 0005 keeps the latest and
    releases the others as expiry would: a started expectation moves to the draft, a revealed
    instance of a blind-first round is not offered to them again, the lapse is recorded."""
    apps = _migrate(BEFORE)
    try:
        User = apps.get_model("auth", "User")
        ReviewRound = apps.get_model("annotations", "ReviewRound")
        ReviewTask = apps.get_model("annotations", "ReviewTask")
        Review = apps.get_model("annotations", "Review")

        expert = User.objects.create(username="double-leased")
        other = User.objects.create(username="single-leased")
        project, mv, instances = _project_with_instances(apps, 4)
        review_round = ReviewRound.objects.create(
            project=project, model_version=mv, name="r", blind_first=True
        )
        now = timezone.now()
        tasks = [ReviewTask.objects.create(round=review_round, instance=i) for i in instances]
        old_revealed, old_plain, latest, others = tasks
        for task, expert_of, minutes_ago, revealed in (
            (old_revealed, expert, 20, True),
            (old_plain, expert, 10, False),
            (latest, expert, 1, False),
            (others, other, 5, False),
        ):
            ReviewTask.objects.filter(pk=task.pk).update(
                status="leased",
                expert=expert_of,
                leased_at=now - timedelta(minutes=minutes_ago),
                lease_expires_at=now + timedelta(minutes=30 - minutes_ago),
                expectation_at=now if revealed else None,
            )
        Review.objects.create(
            task_id=old_revealed.pk,
            round=review_round,
            instance_id=old_revealed.instance_id,
            expert=expert,
            expected_label="dog",
            expected_confidence=4,
            expectation_at=now,
        )

        apps = _migrate(AFTER)
        ReviewTask = apps.get_model("annotations", "ReviewTask")
        state = {
            t.pk: (t.status, t.expert_id, t.expired_count)
            for t in ReviewTask.objects.filter(round_id=review_round.pk)
        }
        assert state == {
            old_revealed.pk: ("open", None, 1),
            old_plain.pk: ("open", None, 1),
            latest.pk: ("leased", expert.pk, 0),
            others.pk: ("leased", other.pk, 0),
        }
        assert not apps.get_model("annotations", "Review").objects.exists()
        draft = apps.get_model("annotations", "ReviewDraft").objects.get(expert_id=expert.pk)
        assert draft.instance_id == old_revealed.instance_id
        assert (draft.data["expected_label"], draft.data["expected_confidence"]) == ("dog", 4)
        skips = apps.get_model("annotations", "TaskSkip").objects.values_list(
            "instance_id", "expert_id"
        )
        assert list(skips) == [(old_revealed.instance_id, expert.pk)]
        expiries = apps.get_model("annotations", "LeaseExpiry").objects.values_list(
            "task_id", flat=True
        )
        assert sorted(expiries) == sorted([old_revealed.pk, old_plain.pk])
    finally:
        _migrate(executor_leaf_nodes())


def executor_leaf_nodes():
    return MigrationExecutor(connection).loader.graph.leaf_nodes()


def test_maps_stored_with_other_settings_are_keyed_by_them(media_root):
    """0006: a map stored before with non-default settings gets their digest, and its file
    the digest in its name (so the default map, computed later, cannot overwrite it);
    default-settings and imported maps keep the key "". Unapplied, the keyed maps go."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from explain_worker import methods

    apps = _migrate([("annotations", "0005_reviewtask_partial_indexes")])
    try:
        Explanation = apps.get_model("annotations", "Explanation")
        stored = {
            "ig-64": methods.AttributionConfig(method="ig", n_steps=64).params(),
            "ig-default": methods.AttributionConfig(method="ig").params(),
            "gradcam-default": methods.AttributionConfig(
                method="gradcam", layer="features.block4"
            ).params(),
            "gradcam-block2": methods.AttributionConfig(
                method="gradcam", layer="features.block2"
            ).params(),
            "imported": {},
        }
        _, mv, instances = _project_with_instances(apps, len(stored))
        ids = {}
        for i, ((name, params), instance) in enumerate(zip(stored.items(), instances, strict=True)):
            ids[name] = Explanation.objects.create(
                instance=instance,
                model_version=mv,
                method=params.get("method", "imported"),
                target="cat",
                params=params,
                raw=default_storage.save(f"explanations/m{i}.npz", ContentFile(name.encode())),
                overlay=default_storage.save(f"explanations/m{i}.png", ContentFile(b"png")),
            ).pk

        apps = _migrate(AFTER_0006)
        keys = dict(
            apps.get_model("annotations", "Explanation").objects.values_list("pk", "settings_key")
        )
        assert (
            keys[ids["ig-default"]] == keys[ids["gradcam-default"]] == keys[ids["imported"]] == ""
        )
        assert len(keys[ids["ig-64"]]) == 16
        assert keys[ids["gradcam-block2"]] not in ("", keys[ids["ig-64"]])
        moved = apps.get_model("annotations", "Explanation").objects.get(pk=ids["ig-64"])
        assert moved.raw.name.endswith(f"-{keys[ids['ig-64']]}.npz")
        assert default_storage.open(moved.raw.name).read() == b"ig-64"
        assert not default_storage.exists("explanations/m0.npz")
        assert not moved.overlay  # drawn again from the map on the next view
        kept = apps.get_model("annotations", "Explanation").objects.get(pk=ids["ig-default"])
        assert default_storage.open(kept.raw.name).read() == b"ig-default"

        apps = _migrate([("annotations", "0005_reviewtask_partial_indexes")])
        left = apps.get_model("annotations", "Explanation").objects.values_list("pk", flat=True)
        assert sorted(left) == sorted(ids[n] for n in ("ig-default", "gradcam-default", "imported"))
        assert not default_storage.exists(moved.raw.name)
    finally:
        _migrate(executor_leaf_nodes())
