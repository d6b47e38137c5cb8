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
