"""Instance metrics: hand-drawn cases with hand-computed answers, and a slow loop-based reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sac.evaluation.instance import instance_scores, overlaps


def _strip(spans, width=18):
    """A 2-row label image with ids painted on column spans [(id, c0, c1), ...]."""
    img = np.zeros((2, width), np.int32)
    for i, c0, c1 in spans:
        img[:, c0:c1] = i
    return img


# true: A (4 px) | B, C touching (4 px each) | D (8 px) | E (4 px, missed)
TRUE = _strip([(1, 0, 2), (2, 3, 5), (3, 5, 7), (4, 8, 12), (5, 13, 15)])
# pred: a = A exactly | m merges B+C | D split into d1, d2 | f false positive
PRED = _strip([(10, 0, 2), (20, 3, 7), (30, 8, 10), (31, 10, 12), (40, 16, 18)])


def test_hand_drawn_mix():
    s = instance_scores(TRUE, PRED)
    # AJI: A-a (4/4), B-m (4/8), C-m (4/8, m reused), D-d1 (4/8, tie -> lower id), E unpaired (+4);
    # unused preds d2 (+4), f (+4): C = 16, U = 4 + 8 + 8 + 8 + 4 + 4 + 4 = 40
    assert s.aji == pytest.approx(16 / 40)
    # AJI+: one-to-one A-a, B-m (or C-m), D-d1 (or d2): C = 12, U = 4 + 8 + 8 + (4 + 4) + (4 + 4) = 36
    assert s.aji_plus == pytest.approx(12 / 36)
    # PQ at IoU > 0.5: only A-a matches (the merge/split pairs have IoU exactly 0.5)
    assert (s.n_true, s.n_pred, s.n_matched) == (5, 5, 1)
    assert s.dq == pytest.approx(1 / (1 + 0.5 * 4 + 0.5 * 4))
    assert s.sq == pytest.approx(1.0)
    assert s.pq == pytest.approx(0.2)
    assert s.object_precision == pytest.approx(0.2)
    assert s.object_recall == pytest.approx(0.2)
    assert s.object_f1 == pytest.approx(0.2)


def test_partial_overlap_match_and_sq():
    true = _strip([(1, 0, 4)], width=8)  # 8 px
    pred = _strip([(7, 1, 4)], width=8)  # 6 px inside it: IoU 6/8
    s = instance_scores(true, pred)
    assert s.n_matched == 1
    assert s.sq == pytest.approx(0.75)
    assert s.pq == pytest.approx(0.75)
    assert s.aji == pytest.approx(0.75)
    assert s.aji_plus == pytest.approx(0.75)


def test_merged_nucleus_aji_vs_aji_plus():
    # two true nuclei (4 px each) covered by one prediction (8 px): AJI counts the prediction twice
    true = _strip([(1, 0, 2), (2, 2, 4)], width=6)
    pred = _strip([(1, 0, 4)], width=6)
    s = instance_scores(true, pred)
    assert s.aji == pytest.approx((4 + 4) / (8 + 8))
    assert s.aji_plus == pytest.approx(4 / (8 + 4))
    assert s.n_matched == 0 and s.pq == 0.0


def test_split_nucleus():
    true = _strip([(1, 0, 4)], width=6)  # 8 px
    pred = _strip([(1, 0, 1), (2, 1, 4)], width=6)  # 2 px and 6 px
    s = instance_scores(true, pred)
    # AJI: pairs with the larger piece (IoU 6/8); the smaller piece is unused (+2)
    assert s.aji == pytest.approx(6 / (8 + 2))
    assert s.aji_plus == pytest.approx(6 / (8 + 2))
    assert s.n_matched == 1 and s.dq == pytest.approx(1 / (1 + 0.5))
    assert s.sq == pytest.approx(0.75)


def test_empty_prediction():
    s = instance_scores(TRUE, np.zeros_like(TRUE))
    assert (s.aji, s.aji_plus, s.pq, s.dq, s.sq, s.object_f1) == (0.0,) * 6
    assert (s.n_true, s.n_pred) == (5, 0)


def test_empty_ground_truth():
    s = instance_scores(np.zeros_like(PRED), PRED)
    assert (s.aji, s.aji_plus, s.pq, s.object_precision, s.object_recall) == (0.0,) * 5
    assert (s.n_true, s.n_pred) == (0, 5)


def test_both_empty_is_perfect():
    z = np.zeros((5, 5), np.int32)
    s = instance_scores(z, z)
    assert (s.aji, s.aji_plus, s.pq, s.dq, s.sq, s.object_f1) == (1.0,) * 6


def test_ids_need_not_be_consecutive_and_permutation_invariant():
    perm = {10: 99, 20: 3, 30: 1000, 31: 2, 40: 77}
    relabelled = np.vectorize(lambda v: perm.get(v, 0))(PRED)
    a, b = instance_scores(TRUE, PRED), instance_scores(TRUE, relabelled)
    assert (a.aji_plus, a.pq, a.n_matched) == (b.aji_plus, b.pq, b.n_matched)


def test_huge_sparse_ids():
    true = TRUE.astype(np.int64) * 10**9
    s = instance_scores(true, PRED)
    assert s.aji == pytest.approx(0.4)


# ---------------------------------------------------------------- slow, loop-based reference
def _reference(true, pred):
    tids = [i for i in np.unique(true) if i]
    pids = [j for j in np.unique(pred) if j]
    tm = [true == i for i in tids]
    pm = [pred == j for j in pids]
    inter = np.array([[np.sum(a & b) for b in pm] for a in tm], dtype=float).reshape(len(tm), len(pm))
    union = np.array([[np.sum(a | b) for b in pm] for a in tm], dtype=float).reshape(len(tm), len(pm))
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    if not tids and not pids:
        return dict(aji=1.0, aji_plus={1.0}, pq=1.0, n_matched=0)
    # AJI: argmax IoU per true nucleus (first index on ties), only if it overlaps at all
    c = u = 0.0
    used = set()
    for i in range(len(tids)):
        if len(pids) and iou[i].max() > 0:
            j = int(np.argmax(iou[i]))
            c += inter[i, j]
            u += union[i, j]
            used.add(j)
        else:
            u += tm[i].sum()
    u += sum(pm[j].sum() for j in range(len(pids)) if j not in used)
    aji = c / u
    # AJI+: enumerate every one-to-one matching of overlapping pairs; keep those of maximal total IoU
    best, values = -1.0, set()
    pairs = [(i, j) for i in range(len(tids)) for j in range(len(pids)) if inter[i, j] > 0]
    for r in range(len(pairs) + 1):
        for combo in itertools.combinations(pairs, r):
            if len({i for i, _ in combo}) < r or len({j for _, j in combo}) < r:
                continue
            total = sum(iou[i, j] for i, j in combo)
            cc = sum(inter[i, j] for i, j in combo)
            uu = sum(union[i, j] for i, j in combo)
            uu += sum(tm[i].sum() for i in range(len(tids)) if i not in {a for a, _ in combo})
            uu += sum(pm[j].sum() for j in range(len(pids)) if j not in {b for _, b in combo})
            if total > best + 1e-12:
                best, values = total, {round(cc / uu, 12)}
            elif abs(total - best) <= 1e-12:
                values.add(round(cc / uu, 12))
    tp = int(np.sum(iou > 0.5))
    sq = float(iou[iou > 0.5].mean()) if tp else 0.0
    dq = tp / (tp + 0.5 * (len(pids) - tp) + 0.5 * (len(tids) - tp))
    return dict(aji=aji, aji_plus=values, pq=dq * sq, n_matched=tp)


@st.composite
def label_images(draw, size=10, max_objects=4):
    img = np.zeros((size, size), np.int32)
    for _ in range(draw(st.integers(0, max_objects))):
        r0, c0 = draw(st.integers(0, size - 1)), draw(st.integers(0, size - 1))
        h, w = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        img[r0 : r0 + h, c0 : c0 + w] = draw(st.integers(1, 9))
    return img


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_images(), label_images())
def test_matches_slow_reference(true, pred):
    fast = instance_scores(true, pred)
    ref = _reference(true, pred)
    assert fast.aji == pytest.approx(ref["aji"], abs=1e-12)
    assert round(fast.aji_plus, 12) in ref["aji_plus"]
    assert fast.pq == pytest.approx(ref["pq"], abs=1e-12)
    assert fast.n_matched == ref["n_matched"]


def test_overlap_table_matches_loops():
    rng = np.random.default_rng(0)
    true = rng.integers(0, 30, (40, 40))
    pred = rng.integers(0, 25, (40, 40))
    ov = overlaps(true, pred)
    tids, pids = np.unique(true)[1:], np.unique(pred)[1:]
    for i, j, n in zip(ov.ti, ov.pj, ov.inter, strict=True):
        assert n == np.sum((true == tids[i]) & (pred == pids[j]))
    assert ov.inter.sum() == np.sum((true > 0) & (pred > 0))


@pytest.mark.slow
def test_a_large_image_with_1000_nuclei():
    from scipy import ndimage as ndi

    rng = np.random.default_rng(0)
    # ~1000 nuclei on 1000 x 1000 px: a Voronoi-like tiling of random seeds, then a perturbed copy
    seeds = np.zeros((1000, 1000), np.int32)
    seeds[rng.integers(0, 1000, 1000), rng.integers(0, 1000, 1000)] = np.arange(1, 1001)
    _, (ri, ci) = ndi.distance_transform_edt(seeds == 0, return_indices=True)
    true = seeds[ri, ci]
    pred = np.roll(true, 3, axis=1)
    s = instance_scores(true, pred)
    assert s.n_true > 900 and 0 < s.aji < 1
    assert s.n_pred == s.n_true  # a shift keeps every nucleus (wrapped by np.roll)
