"""Shared Interest metrics of expected evidence against a saliency map, on hand-made masks
whose answers are counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from explain_worker import alignment


def box(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"type": "box", "points": [[x0, y0], [x1, y1]]}


def test_box_on_same_grid_marks_the_cells_whose_centres_it_contains():
    mask = alignment.evidence_mask([box(2, 1, 5, 3)], image_size=(10, 10), grid=(10, 10))
    # Centres 2.5, 3.5, 4.5 in x and 1.5, 2.5 in y.
    expected = np.zeros((10, 10), dtype=bool)
    expected[1:3, 2:5] = True
    np.testing.assert_array_equal(mask, expected)


def test_image_coordinates_scale_to_a_coarser_non_square_map():
    # A 100 x 50 image over a 10 x 5 map: one cell is 10 x 10 image pixels.
    mask = alignment.evidence_mask([box(0, 0, 40, 20)], image_size=(100, 50), grid=(10, 5))
    assert mask.shape == (5, 10)
    expected = np.zeros((5, 10), dtype=bool)
    expected[0:2, 0:4] = True
    np.testing.assert_array_equal(mask, expected)


def test_polygon_triangle_and_a_tiny_region_still_counts():
    triangle = {"type": "polygon", "points": [[0, 0], [4, 0], [0, 4]]}
    mask = alignment.evidence_mask([triangle], image_size=(4, 4), grid=(4, 4))
    # Centres with x + y <= 4 (the hypotenuse counts as inside).
    expected = np.array([[1, 1, 1, 1], [1, 1, 1, 0], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(mask, expected)
    tiny = alignment.evidence_mask([box(61, 12, 62, 13)], image_size=(100, 100), grid=(10, 10))
    assert np.argwhere(tiny).tolist() == [[1, 6]]


def test_saliency_mask_keeps_the_top_fraction_by_value_and_never_non_positive_cells():
    values = np.arange(10, dtype=float).reshape(2, 5)  # 0..9
    top = alignment.saliency_mask(values, top_fraction=0.2)
    assert np.argwhere(top.ravel()).ravel().tolist() == [8, 9]
    signed = np.array([[-9.0, -8.0, 1.0, 0.0, 0.0]])
    # By value, not magnitude: strong negative evidence is evidence against the class.
    assert alignment.saliency_mask(signed, top_fraction=0.4).tolist() == [
        [False, False, True, False, False]
    ]
    assert not alignment.saliency_mask(np.zeros((3, 3))).any()


def test_shared_interest_metrics_exact():
    e = np.zeros((4, 4), dtype=bool)
    e[0:2, 0:2] = True  # 4 cells
    s = np.zeros((4, 4), dtype=bool)
    s[1, 0:4] = True  # 4 cells, 2 shared
    iou, gtc, sc = alignment.shared_interest(e, s)
    assert (iou, gtc, sc) == (pytest.approx(2 / 6), 0.5, 0.5)
    assert alignment.shared_interest(e, np.zeros_like(e)) == (0.0, 0.0, 0.0)


def test_evidence_alignment_end_to_end_on_a_map_coarser_than_the_image():
    # 10 x 10 map over a 100 x 100 image; the top 20 % (20 cells) are rows 0-1.
    values = np.zeros((10, 10))
    values[0:2, :] = 1.0
    values[2:, :] = 0.1
    # The expert boxes the top-left 40 x 40 pixels: 16 cells, 8 of them in S.
    result = alignment.evidence_alignment(values, [box(0, 0, 40, 40)], image_size=(100, 100))
    assert result is not None
    assert result.evidence_cells == 16
    assert result.saliency_cells == 20
    assert result.iou == pytest.approx(round(8 / 28, 4))
    assert result.ground_truth_coverage == 0.5
    assert result.saliency_coverage == 0.4
    assert result.as_dict()["grid"] == [10, 10]


def test_no_regions_means_no_alignment_and_bad_input_is_refused():
    assert alignment.evidence_alignment(np.ones((4, 4)), [], image_size=(4, 4)) is None
    with pytest.raises(ValueError, match="2-D"):
        alignment.evidence_alignment(np.ones(4), [box(0, 0, 1, 1)], image_size=(4, 4))
    with pytest.raises(ValueError, match="top_fraction"):
        alignment.saliency_mask(np.ones((2, 2)), top_fraction=0)


# --- shared_interest_scores: the paper's metrics for N masks at once -------------------------
#
# Every case lives on a 4 x 4 grid so they stack into one batch; the answers are counted by
# hand (cells of G, of S, of both, of either) and written as fractions.

METRICS = ("iou", "ground_truth_coverage", "saliency_coverage")


def grid(*cells: tuple[int, int]) -> np.ndarray:
    mask = np.zeros((4, 4), dtype=bool)
    for r, c in cells:
        mask[r, c] = True
    return mask


def block(rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros((4, 4), dtype=bool)
    mask[rows, cols] = True
    return mask


# (name, G, S, (IoU, ground-truth coverage, saliency coverage)).
BOOLEAN_CASES = [
    # G: rows 0-1 x cols 0-1 (4 cells); S: rows 1-2 x cols 1-3 (6 cells); both: (1, 1).
    # Either: 4 + 6 - 1 = 9.
    (
        "partial overlap",
        block(slice(0, 2), slice(0, 2)),
        block(slice(1, 3), slice(1, 4)),
        (1 / 9, 1 / 4, 1 / 6),
    ),
    # S (2 cells of column 0) inside G (columns 0-1, 8 cells).
    (
        "saliency inside ground truth",
        block(slice(0, 4), slice(0, 2)),
        block(slice(1, 3), slice(0, 1)),
        (2 / 8, 2 / 8, 1.0),
    ),
    # G (1 cell) inside S (4 cells).
    (
        "ground truth inside saliency",
        grid((0, 0)),
        block(slice(0, 2), slice(0, 2)),
        (1 / 4, 1.0, 1 / 4),
    ),
    ("disjoint", block(slice(0, 2), slice(0, 2)), block(slice(2, 4), slice(2, 4)), (0.0, 0.0, 0.0)),
    (
        "identical",
        block(slice(1, 3), slice(1, 3)),
        block(slice(1, 3), slice(1, 3)),
        (1.0, 1.0, 1.0),
    ),
    ("both empty", grid(), grid(), (0.0, 0.0, 0.0)),
    ("ground truth empty", grid(), block(slice(0, 2), slice(0, 2)), (0.0, 0.0, 0.0)),
    ("saliency empty", block(slice(0, 2), slice(0, 2)), grid(), (0.0, 0.0, 0.0)),
]

# A signed continuous map: G is cells (0, 0) and (0, 1); s is 2 and -1 there, 1 at (1, 0),
# -4 at (1, 2), 0 elsewhere. S = (s != 0) has 4 cells, 2 of them in G, and G or S has 4:
# IoU = 2/4, ground-truth coverage = 2/2; saliency coverage = (|2| + |-1|) / (2 + 1 + 1 + 4)
# = 3/8 (a signed sum would give (2 - 1) / (2 - 1 + 1 - 4) = -1/2, S's cell count 2/4).
SIGNED_G = grid((0, 0), (0, 1))
SIGNED_S = np.zeros((4, 4))
SIGNED_S[0, 0], SIGNED_S[0, 1], SIGNED_S[1, 0], SIGNED_S[1, 2] = 2.0, -1.0, 1.0, -4.0
SIGNED_EXPECTED = (2 / 4, 1.0, 3 / 8)


def scores_of_one(g: np.ndarray, s: np.ndarray) -> tuple[float, float, float]:
    scores = alignment.shared_interest_scores(g[np.newaxis], s[np.newaxis])
    assert all(scores[k].shape == (1,) for k in METRICS)
    return tuple(float(scores[k][0]) for k in METRICS)


@pytest.mark.filterwarnings("error")  # a 0/0 must not even warn
@pytest.mark.parametrize(
    ("g", "s", "expected"),
    [case[1:] for case in BOOLEAN_CASES],
    ids=[case[0] for case in BOOLEAN_CASES],
)
def test_shared_interest_scores_on_boolean_masks(g, s, expected):
    assert scores_of_one(g, s) == pytest.approx(expected, abs=1e-12)


@pytest.mark.filterwarnings("error")
def test_shared_interest_scores_on_a_continuous_signed_map():
    assert scores_of_one(SIGNED_G, SIGNED_S) == pytest.approx(SIGNED_EXPECTED, abs=1e-12)
    # NaN counts as 0: the answers do not move.
    with_nan = SIGNED_S.copy()
    with_nan[3, 3] = np.nan
    assert scores_of_one(SIGNED_G, with_nan) == pytest.approx(SIGNED_EXPECTED, abs=1e-12)
    # A 0/1 map scores like the boolean region it encodes (partial overlap: 1/9, 1/4, 1/6).
    _, g, s, expected = BOOLEAN_CASES[0]
    assert scores_of_one(g, s.astype(np.float32)) == pytest.approx(expected, abs=1e-7)
    # A map of zeros is an empty S: 0, not NaN.
    assert scores_of_one(SIGNED_G, np.zeros((4, 4))) == (0.0, 0.0, 0.0)
    # Finite values whose sum overflows still give the share of the mass inside G (1 of 2).
    huge = np.zeros((4, 4))
    huge[0, 0] = huge[3, 3] = 1e308
    assert scores_of_one(SIGNED_G, huge) == pytest.approx((1 / 3, 1 / 2, 1 / 2))


@pytest.mark.filterwarnings("error")
def test_shared_interest_scores_on_a_mixed_batch_equal_the_answers_one_by_one():
    g = np.stack([case[1] for case in BOOLEAN_CASES] + [SIGNED_G])
    # The boolean cases as 0/1 numbers, so the signed map can join them in one float array.
    s = np.stack([case[2].astype(float) for case in BOOLEAN_CASES] + [SIGNED_S])
    expected = [case[3] for case in BOOLEAN_CASES] + [SIGNED_EXPECTED]
    scores = alignment.shared_interest_scores(g, s)
    assert sorted(scores) == sorted(METRICS)
    for k in METRICS:
        assert scores[k].dtype == np.float64
        assert scores[k].shape == (len(expected),)
        assert not np.isnan(scores[k]).any()
    for i, answer in enumerate(expected):
        one = scores_of_one(g[i], s[i])
        assert tuple(float(scores[k][i]) for k in METRICS) == one
        assert one == pytest.approx(answer, abs=1e-12)
    # The same batch with a boolean S gives the same numbers.
    booleans = alignment.shared_interest_scores(g, s != 0)
    for k in METRICS:
        np.testing.assert_array_equal(booleans[k][:-1], scores[k][:-1])
    # Boolean S is counted in cells: the signed case's saliency coverage becomes 2/4.
    assert booleans["saliency_coverage"][-1] == 0.5
    # An empty batch is fine.
    empty = alignment.shared_interest_scores(np.zeros((0, 4, 4), bool), np.zeros((0, 4, 4)))
    assert all(empty[k].shape == (0,) for k in METRICS)


def test_shared_interest_scores_refuses_bad_shapes_and_values_naming_the_argument():
    g = np.zeros((2, 4, 4), dtype=bool)
    with pytest.raises(ValueError, match=r"ground_truth_masks must be an \(N, H, W\)"):
        alignment.shared_interest_scores(g[0], g[0])
    with pytest.raises(ValueError, match=r"ground_truth_masks must be an \(N, H, W\)"):
        alignment.shared_interest_scores(g[np.newaxis], g[np.newaxis])
    with pytest.raises(ValueError, match=r"saliency must be an \(N, H, W\)"):
        alignment.shared_interest_scores(g, np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"saliency has shape \(2, 4, 3\)"):
        alignment.shared_interest_scores(g, np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match=r"saliency has shape \(3, 4, 4\)"):
        alignment.shared_interest_scores(g, np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="ground_truth_masks must be boolean"):
        alignment.shared_interest_scores(np.full((2, 4, 4), 0.5), np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="saliency must be finite"):
        alignment.shared_interest_scores(g, np.full((2, 4, 4), np.inf))
    # 0/1 numbers are a boolean mask.
    ones = alignment.shared_interest_scores(np.ones((1, 2, 2), dtype=np.uint8), np.ones((1, 2, 2)))
    assert [float(ones[k][0]) for k in METRICS] == [1.0, 1.0, 1.0]


def test_evidence_alignment_computes_its_numbers_with_shared_interest_scores(monkeypatch):
    calls = []
    real = alignment.shared_interest_scores

    def spy(g, s):
        calls.append((g.copy(), s.copy()))
        return real(g, s)

    monkeypatch.setattr(alignment, "shared_interest_scores", spy)
    values = np.zeros((10, 10))
    values[0:2, :] = 1.0
    result = alignment.evidence_alignment(values, [box(0, 0, 40, 40)], image_size=(100, 100))
    assert result is not None
    assert result.ground_truth_coverage == 0.5
    [(g, s)] = calls
    # The rasterised regions and the thresholded map, as a batch of one.
    assert g.shape == s.shape == (1, 10, 10)
    expected_g = np.zeros((10, 10), dtype=bool)
    expected_g[0:4, 0:4] = True
    np.testing.assert_array_equal(g[0], expected_g)
    np.testing.assert_array_equal(s[0], values > 0)
