"""Blockwise instance labelling of large masks (sac.postprocess.blockwise) against the single-pass watershed."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from sac.inference.writers import CONTOUR_RGB, draw_overlay
from sac.postprocess.blockwise import MARGIN, blockwise_watershed
from sac.postprocess.instances import components, make_instances, watershed_instances


def crossing_seams(labels: np.ndarray, block: int) -> int:
    """Number of objects whose pixels lie in more than one ``block x block`` core."""
    from scipy import ndimage as ndi

    n = 0
    for sl in ndi.find_objects(labels):
        if sl is not None and (sl[0].start // block != (sl[0].stop - 1) // block
                               or sl[1].start // block != (sl[1].stop - 1) // block):
            n += 1
    return n


def test_blockwise_equals_single_pass_on_touching_disks(same_nuclei, touching_disks):
    """2000 x 1800 px of touching disks (r 4-12 px) in 256 px blocks (8 x 8 cores, ragged last row/column), halo
    48 px, >300 nuclei crossing seams. Guaranteed (module docstring): the same foreground, the same seeds and
    hence the same number of nuclei, each whole and once. Not guaranteed: pixel-exact borders between two
    touching nuclei: skimage's watershed queue gives all seed pixels the same age, so exact ties of the flood
    priority are broken by the queue's layout, which depends on the rest of the array (the likely cause; observed
    here: one (single, blockwise) id pair more than nuclei among ~4,000). So: every nucleus matched one-to-one
    with IoU > 0.5, and at most 0.5% differ at all."""
    mask = touching_disks(2000, 1800, 6000, 4, 12, seed=0)
    points = np.array([[100.5, 200.0], [257.0, 255.0], [1799.0, 1999.0], [900.0, 1024.0]])
    single = watershed_instances(mask, min_area=10, points=points)
    blocks = blockwise_watershed(mask, min_area=10, points=points, block=256, halo=48)
    assert single.max() > 2000
    assert crossing_seams(single, 256) > 300  # the seams are really exercised
    assert same_nuclei(single, blocks, max_changed=0.005) <= 0.005 * single.max()


def test_large_component_gets_its_own_crop_then_one_object(same_partition, touching_disks):
    """A chain of touching disks ~500 px long crosses several 128 px seams and is longer than the 32 px halo: it is
    processed alone in its own crop (same result as the single pass); with ``max_crop`` below its box it becomes
    one connected-component object, and everything else is unchanged."""
    mask = touching_disks(600, 500, 250, 4, 9, seed=1)
    t = np.linspace(0, 1, 60)
    for y, x in zip(40 + 500 * t, 30 + 430 * t, strict=True):  # a diagonal snake of overlapping disks
        yy, xx = np.ogrid[:600, :500]
        mask |= (yy - y) ** 2 + (xx - x) ** 2 <= 8**2
    single = watershed_instances(mask, min_area=10)
    # Its box + margin is ~550 x 480 px: above the default max_crop of 4 * (128 + 64)^2, so allow it explicitly.
    same_partition(single, blockwise_watershed(mask, min_area=10, block=128, halo=32, max_crop=300_000))

    from scipy import ndimage as ndi

    comps, _ = ndi.label(mask, structure=np.ones((3, 3), bool))
    snake = comps == comps[int(40 + 250), int(30 + 215)]
    assert snake.sum() > 5000 and len(np.unique(single[snake])) > 10  # many nuclei in the single pass
    capped = blockwise_watershed(mask, min_area=10, block=128, halo=32, max_crop=100_000)
    assert len(np.unique(capped[snake])) == 1 and capped[snake].min() > 0  # one object, nothing lost
    # Every other pixel keeps the single pass's partition.
    rest = ~snake
    pairs = np.unique(np.stack([single[rest & mask], capped[rest & mask]]), axis=1)
    assert pairs.shape[1] == len(np.unique(single[rest & mask])) == len(np.unique(capped[rest & mask]))
    assert capped.max() == len(np.unique(capped)) - 1  # ids 1..N


def test_make_instances_dispatch_small_and_large(same_partition, touching_disks):
    """Below the threshold the single-pass code path is used unchanged (identical array); above it the blockwise
    watershed gives the same partition, and components the identical array."""
    mask = touching_disks(700, 600, 500, 4, 10, seed=2)
    small = make_instances(mask, "watershed", min_area=10)
    assert np.array_equal(small, watershed_instances(mask, min_area=10))
    large = make_instances(mask, "watershed", min_area=10, block=200, halo=40, blockwise_above=100_000)
    same_partition(small, large)
    for method in ("components", "none"):
        ref = components(mask, min_area=30)
        assert np.array_equal(make_instances(mask, method, min_area=30, blockwise_above=100_000), ref)
        assert np.array_equal(make_instances(mask, method, min_area=30), ref)


def test_blockwise_edge_cases(same_partition, touching_disks):
    empty = np.zeros((300, 200), dtype=bool)
    out = blockwise_watershed(empty, block=64, halo=32)
    assert out.dtype == np.int32 and not out.any()
    with pytest.raises(ValueError, match="halo"):
        blockwise_watershed(empty, block=64, halo=MARGIN)
    # Pieces below min_area disappear exactly as in the single pass.
    mask = touching_disks(400, 400, 300, 1, 6, seed=3)
    same_partition(watershed_instances(mask, min_area=40),
                          blockwise_watershed(mask, min_area=40, block=100, halo=30))


def test_overlay_contours_in_bands_equal_whole_image():
    """The banded contour drawing (1-row halo) marks exactly the pixels of find_boundaries on the whole image."""
    rng = np.random.default_rng(4)
    labels = np.kron(rng.integers(0, 40, (330, 30)), np.ones((7, 5), dtype=np.int64)).astype(np.int32)
    image = rng.integers(0, 256, (*labels.shape, 3), dtype=np.uint8)  # 2310 rows: three bands
    ref = image.copy()
    ref[find_boundaries(labels, mode="inner")] = CONTOUR_RGB
    assert np.array_equal(draw_overlay(image, labels, None), ref)


def test_probability_weighted_watershed_splits_at_low_probability_necks():
    """Two disks (r 12) 6 px apart: the distance map's saddle (~11.6) is within h of its maxima (12), so the plain
    watershed keeps one object; with a probability valley along the neck (0.3), the weighted map splits it."""
    yy, xx = np.mgrid[0:70, 0:80]
    mask = ((yy - 35) ** 2 + (xx - 30) ** 2 <= 144) | ((yy - 35) ** 2 + (xx - 36) ** 2 <= 144)
    prob = np.where(mask, 0.95, 0.05).astype(np.float32)
    prob[:, 32:35] = np.where(mask[:, 32:35], 0.3, 0.05)
    assert watershed_instances(mask, min_area=10).max() == 1
    two = watershed_instances(mask, min_area=10, prob=prob)
    assert two.max() == 2 and np.array_equal(two > 0, mask)  # split, same foreground
    assert two[35, 22] != two[35, 44]
    # make_instances passes prob through, for small (single pass) and large (blockwise) masks alike.
    assert make_instances(mask, "watershed", min_area=10, prob=prob).max() == 2
    assert make_instances(mask, "watershed", min_area=10, prob=prob, blockwise_above=0, block=32, halo=24).max() == 2
    with pytest.raises(ValueError, match="shape"):
        watershed_instances(mask, prob=prob[:10])
