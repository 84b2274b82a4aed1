"""MoNuSeg converter: MATLAB poly2mask semantics, Aperio XML parsing, and the real raw samples."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from sac.data.convert import convert
from sac.data.convert.monuseg import rasterise
from sac.data.convert.poly2mask import _matlab_round, _trace, poly2mask, poly2mask_window
from sac.data.io import read_image, read_labels
from sac.errors import SACError


def test_square_on_pixel_borders_covers_exactly_its_pixels():
    # MATLAB pixel (r, c) spans [c-0.5, c+0.5]: a square from 0.5 to 3.5 is exactly pixels 1..3
    m = poly2mask([0.5, 3.5, 3.5, 0.5], [0.5, 0.5, 3.5, 3.5], (5, 5))
    expected = np.zeros((5, 5), bool)
    expected[:3, :3] = True
    np.testing.assert_array_equal(m, expected)


def test_square_through_pixel_centres_keeps_bottom_right_edges():
    # Vertices on pixel centres (1,1)-(3,3): the 5x5 sub-pixel rule puts the left/top edge pixels
    # outside and the right/bottom ones inside (derived by hand from MATLAB's algorithm: vertices snap
    # to sub-pixel 4 and 14, centre columns sit at sub-pixel 5c-2, edges toggle rows ceil((y+2)/5)).
    m = poly2mask([1, 3, 3, 1], [1, 1, 3, 3], (4, 4))
    expected = np.zeros((4, 4), bool)
    expected[1:3, 1:3] = True
    np.testing.assert_array_equal(m, expected)


def _intline(x1: int, x2: int, y1: int, y2: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: integer points of the segment (x1, y1) -> (x2, y2), endpoints included (MATLAB ``intline``,
    one segment at a time, as MATLAB loops over them)."""
    dx, dy = abs(x2 - x1), abs(y2 - y1)
    if dx == 0 and dy == 0:
        return np.array([x1], dtype=np.float64), np.array([y1], dtype=np.float64)
    flip = False
    if dx >= dy:
        if x1 > x2:  # always draw left to right so the result does not depend on direction
            x1, x2, y1, y2 = x2, x1, y2, y1
            flip = True
        m = (y2 - y1) / (x2 - x1)
        x = np.arange(x1, x2 + 1, dtype=np.float64)
        y = _matlab_round(y1 + m * (x - x1))
    else:
        if y1 > y2:
            x1, x2, y1, y2 = x2, x1, y2, y1
            flip = True
        m = (x2 - x1) / (y2 - y1)
        y = np.arange(y1, y2 + 1, dtype=np.float64)
        x = _matlab_round(x1 + m * (y - y1))
    if flip:
        x, y = x[::-1], y[::-1]
    return x, y


def test_vectorised_trace_equals_matlab_intline_loop():
    rng = np.random.default_rng(0)
    for trial in range(300):
        k = int(rng.integers(2, 10))
        xs = _matlab_round(5 * (rng.uniform(-3, 30, k) - 0.5) + 1)
        ys = _matlab_round(5 * (rng.uniform(-3, 30, k) - 0.5) + 1)
        if trial % 3 == 0:  # degenerate (repeated) vertices and axis-parallel segments
            xs[1], ys[1] = xs[0], ys[0]
            xs[-1] = xs[-2]
        xs, ys = np.r_[xs, xs[0]], np.r_[ys, ys[0]]
        parts = [_intline(int(xs[i]), int(xs[i + 1]), int(ys[i]), int(ys[i + 1])) for i in range(k)]
        px, py = _trace(xs, ys)
        np.testing.assert_array_equal(px, np.concatenate([p[0] for p in parts]))
        np.testing.assert_array_equal(py, np.concatenate([p[1] for p in parts]))


def test_window_matches_full_mask():
    x, y = np.array([3.2, 9.7, 6.1]), np.array([2.4, 4.9, 8.8])
    r0, c0, win = poly2mask_window(x, y, (12, 12))
    full = np.zeros((12, 12), bool)
    full[r0 : r0 + win.shape[0], c0 : c0 + win.shape[1]] = win
    np.testing.assert_array_equal(full, poly2mask(x, y, (12, 12)))
    assert win.any() and win.shape[0] < 12


def test_direction_and_closing_do_not_matter():
    rng = np.random.default_rng(0)
    ang = np.sort(rng.uniform(0, 2 * np.pi, 12))
    x = 15 + 8 * np.cos(ang) * rng.uniform(0.7, 1, 12)
    y = 12 + 6 * np.sin(ang) * rng.uniform(0.7, 1, 12)
    a = poly2mask(x, y, (30, 30))
    np.testing.assert_array_equal(a, poly2mask(x[::-1], y[::-1], (30, 30)))
    np.testing.assert_array_equal(a, poly2mask(np.r_[x, x[0]], np.r_[y, y[0]], (30, 30)))
    area = 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))  # shoelace
    perimeter = np.hypot(np.diff(np.r_[x, x[0]]), np.diff(np.r_[y, y[0]])).sum()
    assert abs(a.sum() - area) < 0.5 * perimeter


def test_agrees_with_plain_fill_except_on_boundaries():
    from scipy import ndimage as ndi
    from skimage.draw import polygon2mask

    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    x, y = 20.3 + 12.1 * np.cos(t), 18.7 + 9.4 * np.sin(t)
    ours = poly2mask(x, y, (40, 40))
    plain = polygon2mask((40, 40), np.c_[y - 1, x - 1])  # skimage: 0-based (row, col)
    diff = ours ^ plain
    assert 0 < diff.sum() < 0.1 * plain.sum()
    # every differing pixel touches the boundary of the plain fill
    boundary = plain ^ ndi.binary_erosion(plain) | ndi.binary_dilation(plain) ^ plain
    assert np.all(boundary[diff])


def test_clipping_at_image_border():
    m = poly2mask([-5, 3.5, 3.5, -5], [-5, -5, 2.5, 2.5], (4, 4))
    expected = np.zeros((4, 4), bool)
    expected[:2, :3] = True
    np.testing.assert_array_equal(m, expected)


def test_rasterise_first_region_wins_and_empty_regions_skipped():
    big = (np.array([0.5, 4.5, 4.5, 0.5]), np.array([0.5, 0.5, 4.5, 4.5]))
    degenerate = (np.array([2.0, 2.0, 2.0]), np.array([1.0, 1.0, 1.0]))  # zero area
    overlapping = (np.array([2.5, 6.5, 6.5, 2.5]), np.array([2.5, 2.5, 6.5, 6.5]))
    lab = rasterise([big, degenerate, overlapping], (7, 7))
    assert lab.max() == 2  # the degenerate region consumed no id
    assert np.all(lab[:4, :4] == 1)  # overlap stays with the first region
    assert lab[5, 5] == 2 and lab[3, 3] == 1


XML = """<Annotations MicronsPerPixel="0.25"><Annotation Id="1"><Regions>
<Region Id="1"><Vertices><Vertex X="0.5" Y="0.5"/><Vertex X="3.5" Y="0.5"/><Vertex X="3.5" Y="3.5"/>
<Vertex X="0.5" Y="3.5"/></Vertices></Region>
<Region Id="2"><Vertices><Vertex X="5.5" Y="5.5"/><Vertex X="7.5" Y="5.5"/><Vertex X="7.5" Y="7.5"/>
<Vertex X="5.5" Y="7.5"/></Vertices></Region>
</Regions></Annotation></Annotations>"""


def _raw(tmp_path, xml=XML):
    raw = tmp_path / "raw"
    (raw / "Tissue Images").mkdir(parents=True)
    (raw / "Annotations").mkdir()
    img = np.random.default_rng(0).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    tifffile.imwrite(raw / "Tissue Images" / "TCGA-X.tif", img, compression="lzw")
    (raw / "Annotations" / "TCGA-X.xml").write_text(xml)
    return raw, img


def test_convert_synthetic_download(tmp_path):
    raw, img = _raw(tmp_path)
    summary = convert("monuseg", raw, tmp_path / "out")
    assert summary.counts == {"train": {"TCGA-X": 2}}
    np.testing.assert_array_equal(read_image(tmp_path / "out/train/images/TCGA-X.png"), img)
    lab = read_labels(tmp_path / "out/train/labels/TCGA-X.png")
    assert np.sum(lab == 1) == 9 and np.sum(lab == 2) == 4
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # staging removed


@pytest.mark.parametrize(
    "xml, match",
    [
        ("<Annotations><Region", "cannot parse"),
        ('<Annotations><Region Id="3"><Vertices><Vertex X="a" Y="1"/></Vertices></Region></Annotations>',
         "bad vertex in region 3"),
        ("<Annotations></Annotations>", "no Region"),
    ],
)
def test_bad_xml_names_file_and_writes_nothing(tmp_path, xml, match):
    raw, _ = _raw(tmp_path, xml)
    out = tmp_path / "out"
    with pytest.raises(SACError, match=match) as err:
        convert("monuseg", raw, out)
    assert "TCGA-X.xml" in str(err.value)
    assert list(out.iterdir()) == []


def test_image_without_annotation(tmp_path):
    raw, _ = _raw(tmp_path)
    tifffile.imwrite(raw / "Tissue Images" / "TCGA-Y.tif", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(SACError, match=r"TCGA-Y\.tif has no annotation"):
        convert("monuseg", raw, tmp_path / "out")


@pytest.mark.data
@pytest.mark.slow
def test_reproduces_shared_labels_exactly(data_root, tmp_path):
    raw = data_root / "raw-samples" / "monuseg"
    summary = convert("monuseg", raw, tmp_path / "out")
    ids = sorted(summary.counts["train"])
    assert len(ids) == 2
    for pid in ids:
        ours = read_labels(tmp_path / "out" / "train" / "labels" / f"{pid}.png")
        ref = read_labels(data_root / "monuseg" / "train" / "labels" / f"{pid}.png")
        assert ours.max() == ref.max() == summary.counts["train"][pid]
        np.testing.assert_array_equal(ours, ref)  # pixel-identical, ids included
        np.testing.assert_array_equal(
            read_image(tmp_path / "out" / "train" / "images" / f"{pid}.png"),
            read_image(data_root / "monuseg" / "train" / "images" / f"{pid}.png"),
        )
