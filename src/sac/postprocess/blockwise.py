"""Seeded-watershed instances of a large mask in blocks, with bounded memory and the single-pass result.

The single-pass :func:`~sac.postprocess.watershed.watershed_instances` keeps float64/int64 working arrays of the
whole image (distance map, h-maxima reconstruction, watershed queue): ~80 bytes per pixel, 8 GB for a
10,000 x 10,000 mask. Here the mask is cut into ``block x block`` cores; each core is processed inside a window
that adds ``halo`` pixels on every side, so working memory is ``~80 * (block + 2 * halo)^2`` bytes (~0.4 GB at the
defaults) on top of the ``int32 [H, W]`` result and the ``bool [H, W]`` mask.

Why the result matches the single pass (same nuclei; ids in another order). The watershed of an 8-connected mask
component ``C`` depends only on (a) ``C``'s pixels, (b) the distance transform of pixels within the Gaussian's
radius (4 px at sigma 1) of ``C``, whose nearest background pixel is itself within ~5 px, and (c) the seed points
inside ``C``: everything within ``MARGIN`` (16) px of ``C``'s bounding box. Ownership is therefore decided per
*component*, not per watershed object: each component belongs to the block whose core contains the first pixel of
its bounding box (top-left corner: exactly one block), and that block's window takes all of the component's
nuclei if the box plus ``MARGIN`` lies inside the window (sides on the image border need no margin, the
single pass sees the same border). Every nucleus is then written once, whole, by one block; a nucleus crossing a
seam comes from the block that owns its component. ``halo`` must exceed the nucleus size plus ``MARGIN``.
Same seeds, hence the same number of nuclei per component; the border between two touching nuclei can still
differ by a few pixels where the flood has exact priority ties, which skimage's queue breaks by its internal
layout (it depends on the whole array): measured 1 nucleus in ~4,000 (tests/test_inference_blockwise.py).

Components too large for their block's window (e.g. a merged blob that runs through a seam for more than
``halo - MARGIN`` px) are processed alone, in a crop of their bounding box plus ``MARGIN`` -- again the single-pass
result -- as long as the crop has at most ``max_crop`` pixels (default ``4 * (block + 2 * halo)^2``, same order of
memory as a window). Beyond that a component is not a nucleus but a failed prediction (e.g. a whole tissue region
above threshold): it is kept as **one connected-component object** (no watershed split), documented in
docs/segment.md.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sac.postprocess.watershed import watershed_instances

MARGIN = 16  # px around a component that must be inside the window: Gaussian radius 4 + distance reach ~5, doubled
EIGHT = np.ones((3, 3), dtype=bool)


def block_grid(height: int, width: int, block: int) -> list[tuple[int, int, int, int]]:
    """Row-major cores ``(y0, y1, x0, x1)`` of side ``block`` (the last row/column shorter) covering the image."""
    return [(y, min(y + block, height), x, min(x + block, width))
            for y in range(0, height, block) for x in range(0, width, block)]


def _fits(box: tuple[slice, slice], win: tuple[int, int, int, int], shape: tuple[int, int]) -> bool:
    """True if the component box plus MARGIN lies inside the window (no margin needed on an image border)."""
    (rs, cs), (wy0, wy1, wx0, wx1) = box, win
    return ((wy0 == 0 or rs.start - MARGIN >= wy0) and (wy1 == shape[0] or rs.stop + MARGIN <= wy1)
            and (wx0 == 0 or cs.start - MARGIN >= wx0) and (wx1 == shape[1] or cs.stop + MARGIN <= wx1))


def _local_points(points: np.ndarray | None, y0: int, x0: int) -> np.ndarray | None:
    """Seed points ``[N, 2]`` (x, y) in window coordinates; the watershed itself drops those outside the window."""
    if points is None or len(points) == 0:
        return None
    return np.asarray(points, dtype=np.float64) - [x0, y0]


def _write_owned(labels, win, sub_labels, owned, next_id: int) -> int:
    """Copy the nuclei of the ``owned`` components (negative ids in ``labels``) from ``sub_labels`` into ``labels``
    with new ids ``next_id + 1 ...``; returns the last id used."""
    y0, y1, x0, x1 = win
    view = labels[y0:y1, x0:x1]  # a view: written in place
    sel = np.isin(view, -owned)
    objs = sub_labels[sel]
    ids, inverse = np.unique(objs, return_inverse=True)
    new = np.zeros(len(ids), dtype=np.int32)
    nz = ids > 0  # 0 = a piece below min_area inside an owned component: background, as in the single pass
    new[nz] = np.arange(next_id + 1, next_id + 1 + int(nz.sum()), dtype=np.int32)
    view[sel] = new[inverse.ravel()]
    return next_id + int(nz.sum())


def blockwise_watershed(
    mask: np.ndarray,
    *,
    min_area: int = 10,
    points: np.ndarray | None = None,
    prob: np.ndarray | None = None,
    distance: np.ndarray | None = None,
    block: int = 2048,
    halo: int = 128,
    max_crop: int | None = None,
    **watershed_kw,
) -> np.ndarray:
    """Watershed instances of ``mask bool [H, W]`` computed block by block -> ``int32 [H, W]`` ids 1..N.

    Same foreground and nuclei as :func:`~sac.postprocess.watershed.watershed_instances` (borders between touching
    nuclei up to flood ties, see the module docstring; ids in block order, not the single pass's order)
    except for components larger than ``max_crop`` pixels of bounding box (+ margin),
    which stay one object each. ``points float [N, 2]`` (x, y) are extra seeds; ``prob float [H, W]`` weights the
    watershed and ``distance float [H, W]`` replaces its distance map (both sliced with each window);
    ``watershed_kw`` (``h``,
    ``sigma``) go to the watershed. ``halo`` must be > ``MARGIN``; nuclei up to ``halo - MARGIN`` px beyond a
    core are handled by their block, larger components by their own crop.
    """
    if halo <= MARGIN:
        raise ValueError(f"halo must be > {MARGIN} px, got {halo}")
    mask = np.asarray(mask, dtype=bool)
    H, W = mask.shape
    max_crop = 4 * (block + 2 * halo) ** 2 if max_crop is None else max_crop
    # Components as *negative* ids in the output array itself: one int32 [H, W] holds both the pending components
    # (< 0) and the finished nuclei (> 0), so no second full-size label image is needed.
    labels, n_comp = ndi.label(mask, structure=EIGHT, output=np.int32)
    if n_comp == 0:
        return labels
    np.negative(labels, out=labels)

    def split(win: tuple[int, int, int, int]) -> np.ndarray:
        """The single-pass watershed on one window (its mask, points and probability)."""
        y0, y1, x0, x1 = win
        return watershed_instances(mask[y0:y1, x0:x1], min_area=min_area, points=_local_points(points, y0, x0),
                                   prob=None if prob is None else prob[y0:y1, x0:x1],
                                   distance=None if distance is None else distance[y0:y1, x0:x1], **watershed_kw)

    boxes = _boxes(labels, n_comp)
    starts = np.array([(b[0].start // block, b[1].start // block) for b in boxes], dtype=np.int64)
    n_bx = -(-W // block)
    owner = starts[:, 0] * n_bx + starts[:, 1]  # index of the core holding each box's top-left pixel
    order = np.argsort(owner, kind="stable")
    bounds = np.searchsorted(owner[order], np.arange(len(block_grid(H, W, block)) + 1))
    next_id = 0
    leftovers: list[int] = []
    for b, (y0, y1, x0, x1) in enumerate(block_grid(H, W, block)):
        comps = order[bounds[b] : bounds[b + 1]]  # 0-based component indices owned by this core
        if len(comps) == 0:
            continue
        win = (max(0, y0 - halo), min(H, y1 + halo), max(0, x0 - halo), min(W, x1 + halo))
        fits = np.array([_fits(boxes[c], win, (H, W)) for c in comps], dtype=bool)
        leftovers.extend(comps[~fits].tolist())
        if not fits.any():
            continue
        next_id = _write_owned(labels, win, split(win), comps[fits] + 1, next_id)
    for c in leftovers:  # components larger than the halo: alone in their own crop (module docstring)
        rs, cs = boxes[c]
        win = (max(0, rs.start - MARGIN), min(H, rs.stop + MARGIN), max(0, cs.start - MARGIN),
               min(W, cs.stop + MARGIN))
        if (win[1] - win[0]) * (win[3] - win[2]) <= max_crop:
            sub = split(win)
        else:  # a failed prediction, not a nucleus: one connected-component object
            sub = (labels[win[0] : win[1], win[2] : win[3]] == -(c + 1)).view(np.uint8)
            if int(np.count_nonzero(sub)) < max(min_area, 1):
                sub = np.zeros_like(sub)
        next_id = _write_owned(labels, win, sub, np.array([c + 1]), next_id)
    return labels


def _boxes(labels: np.ndarray, n: int) -> list[tuple[slice, slice]]:
    """Bounding boxes of the components stored as negative ids ``-1..-n`` (band by band: no full-size copy)."""
    lo = np.full((n, 2), np.iinfo(np.int64).max, dtype=np.int64)
    hi = np.full((n, 2), -1, dtype=np.int64)
    band = 1024
    for y in range(0, labels.shape[0], band):
        part = -labels[y : y + band]
        for i, sl in enumerate(ndi.find_objects(part, max_label=n)):
            if sl is None:
                continue
            lo[i] = np.minimum(lo[i], (sl[0].start + y, sl[1].start))
            hi[i] = np.maximum(hi[i], (sl[0].stop + y, sl[1].stop))
    return [(slice(int(a), int(c)), slice(int(b), int(d))) for (a, b), (c, d) in zip(lo, hi, strict=True)]
