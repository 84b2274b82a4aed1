"""Training-validation scores (sac.evaluation.validation): per-image pixel counts and per-crop AJIs, averaged
crops -> image -> source, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from sac.evaluation.validation import crop_aji, summarise, summarise_aji


def test_summarise_hand_computed():
    counts = {"a/1": np.array([8.0, 2.0, 0.0]), "a/2": np.array([0.0, 0.0, 0.0]), "b/1": np.array([1.0, 1.0, 2.0])}
    s = summarise(counts)
    d_a = (2 * 8 / 18 + 1.0) / 2  # image a/2 has nothing to find and predicts nothing: 1
    d_b = 2 / 5
    assert s["dice"] == pytest.approx((d_a + d_b) / 2)
    assert s["iou"] == pytest.approx(((8 / 10 + 1.0) / 2 + 1 / 4) / 2)
    assert s["f1"] == pytest.approx(2 * 9 / (2 * 9 + 3 + 2))
    assert s["per_source"] == {"a": pytest.approx(d_a), "b": pytest.approx(d_b)}


def test_crop_aji_hand_computed():
    true = np.zeros((3, 4, 6), np.int32)
    pred = np.zeros((3, 4, 6), np.int32)
    valid = np.ones((3, 4, 6), bool)
    # crop 0: two 2x2 nuclei, one prediction covering both and the pixel between them (2 x 5 = 10 px):
    # each nucleus pairs with it at IoU 4/10; C = 4 + 4, U = 10 + 10 -> AJI 0.4
    true[0, 0:2, 0:2], true[0, 0:2, 3:5] = 1, 2
    pred[0, 0:2, 0:5] = 7
    # crop 1: a nucleus in the padding (valid False) is ignored; the other is predicted exactly -> 1.0
    true[1, 0:2, 0:2], true[1, 2:4, 4:6] = 1, 2
    pred[1, 0:2, 0:2] = 1
    valid[1, :, 3:] = False
    # crop 2: nothing to find and nothing predicted -> 1.0
    assert crop_aji(true, pred, valid) == pytest.approx([0.4, 1.0, 1.0])
    # an extra false positive adds its area to U only: C = 8, U = 20 + 3 -> 8 / 23
    pred[0, 3, 0:3] = 8
    assert crop_aji(true[:1], pred[:1], valid[:1]) == pytest.approx([8 / 23])


def test_summarise_aji_weights_sources_equally():
    per_image = {"a/1": [0.4, 1.0], "a/2": [1.0], "b/1": [0.0]}
    # source a: images 0.7 and 1.0 -> 0.85; source b: 0.0; sources weigh the same -> 0.425
    assert summarise_aji(per_image) == pytest.approx(0.425)
