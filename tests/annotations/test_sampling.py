"""The review-round sampler: what each part chooses, how parts combine, and validation."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model

from annotations.models import (
    Dataset,
    Instance,
    ModelKind,
    ModelVersion,
    Prediction,
    Project,
    Split,
)
from annotations.sampling import KINDS, SamplingError, plan_sample, validate_strategy
from tests.factories import LABELS, make_project

pytestmark = pytest.mark.django_db

CAT, DOG, BIRD = LABELS

# (name, split, ground truth, prediction, confidence). Names say what a row is so that the
# expected results below read as a list of cases, not of database ids.
ERRORS = [
    ("cat>dog .95", Split.TEST, CAT, DOG, 0.95),
    ("cat>dog .91", Split.TEST, CAT, DOG, 0.91),
    ("cat>dog .60", Split.TEST, CAT, DOG, 0.60),
    ("cat>dog .40", Split.TEST, CAT, DOG, 0.40),
    ("cat>bird .97", Split.TEST, CAT, BIRD, 0.97),
    ("dog>cat .92", Split.TEST, DOG, CAT, 0.92),
    ("dog>cat .56", Split.TEST, DOG, CAT, 0.56),
    ("dog>cat .35", Split.TEST, DOG, CAT, 0.35),
    ("bird>cat .50", Split.TEST, BIRD, CAT, 0.50),
    ("bird>cat .45", Split.TEST, BIRD, CAT, 0.45),
    ("train dog>bird .99", Split.TRAIN, DOG, BIRD, 0.99),
    ("train bird>dog .32", Split.TRAIN, BIRD, DOG, 0.32),
]
TEST_ERRORS = {name for name, split, *_ in ERRORS if split == Split.TEST}
# Ten correct test predictions per class, confidences 0.55..0.91 (offset per class: no ties).
CORRECT = [
    (f"{label} ok {i}", Split.TEST, label, label, round(0.55 + 0.04 * i + 0.001 * c, 3))
    for c, label in enumerate(LABELS)
    for i in range(10)
]
TRAIN_CORRECT = [(f"train {label} ok", Split.TRAIN, label, label, 0.8) for label in LABELS]
# Deployment samples have no ground truth: never errors, never controls.
UNLABELLED = [
    ("unlabelled .20", Split.DEPLOYMENT, "", DOG, 0.20),
    ("unlabelled .25", Split.DEPLOYMENT, "", CAT, 0.25),
    ("unlabelled .30", Split.DEPLOYMENT, "", BIRD, 0.30),
]
ROWS = ERRORS + CORRECT + TRAIN_CORRECT + UNLABELLED


@dataclass
class World:
    model_version: ModelVersion
    ids: dict[str, int]  # row name -> instance id
    unpredicted_id: int
    foreign_id: int

    def names(self, instance_ids: list[int]) -> list[str]:
        by_id = {v: k for k, v in self.ids.items()}
        return [by_id[i] for i in instance_ids]

    def plan(self, **strategy):
        # A fresh copy from the database, as a view would have: nothing cached on it.
        model_version = ModelVersion.objects.get(pk=self.model_version.pk)
        return plan_sample(model_version=model_version, strategy=strategy)

    def picked(self, **strategy) -> list[str]:
        return self.names([item.instance_id for item in self.plan(**strategy).items])


def _instances(project, dataset, rows, prefix: str = "") -> list[Instance]:
    return Instance.objects.bulk_create(
        Instance(
            project=project,
            dataset=dataset,
            image=f"instances/{prefix}{i}.png",
            # Filled in, or the image field opens the (absent) file to measure it.
            width=24,
            height=24,
            label=label,
            split=split,
            content_hash=f"{prefix}{i:062d}",
            original_name=name,
        )
        for i, (name, split, label, *_rest) in enumerate(rows)
    )


def _predictions(model_version, instances, rows) -> None:
    Prediction.objects.bulk_create(
        Prediction(
            instance=instance,
            model_version=model_version,
            probabilities=[conf if label == pred else (1 - conf) / 2 for label in LABELS],
            label=pred,
            confidence=conf,
        )
        for instance, (_name, _split, _label, pred, conf) in zip(instances, rows, strict=True)
    )


def _model_version(project, version: int) -> ModelVersion:
    return ModelVersion.objects.create(
        project=project,
        version=version,
        name=f"v{version}",
        kind=ModelKind.PREDICTIONS_ONLY,
        label_order=LABELS,
    )


@pytest.fixture
def world() -> World:
    # An owner without a password: hashing one costs more than the rest of the fixture.
    project = make_project(owner=get_user_model().objects.create(username="owner"))
    dataset = Dataset.objects.create(project=project, name="d")
    instances = _instances(project, dataset, ROWS)
    model_version = _model_version(project, 1)
    _predictions(model_version, instances, ROWS)
    # Another version that gets everything wrong: the sampler must only read its own.
    other = _model_version(project, 2)
    _predictions(
        other, instances, [(n, s, t, BIRD if t != BIRD else CAT, 0.99) for n, s, t, *_ in ROWS]
    )
    # A test instance the model has not predicted yet, which no part may choose.
    (unpredicted,) = _instances(project, dataset, [("unpredicted", Split.TEST, CAT)], "u")
    _predictions(other, [unpredicted], [("", "", "", DOG, 0.99)])
    foreign_project = Project.objects.create(name="Elsewhere", slug="elsewhere", labels=LABELS)
    foreign_dataset = Dataset.objects.create(project=foreign_project, name="d")
    (foreign,) = _instances(foreign_project, foreign_dataset, [("x", Split.TEST, CAT)], "f")
    ids = {instance.original_name: instance.pk for instance in instances}
    return World(model_version, ids, unpredicted.pk, foreign.pk)


# --- Each kind ----------------------------------------------------------------------------


def test_all_errors_in_split_excludes_unlabelled_and_other_splits(world):
    assert set(world.picked(split="test", parts=[{"kind": "all_errors"}])) == TEST_ERRORS
    everywhere = world.picked(parts=[{"kind": "all_errors"}])
    assert set(everywhere) == {name for name, *_ in ERRORS}
    assert len(everywhere) == len(ERRORS)


def test_lowest_confidence_ascending_in_any_correctness(world):
    assert world.picked(split="test", parts=[{"kind": "lowest_confidence", "n": 5}]) == [
        "dog>cat .35",
        "cat>dog .40",
        "bird>cat .45",
        "bird>cat .50",
        "cat ok 0",
    ]
    # Without a split, unlabelled deployment samples count too.
    assert world.picked(parts=[{"kind": "lowest_confidence", "n": 5}]) == [
        "unlabelled .20",
        "unlabelled .25",
        "unlabelled .30",
        "train bird>dog .32",
        "dog>cat .35",
    ]


def test_confident_errors_highest_first(world):
    part = {"kind": "confident_errors", "threshold": 0.9}
    assert world.picked(split="test", parts=[part]) == [
        "cat>bird .97",
        "cat>dog .95",
        "dog>cat .92",
        "cat>dog .91",
    ]
    assert world.picked(parts=[part | {"n": 2}]) == ["train dog>bird .99", "cat>bird .97"]
    # The threshold is inclusive.
    exact = {"kind": "confident_errors", "threshold": 0.95}
    assert world.picked(split="test", parts=[exact]) == ["cat>bird .97", "cat>dog .95"]


def test_control_draws_correct_predictions_only(world):
    picked = world.picked(split="test", parts=[{"kind": "control", "n": 5}])
    assert len(picked) == len(set(picked)) == 5
    assert all(" ok " in name for name in picked)
    # Asking for more than exist gives all of them.
    everything = world.picked(split="test", parts=[{"kind": "control", "n": 100}])
    assert set(everything) == {name for name, *_ in CORRECT}


def test_confusion_quota_per_cell_round_robin(world):
    picked = world.picked(split="test", parts=[{"kind": "confusion_quota", "per_cell": 2}])
    cells = [name.split(" ")[0] for name in picked]
    # First pick of every cell in (true, predicted) label order, then the second picks; the
    # cat>bird cell has only one error.
    assert cells == ["cat>dog", "cat>bird", "dog>cat", "bird>cat", "cat>dog", "dog>cat", "bird>cat"]
    assert set(picked) <= TEST_ERRORS
    assert len(set(picked)) == 7
    every = world.picked(split="test", parts=[{"kind": "confusion_quota", "per_cell": 10}])
    assert set(every) == TEST_ERRORS


def test_stratified_by_true_and_predicted(world):
    rows = {name: (true, pred) for name, _split, true, pred, _conf in ROWS}

    by_true = world.picked(split="test", parts=[{"kind": "stratified", "per_class": 2}])
    assert [rows[name][0] for name in by_true] == [CAT, DOG, BIRD, CAT, DOG, BIRD]

    part = {"kind": "stratified", "per_class": 2, "by": "predicted"}
    by_predicted = world.picked(split="test", parts=[part])
    assert [rows[name][1] for name in by_predicted] == [CAT, DOG, BIRD, CAT, DOG, BIRD]

    part = {"kind": "stratified", "per_class": 3, "classes": [BIRD]}
    assert [rows[name][0] for name in world.picked(parts=[part])] == [BIRD] * 3

    # Unlabelled instances have no true class but do have a predicted one.
    part = {"kind": "stratified", "per_class": 50, "by": "predicted"}
    assert {"unlabelled .20", "unlabelled .25"} <= set(world.picked(parts=[part]))
    part = {"kind": "stratified", "per_class": 50}
    assert not any(name.startswith("unlabelled") for name in world.picked(parts=[part]))


def test_ids_in_given_order_and_from_any_split(world):
    wanted = ["train dog>bird .99", "cat ok 3", "unlabelled .20"]
    ids = [world.ids[name] for name in wanted]
    assert world.picked(split="test", parts=[{"kind": "ids", "ids": [*ids, ids[0]]}]) == wanted


def test_ids_without_prediction_or_from_another_project_are_named(world):
    bad = [world.unpredicted_id, world.foreign_id, 987654]
    strategy = {
        "parts": [{"kind": "all_errors"}, {"kind": "ids", "ids": [world.ids["cat ok 1"], *bad]}]
    }
    with pytest.raises(SamplingError) as caught:
        plan_sample(model_version=world.model_version, strategy=strategy)
    assert caught.value.field == "sampling.parts[1].ids"
    for instance_id in bad:
        assert str(instance_id) in caught.value.message
    assert str(world.ids["cat ok 1"]) not in caught.value.message


# --- Combination --------------------------------------------------------------------------


def test_parts_combine_first_part_wins(world):
    plan = world.plan(
        split="test",
        parts=[
            {"kind": "confident_errors", "threshold": 0.9},
            {"kind": "all_errors"},
            {"kind": "control", "n": 3},
        ],
    )
    names = world.names([item.instance_id for item in plan.items])
    assert names[:4] == ["cat>bird .97", "cat>dog .95", "dog>cat .92", "cat>dog .91"]
    assert [item.part for item in plan.items] == (
        ["confident_errors"] * 4 + ["all_errors"] * 6 + ["control"] * 3
    )
    assert set(names[4:10]) == TEST_ERRORS - set(names[:4])
    assert len(set(names)) == len(names) == plan.total == 13
    priorities = [item.priority for item in plan.items]
    assert priorities == sorted(priorities)
    assert len(set(priorities)) == len(priorities)
    assert plan.counts == {"confident_errors": 4, "all_errors": 10, "control": 3}
    assert plan.new_counts == {"confident_errors": 4, "all_errors": 6, "control": 3}


def test_limit_caps_the_union_and_new_counts_follow(world):
    plan = world.plan(
        split="test",
        limit=5,
        parts=[{"kind": "confident_errors", "threshold": 0.9}, {"kind": "all_errors"}],
    )
    assert plan.total == len(plan.items) == 5
    assert plan.counts == {"confident_errors": 4, "all_errors": 10}
    assert plan.new_counts == {"confident_errors": 4, "all_errors": 1}


def test_part_names_key_the_counts(world):
    plan = world.plan(
        split="test",
        parts=[
            {"kind": "control", "n": 2},
            {"kind": "lowest_confidence", "n": 1, "name": "hardest"},
            {"kind": "control", "n": 4},
        ],
    )
    assert plan.counts == {"control#0": 2, "hardest": 1, "control#2": 4}
    assert {item.part for item in plan.items} == {"control#0", "hardest", "control#2"}
    assert sum(plan.new_counts.values()) == plan.total


def test_empty_result_is_a_plan_not_an_error(world):
    plan = world.plan(split="train", parts=[{"kind": "confident_errors", "threshold": 1}])
    assert plan.items == []
    assert plan.total == 0
    assert plan.counts == plan.new_counts == {"confident_errors": 0}


# --- Determinism --------------------------------------------------------------------------


def test_same_seed_same_sample_other_seed_other_sample(world):
    parts = [
        {"kind": "control", "n": 8},
        {"kind": "all_errors"},
        {"kind": "confusion_quota", "per_cell": 1},
        {"kind": "stratified", "per_class": 3},
    ]
    first = world.plan(split="test", seed=7, parts=parts)
    assert world.plan(split="test", seed=7, parts=parts) == first
    other = world.plan(split="test", seed=8, parts=parts)
    control = [item.instance_id for item in first.items if item.part == "control"]
    assert control != [item.instance_id for item in other.items if item.part == "control"]


def test_a_later_part_does_not_change_what_an_earlier_one_drew(world):
    one = world.plan(split="test", seed=3, parts=[{"kind": "control", "n": 5}])
    two = world.plan(
        split="test", seed=3, parts=[{"kind": "control", "n": 5}, {"kind": "all_errors"}]
    )
    assert two.items[:5] == one.items


# --- Queries ------------------------------------------------------------------------------


_ONE_OF_EACH = {
    "all_errors": {},
    "confusion_quota": {"per_cell": 2},
    "lowest_confidence": {"n": 3},
    "confident_errors": {"threshold": 0.5},
    "control": {"n": 3},
    "ids": {},
    "stratified": {"per_class": 2},
}


def _queries(world: World, assert_max_queries) -> int:
    """Queries one plan using every kind costs, asserting it stays within two."""
    strategy = {
        "split": "test",
        "parts": [{"kind": kind} | extra for kind, extra in _ONE_OF_EACH.items()],
    }
    # From another split, so the ids part also makes the sampler read every split.
    strategy["parts"][5]["ids"] = [world.ids["train dog>bird .99"], world.ids["cat ok 1"]]
    model_version = ModelVersion.objects.get(pk=world.model_version.pk)
    with assert_max_queries(2) as captured:
        plan = plan_sample(model_version=model_version, strategy=strategy)
    assert plan.total > 0
    return len(captured.captured_queries)


def test_query_count_does_not_grow_with_instances(world, django_assert_max_num_queries):
    assert list(_ONE_OF_EACH) == list(KINDS)
    before = _queries(world, django_assert_max_num_queries)
    model_version = world.model_version
    dataset = Dataset.objects.get(project=model_version.project)
    more = [(f"more {i}", Split.TEST, LABELS[i % 3], LABELS[i // 3 % 3], 0.5) for i in range(600)]
    _predictions(model_version, _instances(model_version.project, dataset, more, "m"), more)
    assert _queries(world, django_assert_max_num_queries) == before


# --- Validation ---------------------------------------------------------------------------


def test_validate_fills_defaults_and_is_idempotent():
    strategy = {
        "parts": [
            {"kind": "confident_errors", "threshold": 1},
            {"kind": "stratified", "per_class": 1},
            {"kind": "ids", "ids": [3, 1, 3]},
            {"kind": "control", "n": 1},
            {"kind": "control", "n": 2, "name": "more control"},
        ]
    }
    normal = validate_strategy(strategy, labels=LABELS)
    assert normal == {
        "split": None,
        "seed": 0,
        "limit": None,
        "parts": [
            {"kind": "confident_errors", "name": "confident_errors", "threshold": 1.0, "n": None},
            {
                "kind": "stratified",
                "name": "stratified",
                "per_class": 1,
                "by": "true",
                "classes": LABELS,
            },
            {"kind": "ids", "name": "ids", "ids": [3, 1]},
            {"kind": "control", "name": "control#3", "n": 1},
            {"kind": "control", "name": "more control", "n": 2},
        ],
    }
    assert validate_strategy(normal, labels=LABELS) == normal
    assert strategy["parts"][2]["ids"] == [3, 1, 3]  # the input is left alone


def _part(**fields) -> dict:
    return {"parts": [{"kind": "all_errors"}, fields]}


@pytest.mark.parametrize(
    ("strategy", "field", "says"),
    [
        ([], "sampling", "object"),
        ({"parts": []}, "sampling.parts", "at least one"),
        ({}, "sampling.parts", "required"),
        ({"parts": {"kind": "all_errors"}}, "sampling.parts", "list"),
        ({"parts": [{"kind": "all_errors"}] * 21}, "sampling.parts", "at most"),
        ({"parts": [{"kind": "all_errors"}], "spilt": "test"}, "sampling.spilt", "unknown"),
        ({"parts": [{"kind": "all_errors"}], "split": "val"}, "sampling.split", "deployment"),
        ({"parts": [{"kind": "all_errors"}], "seed": -1}, "sampling.seed", "non-negative"),
        ({"parts": [{"kind": "all_errors"}], "seed": "1"}, "sampling.seed", "integer"),
        ({"parts": [{"kind": "all_errors"}], "limit": 0}, "sampling.limit", "positive"),
        (_part(kind="errors"), "sampling.parts[1].kind", "'errors'"),
        ({"parts": ["all_errors"]}, "sampling.parts[0]", "object"),
        (_part(n=3), "sampling.parts[1].kind", "required"),
        (_part(kind="lowest_confidence"), "sampling.parts[1].n", "required"),
        (_part(kind="lowest_confidence", n=0), "sampling.parts[1].n", "positive"),
        (_part(kind="lowest_confidence", n=2.0), "sampling.parts[1].n", "integer"),
        (_part(kind="control", n=True), "sampling.parts[1].n", "integer"),
        (_part(kind="control", n=5, seed=1), "sampling.parts[1].seed", "unknown"),
        (_part(kind="confusion_quota", per_cell=-2), "sampling.parts[1].per_cell", "positive"),
        (_part(kind="confusion_quota", **{"per-cell": 2}), "sampling.parts[1].per-cell", "unknown"),
        (_part(kind="confident_errors"), "sampling.parts[1].threshold", "required"),
        (_part(kind="confident_errors", threshold=0), "sampling.parts[1].threshold", "(0, 1]"),
        (_part(kind="confident_errors", threshold=1.2), "sampling.parts[1].threshold", "(0, 1]"),
        (_part(kind="confident_errors", threshold="0.9"), "sampling.parts[1].threshold", "number"),
        (
            _part(kind="confident_errors", threshold=float("nan")),
            "sampling.parts[1].threshold",
            "number",
        ),
        (_part(kind="confident_errors", threshold=0.9, n=0), "sampling.parts[1].n", "positive"),
        (_part(kind="ids"), "sampling.parts[1].ids", "required"),
        (_part(kind="ids", ids=[]), "sampling.parts[1].ids", "non-empty"),
        (_part(kind="ids", ids=[1, "2"]), "sampling.parts[1].ids[1]", "positive"),
        (_part(kind="stratified"), "sampling.parts[1].per_class", "required"),
        (_part(kind="stratified", per_class=0), "sampling.parts[1].per_class", "positive"),
        (_part(kind="stratified", per_class=1, by="both"), "sampling.parts[1].by", "predicted"),
        (
            _part(kind="stratified", per_class=1, classes=[]),
            "sampling.parts[1].classes",
            "non-empty",
        ),
        (
            _part(kind="stratified", per_class=1, classes=["fish"]),
            "sampling.parts[1].classes[0]",
            "fish",
        ),
        (
            _part(kind="stratified", per_class=1, classes=["cat", "cat"]),
            "sampling.parts[1].classes",
            "more than once",
        ),
        (_part(kind="all_errors", name=""), "sampling.parts[1].name", "non-empty"),
        (_part(kind="all_errors", name=3), "sampling.parts[1].name", "string"),
        (_part(kind="all_errors", name="x" * 101), "sampling.parts[1].name", "at most"),
        (_part(kind="control", n=1, name="all_errors"), "sampling.parts[1].name", "unique"),
    ],
)
def test_every_validation_error_names_its_field(strategy, field, says):
    with pytest.raises(SamplingError) as caught:
        validate_strategy(strategy, labels=LABELS)
    assert caught.value.field == field
    assert says in caught.value.message
    assert str(caught.value).startswith(f"{field}: ")


def test_unknown_kind_lists_the_valid_ones():
    with pytest.raises(SamplingError) as caught:
        validate_strategy({"parts": [{"kind": "hard"}]}, labels=LABELS)
    assert all(kind in caught.value.message for kind in KINDS)


def test_plan_sample_validates_too(world):
    with pytest.raises(SamplingError) as caught:
        world.plan(parts=[{"kind": "control", "n": 0}])
    assert caught.value.field == "sampling.parts[0].n"
