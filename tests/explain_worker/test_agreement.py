"""Consensus and agreement among experts: Krippendorff's alpha against the worked example of
its author, majority votes with ties, Dawid-Skene finding a planted bad annotator, and the
choice between the two."""

from __future__ import annotations

import math

import numpy as np
import pytest

from explain_worker import agreement
from explain_worker.agreement import Consensus

# Krippendorff, "Computing Krippendorff's Alpha-Reliability" (2011), section C: 4 coders
# (observers A-D), 12 units, values 1-5, None where a coder gave no value. The paper gives
# alpha = 0.743 (nominal), 0.815 (ordinal), 0.849 (interval) for these data.
PAPER = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
]


def test_alpha_matches_krippendorffs_nominal_example():
    assert agreement.krippendorff_alpha(PAPER, level="nominal") == pytest.approx(0.743, abs=5e-4)


def test_nominal_alpha_takes_any_labels_and_arrays_with_nan():
    # Nominal data have no order: naming the values changes nothing.
    names = {1: "kitchen", 2: "bedroom", 3: "office", 4: "bathroom", 5: "hall"}
    named = [[None if v is None else names[v] for v in row] for row in PAPER]
    as_array = np.array([[np.nan if v is None else v for v in row] for row in PAPER], dtype=float)
    assert agreement.krippendorff_alpha(named) == pytest.approx(0.743, abs=5e-4)
    assert agreement.krippendorff_alpha(as_array) == pytest.approx(0.743, abs=5e-4)


def test_alpha_matches_krippendorffs_interval_and_ordinal_examples():
    assert agreement.krippendorff_alpha(PAPER, level="interval") == pytest.approx(0.849, abs=5e-4)
    assert agreement.krippendorff_alpha(PAPER, level="ordinal") == pytest.approx(0.815, abs=5e-4)


def test_alpha_of_a_small_case_worked_by_hand():
    # Two units, each {1, 2}: coincidences o12 = o21 = 2, n = 4, n1 = n2 = 2.
    # Do = 4/4 = 1, De = 2 * 2 * 2 / (4 * 3) = 2/3, alpha = 1 - 1 / (2/3) = -0.5.
    assert agreement.krippendorff_alpha([["a", "b"], ["b", "a"]]) == pytest.approx(-0.5)
    assert agreement.krippendorff_alpha([["a", "b"], ["a", "b"]]) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "ratings",
    [
        pytest.param([[1, 1, 1], [1, 1, 1]], id="a single value overall"),
        pytest.param([[1, None, 2], [None, 3, None]], id="no unit with two coders"),
        pytest.param([[1, 2, 3]], id="one coder"),
        pytest.param([[1, 2], [1, None]], id="pairable answers hold one value"),
        pytest.param([], id="no coder"),
        pytest.param(np.full((3, 4), np.nan), id="all missing"),
    ],
)
@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval"])
def test_undefined_alpha_is_none(ratings, level):
    assert agreement.krippendorff_alpha(ratings, level=level) is None


def test_alpha_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="one entry per unit"):
        agreement.krippendorff_alpha([[1, 2, 3], [1, 2]])
    with pytest.raises(ValueError, match="must be numbers"):
        agreement.krippendorff_alpha([["low", "high"], ["low", "low"]], level="ordinal")
    with pytest.raises(ValueError, match="level"):
        agreement.krippendorff_alpha(PAPER, level="ratio")  # type: ignore[arg-type]


def test_ratings_grouped_per_question_and_per_class():
    # (group, unit = instance, coder = expert, value)
    records = []
    for unit, row in enumerate(zip(*PAPER, strict=True)):
        for coder, value in zip("ABCD", row, strict=True):
            records.append(("paper", unit, coder, value))
    records += [
        (("verdict", "cat"), 1, "A", "correct"),
        (("verdict", "cat"), 1, "B", "correct"),
        (("verdict", "cat"), 2, "A", "incorrect"),
        (("verdict", "cat"), 2, "B", "incorrect"),
        (("verdict", "dog"), 3, "B", "correct"),
        (("verdict", "dog"), 3, "C", "correct"),
        (("verdict", "dog"), 4, "C", None),
    ]
    tables = agreement.reliability_data_by_group(records)
    assert tables[("verdict", "cat")] == agreement.ReliabilityData(
        coders=("A", "B"),
        units=(1, 2),
        ratings=(("correct", "incorrect"), ("correct", "incorrect")),
    )
    # A None answer is no answer: unit 4 is not in the table.
    assert tables[("verdict", "dog")].units == (3,)
    # Coders in order of first answer: C gave none on the first unit, D did.
    paper = tables["paper"]
    assert paper.coders == ("A", "B", "D", "C")
    assert paper.units == tuple(range(12))
    assert paper.ratings[paper.coders.index("A")][9] is None
    assert paper.ratings[paper.coders.index("C")][1] == 3

    alphas = agreement.alpha_by_group(
        records, level=lambda group: "interval" if group == "paper" else "nominal"
    )
    assert alphas["paper"] == pytest.approx(0.849, abs=5e-4)
    assert alphas[("verdict", "cat")] == pytest.approx(1.0)
    assert alphas[("verdict", "dog")] is None  # one value: undefined


def test_grouping_refuses_a_coder_answering_a_unit_twice():
    with pytest.raises(ValueError, match="twice"):
        agreement.reliability_data_by_group([("q", 1, "A", "x"), ("q", 1, "A", "y")])


def test_majority_reports_ties_instead_of_breaking_them():
    result = agreement.majority_consensus(
        {
            "clear": ["cat", "dog", "cat", None],
            "tie": ["dog", "cat", "cat", "dog"],
            "three way": ["a", "b", "c"],
            "unanswered": [None, None],
            "empty": [],
        }
    )
    assert result["clear"] == Consensus(label="cat", votes=2, total=3)
    assert result["clear"].share == pytest.approx(2 / 3)
    assert result["tie"] == Consensus(label=None, votes=2, total=4, tied=("dog", "cat"))
    assert result["tie"].share is None
    assert result["three way"] == Consensus(label=None, votes=1, total=3, tied=("a", "b", "c"))
    assert result["unanswered"] == Consensus(label=None, votes=0, total=0)
    assert result["empty"] == Consensus(label=None, votes=0, total=0)


def planted_annotations(
    seed: int, bad: str, n_items: int = 200, n_classes: int = 3
) -> tuple[list[str], list[tuple[int, str, str]]]:
    """Four good annotators right 90 % of the time (errors spread over the other classes)
    and one bad one on every item: ``adversarial`` always answers the next class,
    ``random`` answers uniformly at random."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, n_classes, n_items)
    annotations = []
    for item, true in enumerate(truth.tolist()):
        for worker in ("good1", "good2", "good3", "good4"):
            if rng.random() < 0.9:
                label = true
            else:
                label = int(rng.choice([c for c in range(n_classes) if c != true]))
            annotations.append((item, worker, f"class{label}"))
        bad_label = (true + 1) % n_classes if bad == "adversarial" else rng.integers(n_classes)
        annotations.append((item, "bad", f"class{int(bad_label)}"))
    return [f"class{t}" for t in truth.tolist()], annotations


def majority_expected_correct(truth: list[str], annotations) -> float:
    """Correct majority labels, a tie counting as the chance that breaking it at random
    would pick the truth (fairer to the majority than counting every tie as wrong)."""
    labels_by_item: dict[int, list[str]] = {}
    for item, _, label in annotations:
        labels_by_item.setdefault(item, []).append(label)
    total = 0.0
    for item, result in agreement.majority_consensus(labels_by_item).items():
        if result.label is not None:
            total += result.label == truth[item]
        elif truth[item] in result.tied:
            total += 1 / len(result.tied)
    return total


@pytest.mark.parametrize("bad", ["adversarial", "random"])
def test_dawid_skene_finds_the_planted_bad_annotator_and_beats_majority(bad):
    truth, annotations = planted_annotations(seed=0, bad=bad)
    estimate = agreement.dawid_skene(annotations)

    accuracy = estimate["worker_accuracy"]
    assert set(accuracy) == {"good1", "good2", "good3", "good4", "bad"}
    assert min(accuracy, key=accuracy.get) == "bad"
    # Chance is 1/3; the adversary is never right. The good ones are near their 0.9.
    assert accuracy["bad"] < 0.45
    for worker in ("good1", "good2", "good3", "good4"):
        assert 0.8 < accuracy[worker] < 1.0

    ds_correct = sum(estimate["labels"][item] == truth[item] for item in range(len(truth)))
    assert ds_correct > majority_expected_correct(truth, annotations)
    assert estimate["class_priors"].keys() == {"class0", "class1", "class2"}
    for item in range(len(truth)):
        probabilities = estimate["probabilities"][item]
        assert sum(probabilities.values()) == pytest.approx(1.0)
        assert estimate["posteriors"][item] == pytest.approx(max(probabilities.values()))


def test_dawid_skene_reports_a_tie_it_cannot_break():
    # Two workers who always disagree, symmetrically: nothing tells them apart.
    estimate = agreement.dawid_skene([(1, "a", "x"), (1, "b", "y"), (2, "a", "y"), (2, "b", "x")])
    assert estimate["labels"] == {1: None, 2: None}
    assert estimate["tied"] == {1: ("x", "y"), 2: ("x", "y")}


def test_dawid_skene_of_nothing_is_empty():
    estimate = agreement.dawid_skene([(1, "a", None)])
    assert estimate["labels"] == {}
    assert estimate["worker_accuracy"] == {}


def test_consensus_uses_dawid_skene_only_when_overlap_allows():
    truth, annotations = planted_annotations(seed=0, bad="adversarial", n_items=30)
    chosen = agreement.consensus(annotations)
    assert chosen.method == "dawid_skene"
    assert "Dawid-Skene" in chosen.reason
    assert min(chosen.worker_accuracy, key=chosen.worker_accuracy.get) == "bad"
    first = chosen.items[0]
    assert first.label == truth[0]
    assert first.total == 5
    assert first.posterior is not None
    assert first.votes == sum(label == first.label for item, _, label in annotations if item == 0)

    # One item with a single answer: majority for everything, and the reason says why.
    single = [*annotations, (999, "good1", "class0")]
    fallback = agreement.consensus(single)
    assert fallback.method == "majority"
    assert "1 answer" in fallback.reason
    assert fallback.worker_accuracy == {}
    assert fallback.items[999] == Consensus(label="class0", votes=1, total=1)

    # Every item answered twice but only by two workers.
    two_workers = [a for a in annotations if a[1] in ("good1", "good2")]
    assert agreement.consensus(two_workers).method == "majority"
    assert "2 worker" in agreement.consensus(two_workers).reason

    # Overlap 2 among three workers is enough.
    rotating = [
        (0, "a", "x"), (0, "b", "x"),
        (1, "b", "y"), (1, "c", "y"),
        (2, "c", "x"), (2, "a", "x"),
    ]  # fmt: skip
    assert agreement.consensus(rotating).method == "dawid_skene"
    assert agreement.consensus([]).method == "majority"


def test_consensus_by_dawid_skene_keeps_a_tie_a_tie():
    # Three workers, but the two contradicting ones answer every item: EM cannot choose.
    symmetric = [(1, "a", "x"), (1, "b", "y"), (2, "a", "y"), (2, "b", "x"), (3, "c", "z")]
    symmetric += [(3, "a", "z")]
    result = agreement.consensus(symmetric)
    assert result.method == "dawid_skene"
    assert result.items[1].label is None
    assert result.items[1].tied == ("x", "y")
    assert result.items[1].votes == 1


def test_expert_agreement_is_each_workers_share_of_answers_matching_consensus():
    annotations = [
        (1, "a", "cat"), (1, "b", "cat"), (1, "c", "dog"),
        (2, "a", "dog"), (2, "b", "dog"), (2, "c", "dog"),
        (3, "a", "cat"), (3, "b", "dog"),  # a tie: counts for nobody
        (4, "a", None), (4, "b", "cat"), (4, "c", "cat"),  # a's unanswered question
    ]  # fmt: skip
    labels_by_item: dict[int, list[str | None]] = {}
    for item, _, label in annotations:
        labels_by_item.setdefault(item, []).append(label)
    majority = agreement.majority_consensus(labels_by_item)
    shares = agreement.expert_agreement(annotations, majority)
    assert shares == {"a": 1.0, "b": 1.0, "c": pytest.approx(2 / 3)}

    # Bare labels work as well; a worker with nothing comparable is left out.
    assert agreement.expert_agreement(annotations, {1: "dog"}) == {"a": 0.0, "b": 0.0, "c": 1.0}
    assert agreement.expert_agreement([(5, "d", "cat")], majority) == {}


def test_a_worker_answering_an_item_twice_is_refused():
    twice = [(1, "a", "x"), (1, "a", "y"), (1, "b", "x")]
    with pytest.raises(ValueError, match="more than once"):
        agreement.consensus(twice)
    with pytest.raises(ValueError, match="more than once"):
        agreement.dawid_skene(twice)


def test_results_are_plain_numbers():
    _, annotations = planted_annotations(seed=1, bad="random", n_items=20)
    estimate = agreement.dawid_skene(annotations)
    values = [*estimate["worker_accuracy"].values(), *estimate["posteriors"].values()]
    assert all(type(v) is float and math.isfinite(v) for v in values)
    assert type(agreement.krippendorff_alpha(PAPER)) is float
