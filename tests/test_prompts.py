"""Prompt selection (paper eq. 5) on hand-drawn probability maps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sac.models.config import PromptConfig
from sac.models.prompts import merge_expert_points, pad_points, select_batch, select_points


def _disk(shape, cy, cx, r):
    rr, cc = np.indices(shape)
    return (rr - cy) ** 2 + (cc - cx) ** 2 <= r**2


def _split(coords, labels):
    return coords[labels == 1], coords[labels == 0]


def test_two_disks_give_points_at_their_centres():
    prob = np.zeros((64, 64), np.float32)
    prob[_disk(prob.shape, 16, 20, 6)] = 0.9  # (x=20, y=16)
    prob[_disk(prob.shape, 45, 40, 9)] = 0.8  # (x=40, y=45), larger -> listed first
    pos, neg = _split(*select_points(prob, PromptConfig(n_points=5)))
    assert len(pos) == 2
    np.testing.assert_allclose(pos[0], [40, 45], atol=1.0)
    np.testing.assert_allclose(pos[1], [20, 16], atol=1.0)
    # One background region -> one negative point, inside the background (not in a disk).
    assert len(neg) == 1
    x, y = np.rint(neg[0]).astype(int)
    assert prob[y, x] <= 0.5


def test_n_points_keeps_the_largest_regions():
    prob = np.zeros((64, 64), np.float32)
    for i, r in enumerate([3, 5, 4]):
        prob[_disk(prob.shape, 12 + 20 * i, 32, r)] = 1.0
    pos, _ = _split(*select_points(prob, PromptConfig(n_points=2)))
    np.testing.assert_allclose(pos, [[32, 32], [32, 52]], atol=1.0)  # radii 5 then 4


def test_ring_point_lies_on_the_ring():
    prob = np.zeros((64, 64), np.float32)
    ring = _disk(prob.shape, 32, 32, 14) & ~_disk(prob.shape, 32, 32, 9)
    prob[ring] = 1.0
    pos, _ = _split(*select_points(prob, PromptConfig(n_points=3)))
    assert len(pos) == 1
    x, y = pos[0]
    assert float(x).is_integer() and float(y).is_integer()
    assert ring[int(y), int(x)]  # the centroid (32, 32) is in the hole; the point was moved onto the ring
    # ... and well inside it, not on its edge (max of the distance transform)
    assert 10.5 <= np.hypot(x - 32, y - 32) <= 13.5


def test_empty_map_has_no_positives_and_full_map_no_negatives():
    for select in ("centroid", "random"):
        cfg = PromptConfig(n_points=4, select=select)
        coords, labels = select_points(np.zeros((32, 32)), cfg)
        assert (labels == 1).sum() == 0 and (labels == 0).sum() >= 1
        coords, labels = select_points(np.ones((32, 32)), cfg)
        assert (labels == 0).sum() == 0 and (labels == 1).sum() >= 1
        assert coords.dtype == np.float32 and labels.dtype == np.int64


def test_min_area_drops_specks():
    prob = np.zeros((32, 32), np.float32)
    prob[5, 5] = 1.0  # a 1-pixel speck
    prob[_disk(prob.shape, 20, 20, 4)] = 1.0
    pos, _ = _split(*select_points(prob, PromptConfig(min_area=4)))
    np.testing.assert_allclose(pos, [[20, 20]], atol=1.0)


def test_random_selection_thresholds_and_seeds():
    rng = np.random.default_rng(123)
    prob = rng.random((64, 64)).astype(np.float32)
    cfg = PromptConfig(select="random", n_points=20, tau=0.7)
    c1, l1 = select_points(prob, cfg, np.random.default_rng(5))
    c2, l2 = select_points(prob, cfg, np.random.default_rng(5))
    c3, _ = select_points(prob, cfg, np.random.default_rng(6))
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(l1, l2)
    assert not np.array_equal(c1, c3)
    vals = prob[c1[:, 1].astype(int), c1[:, 0].astype(int)]
    assert (l1 == 1).sum() == 20 and (l1 == 0).sum() == 20
    assert (vals[l1 == 1] > 0.7).all() and (vals[l1 == 0] < 0.3).all()
    assert len(np.unique(c1[l1 == 1], axis=0)) == 20  # without replacement


def test_random_selection_with_few_candidates_returns_fewer():
    prob = np.zeros((16, 16), np.float32)
    prob[3, 4] = prob[10, 11] = 1.0
    coords, labels = select_points(prob, PromptConfig(select="random", n_points=5), np.random.default_rng(0))
    pos = coords[labels == 1]
    assert sorted(map(tuple, pos.tolist())) == [(4.0, 3.0), (11.0, 10.0)]


def test_expert_points_merge_and_batch_padding():
    prob = np.zeros((2, 32, 32), np.float32)
    prob[0][_disk((32, 32), 10, 10, 4)] = 1.0
    expert_c = np.array([[[5, 6], [0, 0]], [[7, 8], [9, 9]]], np.float32)
    expert_l = np.array([[1, -1], [0, 1]])
    coords, labels = select_batch(prob, PromptConfig(n_points=3), expert_c, expert_l)
    assert coords.shape == (2, labels.shape[1], 2) and labels.dtype == np.int64
    # image 0: expert (5,6)+ , disk centre +, background -; the expert padding row is dropped
    assert labels[0].tolist() == [1, 1, 0]
    np.testing.assert_allclose(coords[0, 0], [5, 6])
    np.testing.assert_allclose(coords[0, 1], [10, 10], atol=1.0)
    # image 1: experts (7,8)- and (9,9)+, no disk -> one negative from the map
    assert labels[1].tolist() == [0, 1, 0]
    # prompts disabled: only the experts remain
    coords, labels = select_batch(prob, PromptConfig(enabled=False), expert_c, expert_l)
    assert labels.tolist() == [[1, -1], [0, 1]]


def test_no_points_at_all_gives_one_padding_point():
    coords, labels = select_batch(None, PromptConfig(), batch_size=3)
    assert coords.shape == (3, 1, 2) and (labels == -1).all()
    c, lab = pad_points([(np.zeros((0, 2), np.float32), np.zeros(0, np.int64))])
    assert c.shape == (1, 1, 2) and lab.tolist() == [[-1]]


def test_merge_rejects_mismatched_or_missing_expert_labels():
    with pytest.raises(ValueError, match="coordinates"):
        merge_expert_points(np.zeros((0, 2)), np.zeros(0), np.zeros((2, 2)), np.zeros(3))
    with pytest.raises(ValueError, match="need labels"):
        merge_expert_points(np.zeros((0, 2)), np.zeros(0), np.zeros((2, 2)), None)
    with pytest.raises(ValueError, match="need labels"):
        select_batch(None, PromptConfig(), np.zeros((1, 2, 2)), None)


def test_centroid_selection_of_256_points_on_touching_blobs_and_rings():
    rng = np.random.default_rng(0)
    prob = np.zeros((256, 256), np.float32)
    # ~400 blobs (many touching), some rings, so the distance-transform fallback also runs.
    for _ in range(400):
        prob[_disk(prob.shape, *rng.integers(0, 256, 2), rng.integers(2, 7))] = 1.0
    prob[_disk(prob.shape, 128, 128, 12) & ~_disk(prob.shape, 128, 128, 8)] = 1.0
    cfg = PromptConfig(n_points=256)
    coords, labels = select_points(prob, cfg)
    assert (labels == 1).sum() > 100
    xi, yi = np.rint(coords[:, 0]).astype(int), np.rint(coords[:, 1]).astype(int)
    assert (prob[yi[labels == 1], xi[labels == 1]] == 1.0).all()  # every positive point in foreground
    assert (prob[yi[labels == 0], xi[labels == 0]] == 0.0).all()


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    density=st.floats(0.0, 1.0),
    n=st.integers(1, 20),
    select=st.sampled_from(["centroid", "random"]),
)
def test_points_always_lie_in_their_class_region(seed, density, n, select):
    rng = np.random.default_rng(seed)
    # blobby random map: smoothed noise thresholded at a random density
    from scipy import ndimage

    noise = ndimage.gaussian_filter(rng.random((40, 48)), 2)
    prob = (noise <= np.quantile(noise, density)).astype(np.float32)
    cfg = PromptConfig(n_points=n, select=select, min_area=1)
    coords, labels = select_points(prob, cfg, np.random.default_rng(seed))
    again = select_points(prob, cfg, np.random.default_rng(seed))
    np.testing.assert_array_equal(coords, again[0])
    assert (labels == 1).sum() <= n and (labels == 0).sum() <= n
    assert ((coords >= 0) & (coords <= [47, 39])).all()
    xi, yi = np.rint(coords[:, 0]).astype(int), np.rint(coords[:, 1]).astype(int)
    assert (prob[yi, xi][labels == 1] == 1).all()
    assert (prob[yi, xi][labels == 0] == 0).all()
