"""Pixel metrics: hand-computed values, empty-mask conventions, F1 == Dice, pooled vs per-image."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays

from sac.evaluation.pixel import PixelCounts, pixel_counts, pixel_scores, scores_from_counts


def test_hand_computed():
    true = np.zeros((4, 4), bool)
    true[:2, :2] = True  # 4 px
    pred = np.zeros((4, 4), bool)
    pred[:2, 1:3] = True  # 4 px, 2 overlap
    c = pixel_counts(true, pred)
    assert c == PixelCounts(tp=2, fp=2, fn=2)
    s = pixel_scores(true, pred)
    assert s["dice"] == pytest.approx(4 / 8)
    assert s["iou"] == pytest.approx(2 / 6)
    assert s["precision"] == pytest.approx(0.5)
    assert s["recall"] == pytest.approx(0.5)
    assert s["f1"] == pytest.approx(0.5)


def test_label_maps_are_binarised():
    true = np.array([[0, 3, 3], [7, 7, 0]])
    pred = np.array([[1, 1, 0], [0, 1, 0]])
    assert pixel_counts(true, pred) == PixelCounts(tp=2, fp=1, fn=2)


@pytest.mark.parametrize(
    "true_any, pred_any, expected",
    [
        (False, False, {"dice": 1.0, "iou": 1.0, "f1": 1.0, "precision": 1.0, "recall": 1.0}),
        (True, False, {"dice": 0.0, "iou": 0.0, "f1": 0.0, "precision": 0.0, "recall": 0.0}),
        (False, True, {"dice": 0.0, "iou": 0.0, "f1": 0.0, "precision": 0.0, "recall": 0.0}),
    ],
)
def test_empty_conventions(true_any, pred_any, expected):
    true = np.zeros((3, 3), bool)
    pred = np.zeros((3, 3), bool)
    true[1, 1] = true_any
    pred[0, 0] = pred_any
    assert pixel_scores(true, pred) == expected


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="shape"):
        pixel_counts(np.zeros((2, 2)), np.zeros((2, 3)))


@settings(max_examples=200, deadline=None)
@given(arrays(bool, (6, 7)), arrays(bool, (6, 7)))
def test_f1_equals_dice_and_matches_definition(true, pred):
    s = pixel_scores(true, pred)
    assert s["f1"] == pytest.approx(s["dice"], abs=1e-12)
    tp = np.sum(true & pred)
    fp = np.sum(~true & pred)
    fn = np.sum(true & ~pred)
    if tp + fp + fn:
        assert s["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
        assert s["iou"] == pytest.approx(tp / (tp + fp + fn))
        # Dice and IoU are monotone transforms of each other: D = 2J / (1 + J)
        assert s["dice"] == pytest.approx(2 * s["iou"] / (1 + s["iou"]))


def test_pooled_differs_from_mean_of_images():
    # a big image scored well and a tiny image scored badly: the mean and the pooled Dice disagree
    t1 = np.ones((10, 10), bool)
    p1 = t1.copy()
    t2 = np.zeros((10, 10), bool)
    t2[0, 0] = True
    p2 = np.zeros((10, 10), bool)
    p2[0, 1] = True
    per_image = [pixel_scores(t1, p1)["dice"], pixel_scores(t2, p2)["dice"]]
    pooled = scores_from_counts(pixel_counts(t1, p1) + pixel_counts(t2, p2))["dice"]
    assert np.mean(per_image) == pytest.approx(0.5)
    assert pooled == pytest.approx(200 / 202)
