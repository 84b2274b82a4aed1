"""The simulated annotator of the correction benchmark (sac.evaluation.corrections), with the exact editor."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from sac.evaluation.corrections import PerfectEditor, annotate, next_correction
from sac.evaluation.instance import instance_scores


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_a_nucleus_cut_in_two_asks_for_a_merge_of_its_pieces():
    true = np.zeros((60, 80), np.int32)
    true[_disk(true.shape, 30, 20, 12)] = 1
    true[_disk(true.shape, 30, 60, 6)] = 2
    pred = true.copy()
    pred[(true == 1) & (np.arange(80)[None, :] >= 20)] = 3  # nucleus 1 as two halves, 1 and 3
    c = next_correction(pred, true)
    assert c.kind == "merge" and sorted(c.truth.tolist()) == [1, 3] and c.clicks == 2
    assert all(pred[y, x] in (1, 3) for x, y in c.points)  # one click on each piece
    ed = PerfectEditor(pred, true)
    annotate(ed, true, 5)
    assert instance_scores(true, ed.labels).aji == pytest.approx(1.0)


@pytest.mark.data
def test_perfect_editor_fixes_every_kind_of_error_on_real_nuclei(data_root):
    from sac.data.io import read_labels

    true = read_labels(data_root / "monuseg/train/labels/TCGA-21-5784-01Z-00-DX1.png")[:300, :300].astype(np.int64)
    ids = [i for i in np.unique(true) if i and 80 <= (true == i).sum()][:9]
    pred = true.copy()
    for i in ids[:3]:  # missed
        pred[true == i] = 0
    pred[true == ids[4]] = ids[3]  # two nuclei in one instance (x2): splits
    pred[true == ids[6]] = ids[5]
    ys, xs = np.nonzero(true == ids[7])  # a nucleus in two pieces: a merge
    pred[ys[xs > np.median(xs)], xs[xs > np.median(xs)]] = true.max() + 1
    far = np.argwhere(ndi.distance_transform_edt(true == 0) > 5)  # background 5 px from every nucleus
    y, x = far[len(far) // 2]
    pred[y - 2 : y + 3, x - 2 : x + 3] = true.max() + 2  # a false detection
    start = instance_scores(true, pred).aji
    assert start < 0.95
    ed = PerfectEditor(pred, true)
    seen = []
    spent = annotate(ed, true, 50, lambda k, c: seen.append((k, None if c is None else c.kind,
                                                              instance_scores(true, ed.labels).aji)))
    kinds = sorted(k for _, k, _ in seen if k)
    assert kinds == ["add"] * 3 + ["merge", "remove", "split", "split"]
    assert spent == 3 + 2 + 1 + 2 * 2
    ajis = [a for _, _, a in seen]
    assert all(b > a for a, b in zip(ajis, ajis[1:], strict=False))  # every correction helps
    assert ajis[-1] == pytest.approx(1.0)
