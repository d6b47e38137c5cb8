"""Agreement among experts and the consensus of their answers: plain data in, plain data out.

Several experts answer the same questions about one instance (its label, whether the
prediction is correct, whether the saliency is relevant, whether an error is acceptable).
This module turns their answers into:

- **a consensus per instance**: ``majority_consensus`` (the most frequent answer, its vote
  count and the total; a tie is reported as a tie and left without a label rather than
  broken by input order), and ``dawid_skene`` (Dawid & Skene, 1979: an EM estimate of each
  expert's confusion matrix and of each instance's true label, so a careless or adversarial
  expert weighs less). ``consensus`` picks between the two and says which it used;
- **how reliable the answers are**: ``krippendorff_alpha`` (Krippendorff's alpha, any number
  of coders, missing answers allowed, nominal, ordinal or interval data), with
  ``alpha_by_group`` to compute it per question, per round or per class in one pass;
- **each expert's agreement with the consensus**: ``expert_agreement``.

Dawid-Skene comes from ``crowd-kit`` (``crowdkit.aggregation.DawidSkene``) and alpha from
``krippendorff``. Both are imported inside the functions that use them: crowd-kit pulls in
pandas, SciPy and scikit-learn (about 1.5 s of imports), which a worker that only renders
saliency maps should not pay for.

Items, workers (experts) and labels are any hashable values (ids, class names); an answer of
``None`` means "not answered" (a question the round did not ask, an acceptability for a
prediction judged correct) and is left out everywhere. One worker answers an item at most
once per question; a second answer is refused with ``ValueError`` rather than counted twice.

This module must stay free of Django.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

import numpy as np

Item = Hashable
Worker = Hashable
Label = Hashable
Annotation = tuple[Item, Worker, Label | None]
Level = Literal["nominal", "ordinal", "interval"]

MAJORITY = "majority"
DAWID_SKENE = "dawid_skene"

# Posteriors closer than this are a tie: crowd-kit floors probabilities at 1e-10, and two
# labels that EM cannot tell apart end with posteriors equal to the last few bits.
_POSTERIOR_TIE = 1e-9


@dataclass(frozen=True)
class Consensus:
    """The consensus answer for one item.

    ``label`` is None when no answer was given or when the top answers tie; the tied answers
    are then in ``tied`` (in the order they were first given), so a caller can show "2 vs 2"
    instead of an arbitrary winner. ``votes`` is the number of answers equal to ``label``
    (for a tie, the count each tied answer got) out of ``total`` answers. ``posterior`` is
    Dawid-Skene's probability for ``label`` (None for a majority vote).
    """

    label: Label | None
    votes: int
    total: int
    tied: tuple[Label, ...] = ()
    posterior: float | None = None

    @property
    def share(self) -> float | None:
        """Share of the answers that gave ``label`` (None without a label)."""
        if self.label is None or self.total == 0:
            return None
        return self.votes / self.total


@dataclass(frozen=True)
class ConsensusResult:
    """What ``consensus`` decided: the method it used, why, and the consensus per item.

    ``worker_accuracy`` is Dawid-Skene's estimate per worker, empty for a majority vote.
    """

    method: Literal["majority", "dawid_skene"]
    reason: str
    items: dict[Item, Consensus]
    worker_accuracy: dict[Worker, float] = field(default_factory=dict)


class DawidSkeneResult(TypedDict):
    """Output of ``dawid_skene``.

    - ``labels``: per item the label of highest posterior, None when two or more tie;
    - ``posteriors``: per item the posterior of that label (of the tied labels for a tie);
    - ``probabilities``: per item the posterior of every label;
    - ``tied``: only the items whose top posteriors tie, with the tied labels;
    - ``worker_accuracy``: per worker, the estimated probability of answering correctly,
      from their confusion matrix weighted by the class priors:
      ``sum_c prior[c] * P(answer c | true c)``;
    - ``class_priors``: the estimated share of each true label.
    """

    labels: dict[Item, Label | None]
    posteriors: dict[Item, float]
    probabilities: dict[Item, dict[Label, float]]
    tied: dict[Item, tuple[Label, ...]]
    worker_accuracy: dict[Worker, float]
    class_priors: dict[Label, float]


# --- Consensus ------------------------------------------------------------------------------


def majority_consensus(
    labels_by_item: Mapping[Item, Sequence[Label | None]],
) -> dict[Item, Consensus]:
    """The most frequent answer per item, with its vote count and the number of answers.

    ``None`` answers are not counted. A tie between the top answers gives ``label=None``
    and the tied answers in ``tied``: the caller decides (ask another expert, show the
    split), nothing is picked by input order. An item with no answer gets
    ``Consensus(None, 0, 0)``.
    """
    result: dict[Item, Consensus] = {}
    for item, labels in labels_by_item.items():
        counts = Counter(label for label in labels if label is not None)
        total = sum(counts.values())
        if total == 0:
            result[item] = Consensus(label=None, votes=0, total=0)
            continue
        top = max(counts.values())
        # Counter keeps first-seen order, so ``tied`` lists answers in the order given.
        leaders = tuple(label for label, count in counts.items() if count == top)
        if len(leaders) > 1:
            result[item] = Consensus(label=None, votes=top, total=total, tied=leaders)
        else:
            result[item] = Consensus(label=leaders[0], votes=top, total=total)
    return result


def _clean_annotations(annotations: Iterable[Annotation]) -> list[tuple[Item, Worker, Label]]:
    """Answered annotations only; a worker answering one item twice is an error."""
    kept: list[tuple[Item, Worker, Label]] = []
    seen: set[tuple[Item, Worker]] = set()
    for item, worker, label in annotations:
        if label is None:
            continue
        if (item, worker) in seen:
            raise ValueError(f"worker {worker!r} answered item {item!r} more than once")
        seen.add((item, worker))
        kept.append((item, worker, label))
    return kept


def _codes(values: Iterable[Hashable]) -> dict[Hashable, int]:
    """Integer codes in order of first appearance (deterministic for a given input order)."""
    codes: dict[Hashable, int] = {}
    for value in values:
        codes.setdefault(value, len(codes))
    return codes


def dawid_skene(
    annotations: Sequence[Annotation], *, n_iter: int = 100, tol: float = 1e-5
) -> DawidSkeneResult:
    """Dawid-Skene (1979) consensus from ``(item, worker, label)`` triples, with crowd-kit.

    EM over one confusion matrix per worker and a class prior, started from the majority
    vote (crowd-kit's default), run for at most ``n_iter`` iterations or until the
    evidence lower bound changes by less than ``tol``. Deterministic for a given input.

    It is meant for items with at least two answers and at least three workers (see
    ``consensus``); with fewer it still runs but its estimates mean little. Items, workers
    and labels are passed to crowd-kit as integer codes, so any hashable values work.
    """
    kept = _clean_annotations(annotations)
    result: DawidSkeneResult = {
        "labels": {},
        "posteriors": {},
        "probabilities": {},
        "tied": {},
        "worker_accuracy": {},
        "class_priors": {},
    }
    if not kept:
        return result

    import pandas as pd
    from crowdkit.aggregation import DawidSkene
    from pandas.errors import Pandas4Warning

    item_codes = _codes(item for item, _, _ in kept)
    worker_codes = _codes(worker for _, worker, _ in kept)
    label_codes = _codes(label for _, _, label in kept)
    items = list(item_codes)
    workers = list(worker_codes)
    labels = list(label_codes)
    frame = pd.DataFrame(
        {
            "task": [item_codes[item] for item, _, _ in kept],
            "worker": [worker_codes[worker] for _, worker, _ in kept],
            "label": [label_codes[label] for _, _, label in kept],
        }
    )
    with warnings.catch_warnings():
        # crowd-kit 1.4 still calls pandas with ``inplace=`` and ``copy=``, which pandas 3
        # deprecates for pandas 4 (hence ``pandas<4`` in requirements.txt): 28 warnings a
        # fit that say nothing about our data.
        warnings.filterwarnings("ignore", category=Pandas4Warning, module=r"crowdkit\.")
        model = DawidSkene(n_iter=n_iter, tol=tol).fit(frame)

    # probas_: one row per task code, one column per label code (labels never given are
    # absent); reindex so column k is label k.
    probas = model.probas_.reindex(columns=range(len(labels)), fill_value=0.0)
    matrix = probas.reindex(index=range(len(items))).to_numpy(dtype=float)
    priors = model.priors_.reindex(range(len(labels)), fill_value=0.0).to_numpy(dtype=float)
    # errors_: index (worker, observed label), columns true label: P(observed | true).
    errors = model.errors_

    for row, item in enumerate(items):
        posterior = matrix[row]
        top = float(posterior.max())
        leaders = tuple(labels[k] for k in np.flatnonzero(posterior >= top - _POSTERIOR_TIE))
        result["probabilities"][item] = {labels[k]: float(posterior[k]) for k in range(len(labels))}
        result["posteriors"][item] = top
        if len(leaders) > 1:
            result["labels"][item] = None
            result["tied"][item] = leaders
        else:
            result["labels"][item] = leaders[0]
    for code, worker in enumerate(workers):
        accuracy = 0.0
        for k in range(len(labels)):
            # A worker who never answered k has no (worker, k) row: P(answer k | true k) = 0.
            if (code, k) in errors.index and k in errors.columns:
                accuracy += float(priors[k]) * float(errors.at[(code, k), k])
        result["worker_accuracy"][worker] = accuracy
    result["class_priors"] = {labels[k]: float(priors[k]) for k in range(len(labels))}
    return result


def consensus(
    annotations: Sequence[Annotation], *, min_answers_per_item: int = 2, min_workers: int = 3
) -> ConsensusResult:
    """Consensus per item by Dawid-Skene when the overlap allows it, else by majority vote.

    Dawid-Skene estimates each worker's reliability from the items they share with others,
    so it is used only when every answered item has at least ``min_answers_per_item``
    answers and there are at least ``min_workers`` workers; otherwise a majority vote, which
    assumes nothing. ``method`` and ``reason`` say which was used and why.
    """
    kept = _clean_annotations(annotations)
    by_item: dict[Item, list[Label]] = defaultdict(list)
    for item, _, label in kept:
        by_item[item].append(label)
    n_workers = len({worker for _, worker, _ in kept})
    fewest = min((len(labels) for labels in by_item.values()), default=0)

    if not by_item or fewest < min_answers_per_item:
        return ConsensusResult(
            method=MAJORITY,
            reason=(
                f"majority vote: an item has {fewest} answer(s), "
                f"Dawid-Skene needs at least {min_answers_per_item} on every item"
            ),
            items=majority_consensus(by_item),
        )
    if n_workers < min_workers:
        return ConsensusResult(
            method=MAJORITY,
            reason=(
                f"majority vote: {n_workers} worker(s) answered, "
                f"Dawid-Skene needs at least {min_workers}"
            ),
            items=majority_consensus(by_item),
        )

    estimate = dawid_skene(kept)
    items: dict[Item, Consensus] = {}
    for item, labels in by_item.items():
        counts = Counter(labels)
        label = estimate["labels"][item]
        tied = estimate["tied"].get(item, ())
        items[item] = Consensus(
            label=label,
            votes=counts[label] if label is not None else max(counts[t] for t in tied),
            total=len(labels),
            tied=tied,
            posterior=estimate["posteriors"][item],
        )
    return ConsensusResult(
        method=DAWID_SKENE,
        reason=(
            f"Dawid-Skene: every item has at least {fewest} answers "
            f"and {n_workers} workers answered"
        ),
        items=items,
        worker_accuracy=estimate["worker_accuracy"],
    )


def expert_agreement(
    annotations: Iterable[Annotation], consensus: Mapping[Item, Consensus | Label | None]
) -> dict[Worker, float]:
    """Each worker's share of answers equal to the consensus label.

    ``consensus`` maps items to a ``Consensus`` or to a bare label. Items without a
    consensus label (a tie, no answers, absent from ``consensus``) and unanswered questions
    are left out of a worker's count; a worker with no answer left is left out of the
    result. The worker's own answer is part of the consensus they are compared with, so
    with few answers per item agreement reads high (with two answers, every non-tied item
    agrees); compare experts within one round, not across rounds of different overlap.
    """
    agreed: Counter[Worker] = Counter()
    counted: Counter[Worker] = Counter()
    for item, worker, label in _clean_annotations(annotations):
        reference = consensus.get(item)
        if isinstance(reference, Consensus):
            reference = reference.label
        if reference is None:
            continue
        counted[worker] += 1
        agreed[worker] += label == reference
    return {worker: agreed[worker] / counted[worker] for worker in counted}


# --- Krippendorff's alpha -------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def krippendorff_alpha(
    ratings: Sequence[Sequence[Any]] | np.ndarray, level: Level = "nominal"
) -> float | None:
    """Krippendorff's alpha of ``ratings``, coders by units, or None where it is undefined.

    ``ratings`` is one list per coder (expert), all of the same length (one entry per unit,
    the instance), with None or NaN where a coder did not rate a unit; or a
    (coders, units) float array with NaN for missing. Nominal values may be any hashable
    (class names, verdicts); ordinal and interval values must be numbers (an ordinal
    question such as severity 1-4 is passed as its numbers).

    Alpha is undefined, and None is returned (never NaN, no exception), when no unit has
    answers from at least two coders (nothing is pairable) or when the pairable answers
    hold a single value (no disagreement is possible, so expected disagreement is 0).
    Units rated by one coder only are ignored, as in Krippendorff's definition.
    """
    import krippendorff

    if level not in ("nominal", "ordinal", "interval"):
        raise ValueError(f"level must be nominal, ordinal or interval, not {level!r}")
    if isinstance(ratings, np.ndarray):
        if ratings.ndim != 2:
            raise ValueError("ratings must be a (coders, units) array")
        rows = [list(row) for row in ratings.tolist()]
    else:
        rows = [list(row) for row in ratings]
    if not rows:
        return None
    n_units = len(rows[0])
    if any(len(row) != n_units for row in rows):
        raise ValueError("every coder needs one entry per unit (None for missing)")

    if level == "nominal":
        codes = _codes(v for row in rows for v in row if not _is_missing(v))
        data = np.array(
            [[np.nan if _is_missing(v) else codes[v] for v in row] for row in rows], dtype=float
        )
    else:
        numbers: list[list[float]] = []
        for row in rows:
            converted = []
            for v in row:
                if _is_missing(v):
                    converted.append(np.nan)
                elif isinstance(v, int | float | np.integer | np.floating) and not isinstance(
                    v, bool
                ):
                    converted.append(float(v))
                else:
                    raise ValueError(f"{level} ratings must be numbers, got {v!r}")
            numbers.append(converted)
        data = np.array(numbers, dtype=float)

    present = ~np.isnan(data)
    pairable = present.sum(axis=0) >= 2
    # No pairable unit, or a single value among them: the expected disagreement is 0 and
    # the package would raise or return NaN.
    if np.unique(data[:, pairable][present[:, pairable]]).size < 2:
        return None
    alpha = float(krippendorff.alpha(reliability_data=data, level_of_measurement=level))
    return None if math.isnan(alpha) else alpha


@dataclass(frozen=True)
class ReliabilityData:
    """Ratings of one group as ``krippendorff_alpha`` takes them.

    ``ratings[i][j]`` is coder ``coders[i]``'s answer for unit ``units[j]``, None when
    missing; coders and units are in order of first appearance.
    """

    coders: tuple[Worker, ...]
    units: tuple[Item, ...]
    ratings: tuple[tuple[Any, ...], ...]


def reliability_data_by_group(
    records: Iterable[tuple[Hashable, Item, Worker, Any]],
) -> dict[Hashable, ReliabilityData]:
    """Group ``(group, unit, coder, value)`` records into one coders-by-units table per group.

    The group key is the caller's: ``"prediction_verdict"`` for alpha per question,
    ``("prediction_verdict", round_id)`` per question and round, ``("feature_verdict",
    class_name)`` per question and class; a record may be passed under several keys. None
    values are skipped; one coder answering one unit twice in a group is a ``ValueError``.
    """
    cells: dict[Hashable, dict[tuple[Item, Worker], Any]] = defaultdict(dict)
    for group, unit, coder, value in records:
        if _is_missing(value):
            continue
        if (unit, coder) in cells[group]:
            raise ValueError(f"coder {coder!r} rated unit {unit!r} twice in group {group!r}")
        cells[group][(unit, coder)] = value
    grouped: dict[Hashable, ReliabilityData] = {}
    for group, answers in cells.items():
        units = tuple(_codes(unit for unit, _ in answers))
        coders = tuple(_codes(coder for _, coder in answers))
        grouped[group] = ReliabilityData(
            coders=coders,
            units=units,
            ratings=tuple(tuple(answers.get((unit, coder)) for unit in units) for coder in coders),
        )
    return grouped


def alpha_by_group(
    records: Iterable[tuple[Hashable, Item, Worker, Any]],
    level: Level | Callable[[Hashable], Level] = "nominal",
) -> dict[Hashable, float | None]:
    """Krippendorff's alpha per group of ``(group, unit, coder, value)`` records.

    ``level`` is one level for all groups or a function of the group key (for example
    ordinal for ``expected_confidence``, nominal for verdicts). None where undefined.
    """
    level_of = level if callable(level) else (lambda _group: level)
    return {
        group: krippendorff_alpha(data.ratings, level=level_of(group))
        for group, data in reliability_data_by_group(records).items()
    }
