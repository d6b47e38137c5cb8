"""Alignment of an expert's expected evidence with a saliency map: the Shared Interest metrics.

Shared Interest (Boggust et al., CHI 2022) compares a human-annotated region ``E`` (the
paper's ground truth ``G``) with the region ``S`` a saliency method marks as important:

- IoU = |E and S| / |E or S|: how well the two agree overall;
- ground-truth coverage = |E and S| / |E|: how much of what the expert expects the model uses;
- saliency coverage = |E and S| / |S|: how much of what the model uses lies where the expert
  expects evidence (low: the model looks elsewhere, for example at a spurious object).

``shared_interest_scores`` computes the three for a batch of N masks at once, from a boolean
or a continuous saliency (see its docstring); everything else here builds on it. The
per-review alignment the product shows (``evidence_alignment``) makes both masks boolean
first, with the choices below, so the numbers mean the same everywhere:

- **The grid.** Both masks live on the saliency map's grid (its rows and columns), not on the
  image: maps are computed at the model's input size, which is usually coarser than the
  image, and upsampling the map would only invent detail. The map covers the whole image
  (the model resizes the image to a square without cropping), so image x scales by
  ``map_width / image_width`` and y by ``map_height / image_height`` independently.
- **E.** A map cell is in E when its centre lies inside one of the expert's regions (boxes
  and polygons, in image pixel coordinates; the boundary counts as inside). The test is an
  exact even-odd point-in-polygon test with NumPy rather than ``PIL.ImageDraw``, whose scan
  conversion rounds vertices to whole cells: on a coarse map (an imported 7x7 map, say)
  that moves a region by up to half a cell and changes the metrics. A region too small to
  contain any cell centre marks the cell under its own centre, so small evidence counts.
- **S.** The top ``top_fraction`` (default 20 %) of cells by *value*, ties at the threshold
  included; cells with a value of zero or less are never in S. For unsigned maps (Grad-CAM,
  saliency) value and magnitude are the same; for signed maps (Integrated Gradients,
  Occlusion) only evidence *for* the target class counts, because negative attribution is
  evidence against it, which is not what an expert marks as expected evidence.
- **Empty masks.** No regions gives no alignment (``None``); a map without positive
  evidence gives an empty S and all three metrics 0.

This module must stay free of Django: arrays and plain data in, plain data out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

DEFAULT_TOP_FRACTION = 0.2


@dataclass(frozen=True)
class Alignment:
    """The three Shared Interest metrics and the sizes they were computed from."""

    iou: float
    ground_truth_coverage: float
    saliency_coverage: float
    top_fraction: float
    evidence_cells: int
    saliency_cells: int
    # (width, height) of the saliency map's grid the masks were compared on.
    grid: tuple[int, int]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["grid"] = list(self.grid)
        return data


def evidence_mask(
    regions: Sequence[dict[str, Any]], *, image_size: tuple[int, int], grid: tuple[int, int]
) -> np.ndarray:
    """Boolean ``(grid_height, grid_width)`` mask of the cells whose centre lies inside a region
    (boundary included); a region that contains no cell centre marks the cell under its own
    centre.

    ``regions`` are ``{"type": "box" | "polygon", "points": [[x, y], ...]}`` in image pixel
    coordinates of an image of ``image_size`` (width, height); other types are ignored.
    """
    width, height = image_size
    grid_w, grid_h = grid
    if width <= 0 or height <= 0 or grid_w <= 0 or grid_h <= 0:
        raise ValueError(f"sizes must be positive, got image {image_size} and grid {grid}")
    sx, sy = grid_w / width, grid_h / height
    # Cell centres in image pixels: the test runs in the regions' own coordinates, so no
    # vertex is rounded.
    px, py = np.meshgrid((np.arange(grid_w) + 0.5) / sx, (np.arange(grid_h) + 0.5) / sy)
    mask = np.zeros((grid_h, grid_w), dtype=bool)
    for region in regions:
        vertices = _vertices(region)
        if vertices is None:
            continue
        inside = _in_polygon(px, py, vertices)
        if not inside.any():
            cx = sum(x for x, _ in vertices) / len(vertices)
            cy = sum(y for _, y in vertices) / len(vertices)
            inside[min(grid_h - 1, int(cy * sy)), min(grid_w - 1, int(cx * sx))] = True
        mask |= inside
    return mask


def _vertices(region: dict[str, Any]) -> list[tuple[float, float]] | None:
    points = region.get("points") or []
    kind = region.get("type")
    if kind == "box" and len(points) == 2:
        (x0, y0), (x1, y1) = points
        return [
            (float(x0), float(y0)),
            (float(x1), float(y0)),
            (float(x1), float(y1)),
            (float(x0), float(y1)),
        ]
    if kind == "polygon" and len(points) >= 3:
        return [(float(x), float(y)) for x, y in points]
    return None


def _in_polygon(px: np.ndarray, py: np.ndarray, vertices: list[tuple[float, float]]) -> np.ndarray:
    crossings = np.zeros(px.shape, dtype=bool)
    on_edge = np.zeros(px.shape, dtype=bool)
    n = len(vertices)
    for i in range(n):
        x0, y0 = vertices[i]
        x1, y1 = vertices[(i + 1) % n]
        if y0 != y1:
            spans = (py >= min(y0, y1)) & (py < max(y0, y1))
            x_at = x0 + (py - y0) * (x1 - x0) / (y1 - y0)
            crossings ^= spans & (px < x_at)
        # Points on an edge count as inside, like the boundary of a box.
        cross = (x1 - x0) * (py - y0) - (y1 - y0) * (px - x0)
        within = (
            (px >= min(x0, x1)) & (px <= max(x0, x1)) & (py >= min(y0, y1)) & (py <= max(y0, y1))
        )
        on_edge |= within & np.isclose(cross, 0.0)
    return crossings | on_edge


def saliency_mask(
    attribution: np.ndarray, *, top_fraction: float = DEFAULT_TOP_FRACTION
) -> np.ndarray:
    """Boolean mask of the top ``top_fraction`` of cells by value (ties included, values <= 0
    never)."""
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    values = np.nan_to_num(np.asarray(attribution, dtype=np.float64), nan=0.0)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"expected a non-empty 2-D map, got shape {values.shape}")
    k = max(1, math.ceil(top_fraction * values.size))
    threshold = np.partition(values.ravel(), values.size - k)[values.size - k]
    return (values >= threshold) & (values > 0.0)


def shared_interest_scores(
    ground_truth_masks: np.ndarray, saliency: np.ndarray
) -> dict[str, np.ndarray]:
    """The Shared Interest metrics of N pairs at once: ``{"iou", "ground_truth_coverage",
    "saliency_coverage"}``, each a float64 array of length N.

    ``ground_truth_masks`` (G) is an ``(N, H, W)`` boolean array (0/1 numbers are accepted);
    ``saliency`` has the same shape and is either boolean (the region S) or continuous
    (a map s, NaN read as 0, signed allowed). For a boolean S, with |.| counting cells:

    - IoU = |G and S| / |G or S|, ground-truth coverage = |G and S| / |G|,
      saliency coverage = |G and S| / |S|.

    For a continuous s, S = (s != 0) for IoU and ground-truth coverage, and saliency
    coverage = sum(G * |s|) / sum(|s|): the share of the map's attribution mass, of either
    sign, that lies inside G. A 0/1 map therefore scores exactly like the boolean one.

    A ratio whose denominator is empty (no cell in G, in S, or in either; a map of zeros)
    is 0, never NaN. Raises ValueError on a shape that is not ``(N, H, W)``, on shapes that
    differ, on ground truth that is not boolean, and on an infinite saliency value.
    """
    g = np.asarray(ground_truth_masks)
    s = np.asarray(saliency)
    if g.ndim != 3:
        raise ValueError(f"ground_truth_masks must be an (N, H, W) array, got shape {g.shape}")
    if s.ndim != 3:
        raise ValueError(f"saliency must be an (N, H, W) array, got shape {s.shape}")
    if s.shape != g.shape:
        raise ValueError(
            f"saliency has shape {s.shape}, ground_truth_masks has shape {g.shape}: "
            "they must be equal"
        )
    if g.dtype != np.bool_:
        if not np.isin(g, (0, 1)).all():
            raise ValueError("ground_truth_masks must be boolean (or only 0 and 1)")
        g = g.astype(bool)
    axes = (1, 2)
    if s.dtype == np.bool_:
        s_mask = s
        s_weight = None
    else:
        values = np.nan_to_num(s.astype(np.float64), nan=0.0, posinf=np.inf, neginf=-np.inf)
        if np.isinf(values).any():
            raise ValueError("saliency must be finite (NaN counts as 0)")
        s_mask = values != 0.0
        s_weight = np.abs(values)
    both = np.count_nonzero(g & s_mask, axis=axes).astype(np.float64)
    either = np.count_nonzero(g | s_mask, axis=axes).astype(np.float64)
    g_cells = np.count_nonzero(g, axis=axes).astype(np.float64)
    if s_weight is None:
        inside, total = both, np.count_nonzero(s_mask, axis=axes).astype(np.float64)
    else:
        with np.errstate(over="ignore"):  # handled just below
            total = s_weight.sum(axis=axes)
        if not np.isfinite(total).all():
            # Finite values whose sum overflows: the ratio does not change when each map is
            # divided by its own largest magnitude first.
            peak = s_weight.max(axis=axes, keepdims=True, initial=0.0)
            s_weight = s_weight / np.where(peak > 0.0, peak, 1.0)
            total = s_weight.sum(axis=axes)
        inside = np.where(g, s_weight, 0.0).sum(axis=axes)
    return {
        "iou": _ratio(both, either),
        "ground_truth_coverage": _ratio(both, g_cells),
        "saliency_coverage": _ratio(inside, total),
    }


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator element by element, 0 where the denominator is 0."""
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def shared_interest(evidence: np.ndarray, saliency: np.ndarray) -> tuple[float, float, float]:
    """(IoU, ground-truth coverage, saliency coverage) of two boolean 2-D masks of one shape:
    ``shared_interest_scores`` for one pair.

    An empty E or S gives 0 for the metrics that divide by it.
    """
    evidence, saliency = np.asarray(evidence), np.asarray(saliency)
    if evidence.shape != saliency.shape:
        raise ValueError(f"mask shapes differ: {evidence.shape} vs {saliency.shape}")
    if evidence.ndim != 2:
        raise ValueError(f"expected 2-D masks, got shape {evidence.shape}")
    scores = shared_interest_scores(evidence[np.newaxis], saliency.astype(bool)[np.newaxis])
    return (
        float(scores["iou"][0]),
        float(scores["ground_truth_coverage"][0]),
        float(scores["saliency_coverage"][0]),
    )


def evidence_alignment(
    attribution: np.ndarray,
    regions: Sequence[dict[str, Any]],
    *,
    image_size: tuple[int, int],
    top_fraction: float = DEFAULT_TOP_FRACTION,
) -> Alignment | None:
    """The Shared Interest metrics of ``regions`` (image pixels of an image of ``image_size``,
    width and height) against ``attribution`` (a 2-D map covering the whole image).

    None when there are no regions: an expert who drew nothing has no alignment to measure.
    """
    values = np.asarray(attribution)
    if values.ndim != 2 or values.size == 0:
        raise ValueError(f"expected a non-empty 2-D map, got shape {values.shape}")
    if not [r for r in regions if r.get("type") in ("box", "polygon")]:
        return None
    grid = (values.shape[1], values.shape[0])
    e_mask = evidence_mask(regions, image_size=image_size, grid=grid)
    s_mask = saliency_mask(values, top_fraction=top_fraction)
    scores = shared_interest_scores(e_mask[np.newaxis], s_mask[np.newaxis])
    return Alignment(
        iou=round(float(scores["iou"][0]), 4),
        ground_truth_coverage=round(float(scores["ground_truth_coverage"][0]), 4),
        saliency_coverage=round(float(scores["saliency_coverage"][0]), 4),
        top_fraction=top_fraction,
        evidence_cells=int(np.count_nonzero(e_mask)),
        saliency_cells=int(np.count_nonzero(s_mask)),
        grid=grid,
    )
