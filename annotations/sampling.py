"""Which instances a review round shows to experts (PRODUCT.md, "The loop", step 3).

A strategy is JSON stored on ``ReviewRound.sampling``::

    {"split": "test", "seed": 0, "limit": 500,
     "parts": [{"kind": "confident_errors", "threshold": 0.9, "n": 50},
               {"kind": "confusion_quota", "per_cell": 5},
               {"kind": "control", "n": 20, "name": "control sample"}]}

Parts run in order over the predictions of one model version and their results are joined;
an instance chosen by several parts belongs to the first. The plan's order (``priority``) is
the order tasks are handed out, so when a round is not finished the earlier parts, and the
head of each part, are what got reviewed.

Every part draws only from instances with a prediction by the model version, in ``split``
when one is given. ``ids`` is the exception to the split: instances named one by one were
chosen on purpose (for instance from a similarity search), so they are taken from any split.

The whole plan costs two queries whatever the round's size: the project's labels and one
``values_list`` over the predictions; the selection itself runs in NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from annotations.models import ModelVersion, Prediction, Split

KINDS: tuple[str, ...] = (
    "all_errors",
    "confusion_quota",
    "lowest_confidence",
    "confident_errors",
    "control",
    "ids",
    "stratified",
)
STRATIFY_BY: tuple[str, ...] = ("true", "predicted")
MAX_PARTS = 20
MAX_NAME_LENGTH = 100
# How many offending ids an error message spells out before summarising the rest.
_MAX_IDS_IN_MESSAGE = 20


class SamplingError(ValueError):
    """A strategy that cannot be used. ``field`` is a path into the strategy such as
    ``"sampling.parts[2].n"`` so a form or serializer can show the message where it belongs."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class SampledInstance:
    instance_id: int
    # The key (in SamplingPlan.counts) of the part that chose it first.
    part: str
    # Lower is shown earlier: parts in the order given, within a part in the part's order.
    priority: float


@dataclass(frozen=True)
class SamplingPlan:
    # The union of all parts, de-duplicated (first part wins), ordered by priority.
    items: list[SampledInstance]
    # Per part key: how many instances the part chose, before de-duplication.
    counts: dict[str, int]
    # Per part key: how many of the plan's items it contributed (after ``limit``).
    new_counts: dict[str, int]
    total: int


# --- Validation ---------------------------------------------------------------------------


def _is_int(value: object) -> bool:
    # bool is an int subclass, but ``"n": true`` is a mistake, not the number 1.
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(value: object, field: str) -> int:
    if not _is_int(value) or value < 1:
        raise SamplingError(field, f"must be a positive integer, got {value!r}")
    if value > 2**63 - 1:  # no id or count can be this large (and int64 arrays overflow)
        raise SamplingError(field, f"is too large: {value}")
    return int(value)


def _check_keys(obj: dict, allowed: Sequence[str], path: str) -> None:
    # Unknown keys are refused rather than ignored: a typo such as "per-cell" would otherwise
    # silently fall back to a default and sample something else than the scientist meant.
    for key in obj:
        if key not in allowed:
            raise SamplingError(
                f"{path}.{key}", f"unknown field; allowed fields: {', '.join(allowed)}"
            )


def _require(part: dict, key: str, path: str) -> Any:
    if key not in part:
        raise SamplingError(f"{path}.{key}", f"is required for kind {part['kind']!r}")
    return part[key]


def _validate_confident_errors(part: dict, path: str, labels: Sequence[str]) -> dict:
    threshold = _require(part, "threshold", path)
    if (
        not isinstance(threshold, int | float)
        or isinstance(threshold, bool)
        or not math.isfinite(threshold)
        or not 0 < threshold <= 1
    ):
        raise SamplingError(f"{path}.threshold", f"must be a number in (0, 1], got {threshold!r}")
    n = part.get("n")
    return {
        "threshold": float(threshold),
        "n": None if n is None else _positive_int(n, f"{path}.n"),
    }


def _validate_ids(part: dict, path: str, labels: Sequence[str]) -> dict:
    ids = _require(part, "ids", path)
    if not isinstance(ids, list) or not ids:
        raise SamplingError(f"{path}.ids", "must be a non-empty list of instance ids")
    for i, value in enumerate(ids):
        _positive_int(value, f"{path}.ids[{i}]")
    # A repeated id is harmless; keeping its first position keeps the scientist's order.
    return {"ids": list(dict.fromkeys(int(v) for v in ids))}


def _validate_stratified(part: dict, path: str, labels: Sequence[str]) -> dict:
    per_class = _positive_int(_require(part, "per_class", path), f"{path}.per_class")
    by = part.get("by", "true")
    if by not in STRATIFY_BY:
        raise SamplingError(f"{path}.by", f"must be one of {', '.join(STRATIFY_BY)}; got {by!r}")
    classes = part.get("classes")
    if classes is None:
        classes = list(labels)
    else:
        if not isinstance(classes, list) or not classes:
            raise SamplingError(f"{path}.classes", "must be a non-empty list of class names")
        for i, name in enumerate(classes):
            if name not in labels:
                raise SamplingError(
                    f"{path}.classes[{i}]",
                    f"{name!r} is not a label of this project ({', '.join(labels)})",
                )
        if len(set(classes)) != len(classes):
            raise SamplingError(f"{path}.classes", "lists a class more than once")
    return {"per_class": per_class, "by": by, "classes": list(classes)}


def _numeric(key: str) -> Callable[[dict, str, Sequence[str]], dict]:
    def validate(part: dict, path: str, labels: Sequence[str]) -> dict:
        return {key: _positive_int(_require(part, key, path), f"{path}.{key}")}

    return validate


def _no_fields(part: dict, path: str, labels: Sequence[str]) -> dict:
    return {}


# kind -> (its fields besides "kind" and "name", the validator returning their normal form)
_PART_SPECS: dict[str, tuple[tuple[str, ...], Callable[[dict, str, Sequence[str]], dict]]] = {
    "all_errors": ((), _no_fields),
    "confusion_quota": (("per_cell",), _numeric("per_cell")),
    "lowest_confidence": (("n",), _numeric("n")),
    "confident_errors": (("threshold", "n"), _validate_confident_errors),
    "control": (("n",), _numeric("n")),
    "ids": (("ids",), _validate_ids),
    "stratified": (("per_class", "by", "classes"), _validate_stratified),
}


def validate_strategy(strategy: dict, *, labels: Sequence[str]) -> dict:
    """A normalised copy of ``strategy`` (defaults filled in, every part named), or a
    SamplingError naming the first field at fault. Validating a normalised copy again
    returns it unchanged, so the stored form can be re-checked at any time.

    ``labels`` are the project's class names, which ``stratified`` classes must come from.
    """
    if not isinstance(strategy, dict):
        raise SamplingError("sampling", "must be an object with a list of parts")
    _check_keys(strategy, ("split", "seed", "limit", "parts"), "sampling")

    split = strategy.get("split")
    if split is not None and split not in Split.values:
        raise SamplingError(
            "sampling.split",
            f"must be null (all splits) or one of {', '.join(Split.values)}; got {split!r}",
        )
    seed = strategy.get("seed", 0)
    if not _is_int(seed) or seed < 0:
        raise SamplingError("sampling.seed", f"must be a non-negative integer, got {seed!r}")
    limit = strategy.get("limit")
    if limit is not None:
        limit = _positive_int(limit, "sampling.limit")

    parts = strategy.get("parts")
    if parts is None:
        raise SamplingError("sampling.parts", "is required")
    if not isinstance(parts, list):
        raise SamplingError("sampling.parts", "must be a list of parts")
    if not parts:
        raise SamplingError("sampling.parts", "must contain at least one part")
    if len(parts) > MAX_PARTS:
        raise SamplingError("sampling.parts", f"may contain at most {MAX_PARTS} parts")

    kinds: list[str] = []
    for index, part in enumerate(parts):
        path = f"sampling.parts[{index}]"
        if not isinstance(part, dict):
            raise SamplingError(path, "must be an object with a kind")
        if "kind" not in part:
            raise SamplingError(f"{path}.kind", f"is required; valid kinds: {', '.join(KINDS)}")
        if part["kind"] not in KINDS:
            raise SamplingError(
                f"{path}.kind", f"unknown kind {part['kind']!r}; valid kinds: {', '.join(KINDS)}"
            )
        kinds.append(part["kind"])

    normalised_parts: list[dict] = []
    seen_names: set[str] = set()
    for index, part in enumerate(parts):
        path = f"sampling.parts[{index}]"
        kind = part["kind"]
        fields, validate = _PART_SPECS[kind]
        _check_keys(part, ("kind", "name", *fields), path)
        name = part.get("name")
        if name is None:
            # Suffixing only repeated kinds keeps the common case readable ("control") while
            # two parts of one kind still get distinct keys in the counts.
            name = f"{kind}#{index}" if kinds.count(kind) > 1 else kind
        elif not isinstance(name, str) or not name.strip():
            raise SamplingError(f"{path}.name", "must be a non-empty string")
        elif len(name) > MAX_NAME_LENGTH:
            raise SamplingError(f"{path}.name", f"must be at most {MAX_NAME_LENGTH} characters")
        if name in seen_names:
            raise SamplingError(
                f"{path}.name", f"another part is already named {name!r}; names must be unique"
            )
        seen_names.add(name)
        normalised_parts.append({"kind": kind, "name": name, **validate(part, path, labels)})

    return {"split": split, "seed": int(seed), "limit": limit, "parts": normalised_parts}


# --- Selection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    """The predictions of one model version as parallel arrays, ordered by instance id."""

    ids: np.ndarray  # int64, ascending
    true: np.ndarray  # label codes; -1 for an unlabelled instance
    pred: np.ndarray  # label codes
    conf: np.ndarray  # float64
    in_scope: np.ndarray  # bool: in the strategy's split
    vocabulary: list[str]  # code -> label; the project's labels first, in their order

    @property
    def labelled(self) -> np.ndarray:
        return self.in_scope & (self.true >= 0)

    @property
    def wrong(self) -> np.ndarray:
        # An unlabelled instance has no ground truth to disagree with, so it is never an error.
        return self.labelled & (self.true != self.pred)

    @property
    def correct(self) -> np.ndarray:
        return self.labelled & (self.true == self.pred)


def _load_rows(
    model_version: ModelVersion, labels: Sequence[str], split: str | None, *, all_splits: bool
) -> _Rows:
    qs = Prediction.objects.filter(
        model_version=model_version, instance__project_id=model_version.project_id
    )
    if split is not None and not all_splits:
        qs = qs.filter(instance__split=split)
    raw = list(
        qs.order_by("instance_id").values_list(
            "instance_id", "instance__label", "label", "confidence", "instance__split"
        )
    )
    vocabulary = list(labels)
    codes = {label: i for i, label in enumerate(vocabulary)}
    # Labels outside the project's list should not exist, but if an import let one through
    # it still gets a code (after the project's labels) rather than breaking the round.
    extra = sorted(({r[1] for r in raw} | {r[2] for r in raw}) - set(codes) - {""})
    for label in extra:
        codes[label] = len(vocabulary)
        vocabulary.append(label)
    codes[""] = -1
    n = len(raw)
    in_scope = (
        np.fromiter((r[4] == split for r in raw), dtype=bool, count=n)
        if split is not None
        else np.ones(n, dtype=bool)
    )
    return _Rows(
        ids=np.fromiter((r[0] for r in raw), dtype=np.int64, count=n),
        true=np.fromiter((codes[r[1]] for r in raw), dtype=np.int64, count=n),
        pred=np.fromiter((codes[r[2]] for r in raw), dtype=np.int64, count=n),
        conf=np.fromiter((r[3] for r in raw), dtype=np.float64, count=n),
        in_scope=in_scope,
        vocabulary=vocabulary,
    )


def _quota(
    candidates: np.ndarray, groups: np.ndarray, k: int, rng: np.random.Generator
) -> np.ndarray:
    """Up to ``k`` random candidates from every group, interleaved round-robin: the first pick
    of every group (groups in ascending key order), then the second of every group, and so on.

    Round-robin matters because a round is often not finished: whatever prefix the experts got
    through still covers every group instead of exhausting the first few.
    """
    if candidates.size == 0:
        return candidates
    shuffled = rng.permutation(candidates.size)
    candidates, groups = candidates[shuffled], groups[shuffled]
    by_group = np.argsort(groups, kind="stable")  # stable keeps the random order inside a group
    candidates, groups = candidates[by_group], groups[by_group]
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    sizes = np.diff(np.r_[starts, groups.size])
    rank = np.arange(groups.size) - np.repeat(starts, sizes)
    keep = rank < k
    candidates, groups, rank = candidates[keep], groups[keep], rank[keep]
    return candidates[np.lexsort((groups, rank))]


def _select(part: dict, rows: _Rows, rng: np.random.Generator, path: str) -> np.ndarray:
    """Row indices the part chooses, in the part's own order."""
    kind = part["kind"]
    if kind == "all_errors":
        # Random rather than by id: a round stopped half-way then holds an unbiased sample of
        # the errors, not just those imported first.
        return rng.permutation(np.flatnonzero(rows.wrong))
    if kind == "lowest_confidence":
        candidates = np.flatnonzero(rows.in_scope)
        # Stable sort: ties keep instance-id order, so the result does not depend on the seed.
        return candidates[np.argsort(rows.conf[candidates], kind="stable")][: part["n"]]
    if kind == "confident_errors":
        candidates = np.flatnonzero(rows.wrong & (rows.conf >= part["threshold"]))
        ordered = candidates[np.argsort(-rows.conf[candidates], kind="stable")]
        return ordered if part["n"] is None else ordered[: part["n"]]
    if kind == "control":
        return rng.permutation(np.flatnonzero(rows.correct))[: part["n"]]
    if kind == "confusion_quota":
        candidates = np.flatnonzero(rows.wrong)
        # (true, predicted) in the project's label order, so cells come out in the order a
        # confusion matrix is read.
        cells = rows.true[candidates] * len(rows.vocabulary) + rows.pred[candidates]
        return _quota(candidates, cells, part["per_cell"], rng)
    if kind == "stratified":
        codes = rows.true if part["by"] == "true" else rows.pred
        position = np.full(len(rows.vocabulary) + 1, -1, dtype=np.int64)
        for i, name in enumerate(part["classes"]):
            position[rows.vocabulary.index(name)] = i
        # Index -1 (unlabelled) lands on the trailing -1 entry: never a class.
        group = position[codes]
        candidates = np.flatnonzero(rows.in_scope & (group >= 0))
        return _quota(candidates, group[candidates], part["per_class"], rng)
    if kind == "ids":
        wanted = np.asarray(part["ids"], dtype=np.int64)
        found = np.searchsorted(rows.ids, wanted)
        ok = found < rows.ids.size
        ok[ok] = rows.ids[found[ok]] == wanted[ok]
        if not ok.all():
            missing = [int(v) for v in wanted[~ok]]
            shown = ", ".join(str(v) for v in missing[:_MAX_IDS_IN_MESSAGE])
            more = len(missing) - _MAX_IDS_IN_MESSAGE
            if more > 0:
                shown += f" and {more} more"
            raise SamplingError(
                f"{path}.ids",
                f"not in this project or without a prediction by this model version: {shown}",
            )
        return found
    raise AssertionError(f"unhandled kind {kind!r}")  # validate_strategy rejects unknown kinds


def plan_sample(*, model_version: ModelVersion, strategy: dict) -> SamplingPlan:
    """The instances a round for ``model_version`` would show, validated against its project.

    Deterministic for a given strategy (seed included) and set of predictions. Raises
    SamplingError for an invalid strategy or ids that cannot be reviewed.
    """
    labels = list(model_version.project.labels)
    normal = validate_strategy(strategy, labels=labels)
    split = normal["split"]
    has_ids = any(part["kind"] == "ids" for part in normal["parts"])
    rows = _load_rows(model_version, labels, split, all_splits=has_ids)

    items: list[SampledInstance] = []
    taken: set[int] = set()
    counts: dict[str, int] = {}
    new_counts: dict[str, int] = {}
    for index, part in enumerate(normal["parts"]):
        # One generator per part, seeded by its position: editing a later part never changes
        # what an earlier one drew.
        rng = np.random.default_rng([normal["seed"], index])
        chosen = rows.ids[_select(part, rows, rng, f"sampling.parts[{index}]")].tolist()
        counts[part["name"]] = len(chosen)
        new_counts[part["name"]] = 0
        for instance_id in chosen:
            if instance_id not in taken:
                taken.add(instance_id)
                items.append(SampledInstance(instance_id, part["name"], float(len(items))))

    if normal["limit"] is not None:
        items = items[: normal["limit"]]
    for item in items:
        new_counts[item.part] += 1
    return SamplingPlan(items=items, counts=counts, new_counts=new_counts, total=len(items))
