"""The interactive editor (sac.inference.editor): geometry of clicks and windows, every edit, exact undo/redo,
bad input, expert points through the editor, with a test double of the decoder (the bundled model on real data:
test_editor_real.py)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from sac.errors import SACError
from sac.inference.config import InferenceConfig
from sac.inference.editor import Editor
from sac.inference.experts import apply_points


class DiscEngine:
    """Test double of the interactive decoder only (encoder and automatic run stay real): a disc of ``radius``
    model pixels around the mean positive point, or the box centre. Its output is known exactly, so the tests can
    check the editor's coordinate mapping, window choice and label bookkeeping to the pixel."""

    has_refiner = False  # the disc is the mask: no click refiner on top (tests/test_refiner.py, test_editor_real.py)

    def __init__(self, inner, radius: float = 10.0):
        self.inner, self.radius, self.calls = inner, radius, []

    def decode_object(self, emb, coords, labels, boxes=None, mask_input=None):
        self.calls.append({"emb": tuple(emb.shape), "coords": None if coords is None else coords.clone(),
                           "labels": None if labels is None else labels.clone(),
                           "mask_input": None if mask_input is None else tuple(mask_input.shape),
                           "boxes": None if boxes is None else boxes.clone()})
        if coords is not None:
            c = coords[0][labels[0] == 1].mean(0)
        else:
            b = boxes[0]
            c = torch.stack([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2])
        s = 128
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        inside = (xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= self.radius**2
        return torch.where(inside, 10.0, -10.0)[None, None].float(), torch.ones(1, 1)


@pytest.fixture(scope="module")
def tiny():
    from sac.backbones import build_sac
    from sac.models.config import SACConfig, UNetConfig

    cfg = SACConfig(backbone="vit_tiny", unet=UNetConfig(channels=(8, 16, 32, 64), num_res_units=0))
    torch.manual_seed(0)  # the scenes below depend on the random model's automatic result: fix it
    return build_sac(cfg, pretrained=False)


@pytest.fixture(scope="module")
def crop():
    """A real IHC tissue crop shipped with scikit-image, 300 x 260 (as in test_segment_cli)."""
    import skimage.data

    return np.ascontiguousarray(skimage.data.immunohistochemistry()[100:400, 200:460])


def disc_editor(model, image, scale=1.0, radius=10.0) -> Editor:
    ed = Editor(model, image, InferenceConfig(scale=scale, tta=1, sam="all"))  # scenes below assume this run
    ed.engine = DiscEngine(ed.engine, radius)
    return ed


def test_automatic_run_caches_float16_embeddings_of_every_window(tiny, crop):
    ed = Editor(tiny, crop, InferenceConfig(scale=1.0))
    tiles = ed.segmenter.tiles_for(300, 260, 1.0)
    assert set(ed.windows.grid) <= set(tiles) and len(ed.windows.grid) >= 1
    assert all(e.dtype == torch.float16 and e.shape == (256, 8, 8) for e in ed.windows.grid.values())
    assert ed.labels.dtype == np.int32 and ed.labels.shape == (300, 260)
    with pytest.raises(ValueError):
        ed.labels[0, 0] = 5  # read-only view: only edits change the labels


@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_add_puts_the_decoded_nucleus_under_the_click(tiny, crop, scale):
    ed = disc_editor(tiny, crop, scale=scale)
    r = 10.0 / scale  # the disc's radius in image pixels
    for x, y in [(130, 150), (5, 7), (259, 299), (64, 128)]:  # centre, corners (clipped discs), a tile seam
        e = ed.add(x, y)
        assert e.changed and len(e.ids) >= 1
        ys, xs = np.nonzero(ed.labels == e.ids[0])
        assert ed.labels[y, x] == e.ids[0]
        inside = (xs - x) ** 2 + (ys - y) ** 2 <= (r + 1.5) ** 2
        assert inside.all()  # every pixel of the new nucleus is within the disc around the click
        yy, xx = np.mgrid[0:300, 0:260]
        core = (xx - x) ** 2 + (yy - y) ** 2 <= (r - 1.5) ** 2
        assert (ed.labels[core] == e.ids[0]).all()  # and it covers the disc (clipped at the image border)
        if 2 * r < min(x, y, 259 - x, 299 - y):
            assert abs(xs.mean() - x) < 0.6 and abs(ys.mean() - y) < 0.6
    call = ed.engine.calls[0]
    assert call["emb"] == (1, 256, 8, 8) and call["mask_input"] == (1, 1, 128, 128)  # UNet logits as mask prompt


def test_click_near_a_seam_embeds_a_centred_window_once(tiny, crop):
    ed = disc_editor(tiny, crop)
    tiles = ed.segmenter.tiles_for(300, 260, 1.0)
    inner = next(t for t in tiles if t.x0 == 0 and t.y0 == 0)
    ed.add(inner.x0 + 60, inner.y0 + 60)  # >= MARGIN (35) px from every inner side of the first tile
    assert ed.windows.encoded == 0
    left = sorted({t.x0 for t in tiles})
    seam_x = (left[1] + left[0] + 128) // 2  # middle of the first column overlap: < MARGIN px from a window border
    ed.add(seam_x, 150)
    assert ed.windows.encoded == 1
    tile, _ = ed.windows.window_for(seam_x, 150)
    assert abs((tile.x0 + tile.size / 2) - seam_x) <= 1 and ed.windows.encoded == 1  # reused, not re-encoded
    c = ed.engine.calls[-1]["coords"][0, 0]
    assert abs(float(c[0]) - 63.5) <= 1 and abs(float(c[1]) - 63.5) <= 1  # the click sits at the window's centre


def test_add_replaces_what_it_overlaps_and_drops_small_fragments(tiny, crop):
    ed = disc_editor(tiny, crop, radius=12)
    yy, xx = np.mgrid[0:300, 0:260]

    def disc(x, y):
        return (xx - x) ** 2 + (yy - y) ** 2 <= 144

    a = ed.add(100, 100).ids[0]
    np.testing.assert_array_equal(ed.labels == a, disc(100, 100))
    b = ed.add(112, 100).ids[0]  # overlaps a: a keeps only its left crescent (one piece)
    np.testing.assert_array_equal(ed.labels == b, disc(112, 100))
    np.testing.assert_array_equal(ed.labels == a, disc(100, 100) & ~disc(112, 100))
    e = ed.add(88, 96)  # cuts the crescent into pieces of 80, 32 and 3 px
    from scipy import ndimage as ndi

    pieces, n = ndi.label(disc(100, 100) & ~disc(112, 100) & ~disc(88, 96), structure=np.ones((3, 3)))
    areas = np.bincount(pieces.ravel())[1:]
    assert n >= 2 and areas.min() < ed.min_area  # the scene does leave a fragment to drop
    for k in range(1, n + 1):
        got = set(np.unique(ed.labels[pieces == k]).tolist())
        assert got == ({0} if areas[k - 1] < ed.min_area else {a} if areas[k - 1] == areas.max() else got - {0, a})
    assert set(e.ids[1:]) == {int(ed.labels[pieces == k][0]) for k in range(1, n + 1)} - {0, a}


def test_remove_delete_merge_split(tiny, crop):
    ed = disc_editor(tiny, crop, radius=12)
    a = ed.add(60, 60).ids[0]
    b = ed.add(120, 60).ids[0]
    n = ed.n_nuclei
    e = ed.remove(60, 60)
    assert e.changed and e.ids == [a] and not (ed.labels == a).any() and e.n_nuclei == n - 1
    bg = np.argwhere(ed.labels == 0)[0]
    before = ed.labels.copy()
    e = ed.remove(int(bg[1]), int(bg[0]))
    assert not e.changed and "background" in e.message
    np.testing.assert_array_equal(ed.labels, before)
    c = ed.add(180, 60).ids[0]
    n = ed.n_nuclei
    e = ed.merge([c, b])
    assert e.ids == [min(b, c)] and not (ed.labels == max(b, c)).any() and ed.n_nuclei == n - 1
    e = ed.split(min(b, c), [[120, 60], [180, 60]])
    assert e.changed and len(e.ids) == 2
    assert ed.labels[60, 120] == e.ids[0] and ed.labels[60, 180] == e.ids[1]
    e = ed.delete(e.ids[0])
    assert e.changed and not (ed.labels == e.ids[0]).any()


def test_box_and_refine(tiny, crop):
    ed = disc_editor(tiny, crop, radius=8)
    e = ed.box(90, 90, 110, 110)
    assert e.changed and ed.labels[100, 100] == e.ids[0]
    call = ed.engine.calls[-1]  # the box and a positive click at its centre prompt (model pixels of the window)
    box = call["boxes"][0]
    assert call["labels"][0].tolist() == [1] and (box[2:] - box[:2]).tolist() == [20.0, 20.0]
    assert torch.allclose(call["coords"][0, 0], (box[:2] + box[2:]) / 2)
    i = e.ids[0]
    e = ed.refine(i, [[104, 100, 1]])  # the centre click + this point: disc at their mean; the box prompts again
    assert e.changed and e.ids[0] == i
    xs = np.nonzero(ed.labels == i)[1]
    assert 101 < xs.mean() < 103  # moved towards the positive click
    call = ed.engine.calls[-1]
    assert call["labels"][0].tolist() == [1, 1] and call["mask_input"] == (1, 1, 128, 128)
    assert torch.equal(call["boxes"][0], box)


def test_box_keeps_the_mask_inside_the_box(tiny, crop):
    ed = disc_editor(tiny, crop, radius=12)  # a disc larger than the box
    e = ed.box(95, 95, 105, 105)
    ys, xs = np.nonzero(ed.labels == e.ids[0])
    assert e.changed and ys.min() >= 95 and ys.max() <= 105 and xs.min() >= 95 and xs.max() <= 105
    assert len(ys) == 11 * 11  # the disc covers the whole box
    i = e.ids[0]
    ed.refine(i, [[103, 100, 1]])  # refines stay in the box ...
    ys, xs = np.nonzero(ed.labels == i)
    assert ys.min() >= 95 and ys.max() <= 105 and xs.min() >= 95 and xs.max() <= 105
    ed.refine(i, [[112, 100, 1]])  # ... grown to hold their positive clicks
    ys, xs = np.nonzero(ed.labels == i)
    assert xs.max() == 112 and xs.min() >= 95 and ys.min() >= 95 and ys.max() <= 105


def test_corrections_of_a_clicked_nucleus_stay_in_its_first_box(tiny, crop):
    ed = disc_editor(tiny, crop, radius=8)
    i = ed.add(100, 100).ids[0]
    ys, xs = np.nonzero(ed.labels == i)
    box = (xs.min(), xs.max(), ys.min(), ys.max())
    ed.refine(i, [[104, 100, 1]])  # a disc at (102, 100): 2 px beyond the first mask's box on the right, clipped
    ys, xs = np.nonzero(ed.labels == i)
    assert xs.max() == box[1] and xs.min() > box[0] and (ys.min(), ys.max()) == box[2:]
    ed.refine(i, [[115, 100, 1]])  # a positive click outside the box grows it
    assert np.nonzero(ed.labels == i)[1].max() == 115


class IdentityRefiner(DiscEngine):
    """The disc decoder with a click refiner that returns the head's logits unchanged."""

    has_refiner = True

    def refine_object(self, image, logits, unet, clicks):
        self.crops.append(tuple(logits.shape))
        return logits.clone()


def test_a_correction_thresholds_the_mean_of_the_refined_and_the_unet_logits(tiny, crop):
    ed = disc_editor(tiny, crop, radius=8)
    ed.engine = IdentityRefiner(ed.engine.inner, 8)
    ed.engine.crops = []
    prob = np.full(crop.shape[:2], 1 - 1e-9, np.float32)  # the UNet: nucleus left of x = 100, background from it
    prob[:, 100:] = 1e-9
    ed._auto = dataclasses.replace(ed._auto, prompt_prob=prob)
    i = ed.add(100, 100).ids[0]  # a first click is the refined disc alone (no mean): x 92..108
    xs = np.nonzero(ed.labels == i)[1]
    assert (xs.min(), xs.max()) == (92, 108)
    ed.refine(i, [[104, 100, 1]])  # disc at (102, 100) -> mean with +-20: left of 100 all in (first box), right out
    m = ed.labels == i
    assert m[92:109, 92:100].all()  # the box's left corners: outside the disc, in through the UNet's half
    ys, xs = np.nonzero(m)

    def near(cx, cy):
        return (xs - cx) ** 2 + (ys - cy) ** 2 <= 4

    # right of 100 only the 2 px discs of the two positive clicks (honour_clicks); the disc alone reaches x = 108
    assert (near(100, 100) | near(104, 100))[xs >= 100].all() and (xs >= 100).any()
    assert ed.engine.crops == [(64, 64), (64, 64)]  # refine_crop: a 17 px disc gets the refiner's training crop


def test_refine_reuses_the_clicks_and_logits_of_the_instance_it_decoded(tiny, crop):
    ed = disc_editor(tiny, crop, radius=8)
    i = ed.add(100, 100).ids[0]
    first = ed.engine.calls[-1]["coords"][0, 0]
    ed.refine(i, [[106, 100, 1]])
    call = ed.engine.calls[-1]
    assert call["labels"][0].tolist() == [1, 1] and torch.equal(call["coords"][0, 0], first)  # the first click
    assert 102 < np.nonzero(ed.labels == i)[1].mean() < 104  # disc at the mean of (100, 100) and (106, 100)
    j = ed.add(140, 140).ids[0]
    ed.add(150, 140)  # takes part of j: j's remembered prompts no longer describe it
    from sac.evaluation.clicks import interior_point

    ax, ay = interior_point(ed.labels == j)  # innermost pixel of what is left of j (not the old click)
    assert (ax, ay) != (140, 140)
    ed.refine(j, [[135, 140, 1]])
    c = ed.engine.calls[-1]["coords"][0]  # model pixels = image pixels shifted by the window origin at scale 1
    assert torch.allclose(c[0] - c[1], torch.tensor([ax - 135.0, ay - 140.0]))


def test_undo_redo_restore_the_label_image_exactly(tiny, crop):
    ed = disc_editor(tiny, crop, radius=12)
    states = [ed.labels.copy()]
    first = ed.add(100, 100).ids[0]
    states.append(ed.labels.copy())
    ed.add(110, 104)
    states.append(ed.labels.copy())
    ed.remove(200, 250) if ed.instance_at(200, 250) else ed.add(200, 250)
    states.append(ed.labels.copy())
    ed.merge([first, ed.instance_at(110, 104)])
    states.append(ed.labels.copy())
    for s in reversed(states[:-1]):
        assert ed.undo().changed
        np.testing.assert_array_equal(ed.labels, s)
    assert not ed.undo().changed
    for s in states[1:]:
        assert ed.redo().changed
        np.testing.assert_array_equal(ed.labels, s)
    assert not ed.redo().changed
    ed.undo()
    ed.add(30, 30)  # a new edit clears the redo stack
    assert not ed.redo().changed
    assert ed.n_nuclei == len(np.unique(ed.labels)) - 1


def test_bad_input_raises_and_changes_nothing(tiny, crop):
    ed = disc_editor(tiny, crop)
    i = ed.add(100, 100).ids[0]
    before = ed.labels.copy()
    bad = [
        lambda: ed.add(-1, 5), lambda: ed.add(260, 5), lambda: ed.add(5, 300), lambda: ed.add(float("nan"), 5),
        lambda: ed.add(5, float("inf")), lambda: ed.add("12", 5), lambda: ed.add(None, 5), lambda: ed.remove(5, -3),
        lambda: ed.refine(i, []), lambda: ed.refine(i, [[1, 2]]), lambda: ed.refine(i, [[1, 2, 3]]),
        lambda: ed.refine(i, "1,2,1"), lambda: ed.refine(99999, [[100, 100, 1]]), lambda: ed.refine(1.5, [[1, 1, 1]]),
        lambda: ed.box(50, 50, 50, 80), lambda: ed.box(50, 50, 80, 50.4), lambda: ed.box(0, 0, 400, 10),
        lambda: ed.delete(99999), lambda: ed.delete(True), lambda: ed.merge([]), lambda: ed.merge([i, 99999]),
        lambda: ed.split(i, [[100, 100]]), lambda: ed.split(i, [[100, 100], [250, 290]]), lambda: ed.split(i, []),
        lambda: ed.split(i, [[100, 100, 0], [103, 100, 0]]),
    ]
    for call in bad:
        with pytest.raises(SACError):
            call()
        np.testing.assert_array_equal(ed.labels, before)
    assert len(ed.engine.calls) == 1


def test_result_feeds_the_same_writers_as_sac_segment(tiny, crop, tmp_path):
    from sac.inference.writers import write_outputs

    ed = disc_editor(tiny, crop)
    ed.add(100, 100)
    ed.add(200, 200)
    res = ed.result()
    n = res.n_nuclei
    assert n == ed.n_nuclei and set(np.unique(res.labels)) == set(range(n + 1))  # renumbered 1..n
    np.testing.assert_array_equal(res.mask, ed.labels > 0)
    assert len(res.table) == n
    assert (res.prompts[-2:] == np.array([[100, 100, 1], [200, 200, 1]], np.float32)).all()
    written = write_outputs(res, tmp_path, "crop")
    assert {p.name for p in written} >= {"crop_labels.tif", "crop_mask.png", "crop.geojson", "crop_nuclei.csv"}


def test_expert_points_go_through_the_editor(tiny, crop):
    ed = disc_editor(tiny, crop, radius=12)
    a = ed.add(60, 60).ids[0]
    ed.add(150, 150)
    big = ed.add(100, 220).ids[0]
    ed.engine.radius = 30
    wide = ed.add(200, 100).ids[0]
    ed.engine.radius = 12
    before = ed.labels.copy()
    pts = [[60, 60, 0], [150, 150, 1], [185, 100, 1], [215, 100, 1], [20, 280, 1]]
    if ed.instance_at(20, 280):
        ed.delete(ed.instance_at(20, 280))
    edits = apply_points(ed, pts)
    assert not (ed.labels == a).any()  # negative point: removed
    assert ed.labels[150, 150] == before[150, 150]  # positive on a detected nucleus: kept as it is
    assert ed.instance_at(20, 280) > 0  # positive on background: added
    assert ed.labels[100, 185] != ed.labels[100, 215] and not (ed.labels == wide).any()  # two in one: split
    assert (ed.labels == big).any() and len(edits) == 3
    with pytest.raises(SACError):
        apply_points(ed, [[0, 0, 1], [1e6, 3, 1]])


def test_model_segment_points_remove_the_nucleus_under_a_negative_point(tiny, crop):
    from sac.inference.api import SACModel

    model = SACModel(tiny, {"model": "tiny"})
    plain = model.segment(crop, scale=1.0)
    assert plain.n_nuclei > 0
    ys, xs = np.nonzero(plain.labels == 1)
    y, x = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
    i = plain.labels[y, x]
    res = model.segment(crop, points=[[x, y, 0]], scale=1.0)
    assert res.n_nuclei == plain.n_nuclei - 1 and res.labels[y, x] == 0
    outside = plain.labels != i
    np.testing.assert_array_equal(res.labels[outside] > 0, plain.labels[outside] > 0)
    for bad in ([[x, y, 2]], [[math.nan, 1, 1]], [[1e5, 1, 0]], [["a", 1, 0]]):
        with pytest.raises(SACError):
            model.segment(crop, points=bad, scale=1.0)


def test_honour_clicks_keeps_positive_and_drops_negative_clicks():
    """A decoded mask that ignores its clicks is corrected: a 2 px disc around a negative click leaves it (only that:
    the rest is the decoder's answer), a missed positive click brings in its part of the UNet map (or a small disc
    where the map has none)."""
    from sac.inference.windows import honour_clicks

    mask = np.zeros((40, 40), bool)
    mask[5:25, 5:25] = True
    prob = np.zeros((40, 40), np.float32)
    prob[28:36, 28:36] = 0.9
    out = honour_clicks(mask, [[10, 10, 1], [22, 22, 0], [31, 31, 1]], prob)
    assert out[10, 10] and not out[22, 22]  # the positive click stays, the negative one is out
    assert out[28:36, 28:36].all()  # the missed positive click's UNet region is added
    # the negative click takes its 13 px disc of radius 2 out, not the half of the square on its side
    assert out[5:25, 5:25].sum() == 400 - 13 and out[5:20, 5:25].all()
    assert out.sum() == 400 - 13 + 64
    lone = honour_clicks(np.zeros((20, 20), bool), [[3, 3, 1]], None)
    assert lone[3, 3] and lone.sum() == 13  # a disc of radius 2 where there is no map
    # negative clicks alone (refining a boxed nucleus): the same rule
    neg = honour_clicks(mask, [[22, 22, 0]], None)
    assert not neg[22, 22] and neg.sum() == mask.sum() - 13  # the 13 px disc of radius 2
