"""The interactive editor with the bundled default model on a real MoNuSeg crop and its ground truth (slow, data):
clicks, boxes, refine, undo, the simulated annotator, expert points end to end."""

from __future__ import annotations

import numpy as np
import pytest

from sac.inference.config import InferenceConfig
from sac.inference.editor import Editor

MONUSEG_VAL = "TCGA-21-5784-01Z-00-DX1"

# The bundled default on a 320 x 320 crop of a MoNuSeg validation image (never trained on) with its ground truth.
# The automatic run is shared by the tests of this module; each test undoes its own edits.


@pytest.fixture(scope="module")
def monuseg(data_root):
    from sac.data.io import read_image, read_labels
    from sac.inference.api import load_model

    root = data_root / "monuseg" / "train"
    image = read_image(root / "images" / f"{MONUSEG_VAL}.png")[340:660, 340:660]
    true = read_labels(root / "labels" / f"{MONUSEG_VAL}.png")[340:660, 340:660]
    model = load_model("default")
    return model, Editor(model, image, InferenceConfig(scale=1.0)), true


def _undo_all(ed):
    while ed.undo().changed:
        pass


def _inner_nuclei(true, k=16):
    """Up to ``k`` ground-truth ids of >= 40 px that do not touch the crop border (their whole nucleus is there)."""
    from scipy import ndimage as ndi

    ids = []
    for i, sl in enumerate(ndi.find_objects(true), start=1):
        if sl is None or sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == true.shape[0] \
                or sl[1].stop == true.shape[1] or (true[sl] == i).sum() < 40:
            continue
        ids.append(i)
    return ids[:: max(1, len(ids) // k)][:k]


def _iou(a, b):
    return float((a & b).sum() / max((a | b).sum(), 1))


def _needs_head(model):
    if getattr(model.module, "object_decoder", None) is None:
        pytest.skip("the bundled default has no interactive head (SAC.object_decoder) yet: issue 11 part 1")


@pytest.mark.slow
@pytest.mark.data
def test_positive_click_segments_the_clicked_nucleus(monuseg):
    from sac.evaluation.clicks import interior_point

    model, ed, true = monuseg
    _needs_head(model)
    ious = []
    try:
        for i in _inner_nuclei(true):
            x, y = interior_point(true == i)
            e = ed.add(x, y)
            ious.append(_iou(ed.labels == e.ids[0], true == i) if e.changed else 0.0)
    finally:
        _undo_all(ed)
    assert len(ious) >= 10
    # Regression guard below the level the bundled model reaches here (0.659 on this crop with the click refiner,
    # 0.642 without); issue 11's goal, >= 0.80 over whole validation sets, is not reached (0.697 MoNuSeg / 0.780 DSB,
    # docs/results.md).
    assert np.mean(ious) >= 0.6


@pytest.mark.slow
@pytest.mark.data
def test_refine_click_moves_the_mask_towards_the_click(monuseg):
    from sac.evaluation.clicks import correction_click, interior_point

    model, ed, true = monuseg
    _needs_head(model)
    moved, before, after = [], [], []
    try:
        for i in _inner_nuclei(true):
            e = ed.add(*interior_point(true == i))
            if not e.changed:
                continue
            j = e.ids[0]
            mask = ed.labels == j
            click = correction_click(mask, true == i)
            if click is None:
                continue
            x, y, label = click
            ed.refine(j, [[x, y, label]])
            new = ed.labels == j
            before.append(_iou(mask, true == i))
            after.append(_iou(new, true == i))
            moved.append(bool(new[y, x]) if label == 1 else not new[y, x])
    finally:
        _undo_all(ed)
    assert len(moved) >= 8
    assert np.mean(moved) >= 0.7  # the clicked pixel lands on the side it was clicked for
    assert np.mean(after) > np.mean(before)


@pytest.mark.slow
@pytest.mark.data
def test_clicks_go_through_the_click_refiner(monuseg):
    """The bundled model's click refiner (``SAC.refiner``) shapes what ``add`` places: without it (the head's mask
    alone) the masks differ, and with it they are not worse on this crop (measured: 16 of 16 masks differ, mean IoU
    0.659 with the refiner, 0.642 without)."""
    from sac.evaluation.clicks import interior_point

    model, ed, true = monuseg
    _needs_head(model)
    net = ed.engine.model.refiner
    assert net is not None and ed.engine.has_refiner
    masks: dict = {}
    try:
        for use in (True, False):
            ed.engine.model.refiner = net if use else None
            for i in _inner_nuclei(true):
                e = ed.add(*interior_point(true == i))
                masks[use, i] = (ed.labels == e.ids[0]) if e.changed else np.zeros(true.shape, bool)
                if e.changed:
                    ed.undo()
    finally:
        ed.engine.model.refiner = net
        _undo_all(ed)
    ids = _inner_nuclei(true)
    assert sum(not np.array_equal(masks[True, i], masks[False, i]) for i in ids) >= len(ids) // 4
    with_refiner = np.mean([_iou(masks[True, i], true == i) for i in ids])
    head_alone = np.mean([_iou(masks[False, i], true == i) for i in ids])
    assert with_refiner >= head_alone - 0.01, (with_refiner, head_alone)


@pytest.mark.slow
@pytest.mark.data
def test_negative_click_removes_the_instance_and_undo_restores_it(monuseg):
    _, ed, _ = monuseg
    start = ed.labels.copy()
    ids, areas = np.unique(start[start > 0], return_counts=True)
    i = int(ids[np.argmax(areas)])
    ys, xs = np.nonzero(start == i)
    k = len(ys) // 2
    e = ed.remove(int(xs[k]), int(ys[k]))
    try:
        assert e.changed and e.ids == [i] and e.n_nuclei == len(ids) - 1
        assert not (ed.labels == i).any()
        np.testing.assert_array_equal(ed.labels[start != i], start[start != i])
    finally:
        assert ed.undo().changed
    np.testing.assert_array_equal(ed.labels, start)


@pytest.mark.slow
@pytest.mark.data
def test_simulated_annotator_raises_aji(monuseg):
    from sac.evaluation.corrections import annotate
    from sac.evaluation.instance import instance_scores

    _, ed, true = monuseg
    aji = {}
    try:
        annotate(ed, true, 10, lambda k, c: aji.setdefault(k, instance_scores(true, ed.labels).aji))
    finally:
        _undo_all(ed)
    clicks = sorted(aji)
    assert clicks[0] == 0 and clicks[-1] >= 10
    assert aji[clicks[-1]] >= aji[0] + 0.02


@pytest.mark.slow
@pytest.mark.data
def test_sac_segment_negative_expert_point_removes_that_nucleus(data_root, tmp_path):
    import imageio.v3 as iio
    import tifffile

    from sac.cli import main
    from sac.data.io import read_image

    image = read_image(data_root / "monuseg" / "train" / "images" / f"{MONUSEG_VAL}.png")[100:356, 500:756]
    path = tmp_path / "crop.png"
    iio.imwrite(path, image)
    assert main(["segment", str(path), "--out", str(tmp_path / "a"), "--scale", "1"]) == 0
    plain = tifffile.imread(tmp_path / "a" / "crop_labels.tif")
    ids, areas = np.unique(plain[plain > 0], return_counts=True)
    i = int(ids[np.argmax(areas)])
    ys, xs = np.nonzero(plain == i)
    x, y = int(xs[len(xs) // 2]), int(ys[len(ys) // 2])
    assert main(["segment", str(path), "--out", str(tmp_path / "b"), "--scale", "1",
                 "--expert-points", f"{x},{y},0"]) == 0
    edited = tifffile.imread(tmp_path / "b" / "crop_labels.tif")
    assert edited[y, x] == 0 and int(edited.max()) == int(plain.max()) - 1
    np.testing.assert_array_equal(edited[plain != i] > 0, plain[plain != i] > 0)


@pytest.mark.slow
@pytest.mark.data
def test_box_segments_the_boxed_nucleus(monuseg):
    """A box prompts with a positive click at its centre, as the head was trained, and its nucleus stays in the
    box (0.816 mean IoU on this crop when measured; on the validation sets 0.798 / 0.847 on MoNuSeg / DSB, the box
    alone 0.736 / 0.796: docs/results.md)."""
    from sac.evaluation.clicks import box_of

    model, ed, true = monuseg
    _needs_head(model)
    ious = []
    try:
        for i in _inner_nuclei(true):
            e = ed.box(*box_of(true == i))
            ious.append(_iou(ed.labels == e.ids[0], true == i) if e.changed else 0.0)
    finally:
        _undo_all(ed)
    assert len(ious) >= 10
    assert np.mean(ious) >= 0.75
