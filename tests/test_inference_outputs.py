"""Instances, expert points and output writers: hand-made masks with known answers; files reloaded and checked."""

from __future__ import annotations

import json

import imageio.v3 as iio
import numpy as np
import pandas as pd
import pytest
import tifffile
from skimage.draw import disk

from sac.errors import SACError
from sac.inference.experts import check_points, parse_expert_points, points_for, simulate_expert
from sac.inference.measure import nuclei_table
from sac.inference.writers import (
    NEGATIVE_RGB,
    POSITIVE_RGB,
    draw_overlay,
    nucleus_polygons,
    parse_formats,
    write_geojson,
    write_labels,
    write_mask,
    write_table,
)
from sac.postprocess.instances import components, watershed_instances


def _touching_disks() -> np.ndarray:
    """Two radius-12 disks whose centres are 20 px apart (they overlap) + one separate small disk."""
    mask = np.zeros((80, 100), bool)
    for centre, r in (((40, 30), 12), ((40, 50), 12), ((12, 85), 6)):
        mask[disk(centre, r, shape=mask.shape)] = True
    return mask


def test_watershed_splits_touching_nuclei_components_do_not():
    mask = _touching_disks()
    assert components(mask).max() == 2
    lab = watershed_instances(mask)
    assert lab.max() == 3 and lab.dtype == np.int32
    np.testing.assert_array_equal(lab > 0, mask)
    # The split runs between the two centres.
    assert lab[40, 30] != lab[40, 50] and lab[40, 30] > 0 and lab[40, 50] > 0


def test_min_area_drops_small_objects_and_renumbers():
    mask = _touching_disks()
    mask[0, 0] = True  # a 1-pixel speck
    lab = watershed_instances(mask, min_area=200)  # the r=6 disk (~113 px) and the speck go
    assert lab.max() == 2 and sorted(np.unique(lab)) == [0, 1, 2]
    assert components(mask, min_area=2).max() == 2  # merged pair + small disk; the speck goes
    assert components(mask).max() == 3


def test_prompt_points_add_seeds():
    mask = np.zeros((60, 100), bool)
    for cx in (35, 57):  # two strongly overlapping disks: h=20 exceeds their depth: no seed
        mask[disk((30, cx), 14, shape=mask.shape)] = True
    assert watershed_instances(mask, h=20).max() == 1
    two = watershed_instances(mask, h=20, points=np.array([[35.0, 30.0], [57.0, 30.0]]))
    assert two.max() == 2 and two[30, 35] != two[30, 57]


def test_nuclei_table_equals_skimage_regionprops_on_real_nuclei(data_root):
    """The vectorised table has regionprops' definitions: same values on a real MoNuSeg crop (edge-touching, thin
    and one-pixel nuclei added)."""
    from skimage.measure import regionprops_table

    from sac.data.io import read_image, read_labels

    stem = "TCGA-18-5592-01Z-00-DX1"
    lab = read_labels(data_root / "monuseg/train/labels" / f"{stem}.png")[:300, :300].astype(np.int32)
    img = read_image(data_root / "monuseg/train/images" / f"{stem}.png")[:300, :300]
    top = lab.max()
    lab[0, 0:5] = top + 1  # a line on the border
    lab[150:160, 299] = top + 2
    lab[5, 295] = top + 3  # one pixel
    lab[lab == 7] = 0  # a gap in the ids
    t = nuclei_table(lab, img)
    props = ["label", "centroid", "area", "perimeter", "eccentricity", "solidity", "bbox", "intensity_mean"]
    ref = regionprops_table(lab, intensity_image=img.mean(axis=2, dtype=np.float32), properties=props)
    names = {"id": "label", "centroid_x": "centroid-1", "centroid_y": "centroid-0", "area": "area",
             "perimeter": "perimeter", "eccentricity": "eccentricity", "solidity": "solidity",
             "mean_intensity": "intensity_mean", "bbox_x0": "bbox-1", "bbox_y0": "bbox-0", "bbox_x1": "bbox-3",
             "bbox_y1": "bbox-2"}
    assert len(t) == len(ref["label"]) > 30
    for col, key in names.items():
        np.testing.assert_allclose(t[col].to_numpy(float), ref[key], rtol=1e-6, atol=1e-9, err_msg=col)


def test_nuclei_table_columns_and_values():
    lab = np.zeros((20, 30), np.int32)
    lab[2:6, 3:9] = 1  # 4 x 6 rectangle
    lab[10:15, 20:25] = 2
    img = np.zeros((20, 30, 3), np.uint8)
    img[lab == 1] = 90
    t = nuclei_table(lab, img)
    assert list(t["id"]) == [1, 2] and list(t["area"]) == [24, 25]
    assert t.loc[0, "centroid_x"] == pytest.approx(5.5) and t.loc[0, "centroid_y"] == pytest.approx(3.5)
    assert t.loc[0, "mean_intensity"] == pytest.approx(90) and t.loc[1, "mean_intensity"] == 0
    assert tuple(t.loc[0, ["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"]]) == (3, 2, 9, 6)
    assert len(nuclei_table(np.zeros((5, 5), np.int32))) == 0


# ------------------------------------------------------------------ expert points
def test_parse_inline_points():
    pts = parse_expert_points("10,20,1; 30.5,40,0;7,8")
    np.testing.assert_array_equal(pts, [[10, 20, 1], [30.5, 40, 0], [7, 8, 1]])
    assert pts.dtype == np.float32


@pytest.mark.parametrize("bad", ["10,20,2", "10;20", "a,b,1", "1,2,3,4", ";", "10,,1"])
def test_parse_inline_rejects_bad_syntax(bad):
    with pytest.raises(SACError, match="expert-points"):
        parse_expert_points(bad)


def test_parse_json_list_and_per_image(tmp_path):
    f = tmp_path / "p.json"
    f.write_text(json.dumps([[1, 2, 1], {"x": 3, "y": 4, "label": 0}]))
    np.testing.assert_array_equal(parse_expert_points(str(f)), [[1, 2, 1], [3, 4, 0]])
    g = tmp_path / "q.json"
    g.write_text(json.dumps({"a.png": [[1, 2, 1]], "b": [[5, 6, 0]]}))
    per = parse_expert_points(str(g))
    from pathlib import Path

    np.testing.assert_array_equal(points_for(per, Path("x/a.png")), [[1, 2, 1]])
    np.testing.assert_array_equal(points_for(per, Path("y/b.tif")), [[5, 6, 0]])
    assert points_for(per, Path("c.png")) is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(SACError, match="bad.json"):
        parse_expert_points(str(bad))
    with pytest.raises(SACError, match="missing.json"):
        parse_expert_points(str(tmp_path / "missing.json"))


def test_points_outside_the_image_name_the_file():
    ok = check_points(np.array([[0, 0, 1], [99, 49, 0]], np.float32), (50, 100), "img.png")
    assert len(ok) == 2
    with pytest.raises(SACError, match=r"img.png: expert point \(100, 3\)"):
        check_points(np.array([[100, 3, 1]], np.float32), (50, 100), "img.png")
    with pytest.raises(SACError, match="outside"):
        check_points(np.array([[-1, 3, 1]], np.float32), (50, 100), "img.png")


def test_simulated_expert_clicks_inside_nuclei_and_on_background():
    lab = watershed_instances(_touching_disks())
    pts = simulate_expert(lab, 2, np.random.default_rng(0))
    assert pts.shape == (4, 3)
    pos, neg = pts[pts[:, 2] == 1], pts[pts[:, 2] == 0]
    assert len(pos) == 2 and len(neg) == 2
    ids = [lab[int(y), int(x)] for x, y, _ in pos]
    assert all(i > 0 for i in ids) and len(set(ids)) == 2  # two different nuclei
    assert all(lab[int(y), int(x)] == 0 for x, y, _ in neg)
    again = simulate_expert(lab, 2, np.random.default_rng(0))
    np.testing.assert_array_equal(pts, again)  # seeded
    assert simulate_expert(lab, 0, np.random.default_rng(0)).shape == (0, 3)


# ------------------------------------------------------------------ writers
def test_formats_parsing():
    assert parse_formats("mask, csv") == ("mask", "csv")
    assert len(parse_formats(None)) == 5
    with pytest.raises(SACError, match="pdf"):
        parse_formats("mask,pdf")


def test_mask_and_labels_files_reload(tmp_path):
    lab = watershed_instances(_touching_disks())
    write_mask(tmp_path / "m.png", lab > 0)
    m = iio.imread(tmp_path / "m.png")
    assert m.dtype == np.uint8 and set(np.unique(m)) == {0, 255}
    np.testing.assert_array_equal(m == 255, lab > 0)
    write_labels(tmp_path / "l.tif", lab)
    back = tifffile.imread(tmp_path / "l.tif")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, lab)
    many = np.arange(300 * 300, dtype=np.int64).reshape(300, 300)  # 89,999 ids > 65,535
    write_labels(tmp_path / "big.tif", many)
    back = tifffile.imread(tmp_path / "big.tif")
    assert back.dtype == np.uint32 and back.max() == 89999
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def _shoelace(ring):
    xy = np.asarray(ring)
    return 0.5 * abs(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1]))


def test_geojson_is_a_qupath_detection_collection(tmp_path):
    lab = watershed_instances(_touching_disks())
    table = nuclei_table(lab)
    write_geojson(tmp_path / "n.geojson", lab, table)
    gj = json.loads((tmp_path / "n.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == lab.max()
    for feat in gj["features"]:
        assert feat["properties"]["objectType"] == "detection"
        ring = feat["geometry"]["coordinates"][0]
        assert feat["geometry"]["type"] == "Polygon" and ring[0] == ring[-1] and len(ring) >= 4
        area = (lab == feat["properties"]["nucleus_id"]).sum()
        assert abs(_shoelace(ring) - area) < 0.25 * area  # the polygon outlines the nucleus
        assert feat["properties"]["measurements"]["area"] == area
    # A lone square pixel block: polygon corners on pixel edges (QuPath convention).
    sq = np.zeros((10, 10), np.int32)
    sq[2:5, 3:7] = 1
    (idx, ring), = nucleus_polygons(sq)
    xs, ys = [p[0] for p in ring], [p[1] for p in ring]
    assert min(xs) == pytest.approx(3.0) and max(xs) == pytest.approx(7.0)
    assert min(ys) == pytest.approx(2.0) and max(ys) == pytest.approx(5.0)


def _simple(ring) -> bool:
    """True when no two non-adjacent edges of the closed ring touch or cross (a simple polygon); the textbook
    orientation test, collinear overlaps included."""
    pts = [tuple(p) for p in ring]
    edges = list(zip(pts[:-1], pts[1:], strict=True))
    n = len(edges)

    def orient(p, q, r):
        v = (q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0])
        return (v > 0) - (v < 0)

    def on_segment(p, q, r):  # r collinear with p-q: within its bounding box?
        return min(p[0], q[0]) <= r[0] <= max(p[0], q[0]) and min(p[1], q[1]) <= r[1] <= max(p[1], q[1])

    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # the last edge shares the first vertex
            (p1, q1), (p2, q2) = edges[i], edges[j]
            o1, o2, o3, o4 = orient(p1, q1, p2), orient(p1, q1, q2), orient(p2, q2, p1), orient(p2, q2, q1)
            if o1 != o2 and o3 != o4:
                return False
            if (o1 == 0 and on_segment(p1, q1, p2)) or (o2 == 0 and on_segment(p1, q1, q2)) \
                    or (o3 == 0 and on_segment(p2, q2, p1)) or (o4 == 0 and on_segment(p2, q2, q1)):
                return False
    return True


def test_geojson_rings_are_valid_and_split_ids_are_multipolygons(tmp_path):
    """RFC 7946 validity: closed rings of >= 4 positions, exterior rings counterclockwise (positive shoelace area in
    the file's coordinates), no self-intersection; an id in two pieces (two blobs touching only at a corner, and a
    far-away one) is one MultiPolygon whose pieces cover all of its pixels, not its longest contour alone."""
    lab = watershed_instances(_touching_disks())
    odd = lab.max() + 1
    lab[60:66, 5:11] = odd  # a 6 x 6 block ...
    lab[66:70, 11:15] = odd  # ... and a 4 x 4 one touching it only at a corner
    lab[70:73, 90:93] = odd  # ... and a 3 x 3 one far away
    write_geojson(tmp_path / "n.geojson", lab)
    features = json.loads((tmp_path / "n.geojson").read_text())["features"]
    feats = {f["properties"]["nucleus_id"]: f["geometry"] for f in features}
    assert sorted(feats) == list(range(1, odd + 1))
    for idx, geom in feats.items():
        polys = geom["coordinates"] if geom["type"] == "MultiPolygon" else [geom["coordinates"]]
        assert geom["type"] == ("MultiPolygon" if idx == odd else "Polygon")
        total = 0.0
        for poly in polys:
            ring = poly[0]
            assert ring[0] == ring[-1] and len(ring) >= 4
            assert _signed(ring) > 0, f"nucleus {idx}: exterior ring is clockwise"
            assert _simple(ring), f"nucleus {idx}: ring intersects itself"
            total += _signed(ring)
        area = (lab == idx).sum()
        assert abs(total - area) < 0.25 * area  # the pieces together outline the whole nucleus
    multi = feats[odd]["coordinates"]
    assert len(multi) == 3 and _signed(multi[0][0]) > _signed(multi[1][0]) > _signed(multi[2][0])  # largest first
    # the ring the web page draws is the largest piece
    assert dict(nucleus_polygons(lab))[odd] == multi[0][0]


def _signed(ring) -> float:
    xy = np.asarray(ring)
    return 0.5 * float(np.dot(xy[:-1, 0], xy[1:, 1]) - np.dot(xy[1:, 0], xy[:-1, 1]))


def test_csv_has_one_row_per_nucleus(tmp_path):
    lab = watershed_instances(_touching_disks())
    write_table(tmp_path / "t.csv", nuclei_table(lab, np.zeros((*lab.shape, 3), np.uint8)))
    t = pd.read_csv(tmp_path / "t.csv")
    assert len(t) == lab.max() and list(t["id"]) == list(range(1, lab.max() + 1))


def test_overlay_draws_contours_and_prompt_colours():
    lab = watershed_instances(_touching_disks())
    img = np.full((*lab.shape, 3), 200, np.uint8)
    prompts = np.array([[30, 40, 1], [5, 70, 0]], np.float32)
    ov = draw_overlay(img, lab, prompts)
    assert ov.shape == img.shape and ov.dtype == np.uint8
    assert tuple(ov[40, 30]) == POSITIVE_RGB and tuple(ov[70, 5]) == NEGATIVE_RGB
    assert (ov != img).any(axis=2).sum() > 100  # contours drawn
    assert (img == 200).all()  # input untouched
