"""Simulated clicks on one object (nucleus), SAM-style: where an annotator clicks, and where the next click goes.

Used to train the interactive head (``sac.training.interactive``, random clicks biased to the interior) and by
the "one nucleus from clicks" benchmark (deterministic clicks). Every mask is ``bool [H, W]``; points are
``(x, y)`` integer pixel indices (SAM's prompt encoder adds the half-pixel itself).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def interior_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of every pixel of ``mask`` to the nearest pixel outside it, the image border counting
    as outside (a nucleus cut by the border has its interior away from the cut) -> ``float64 [H, W]``, 0 outside."""
    return ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]


def interior_point(mask: np.ndarray, rng: np.random.Generator | None = None, power: float = 2.0
                   ) -> tuple[int, int]:
    """A pixel ``(x, y)`` of non-empty ``mask``: the most interior one (maximum of :func:`interior_distance`,
    first in raster order on ties) when ``rng`` is None, else one drawn with probability ``~ distance ** power``
    (clicks land inside, mostly away from the rim, as a person's do). Raises ``ValueError`` on an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ValueError("interior_point of an empty mask")
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    dist = interior_distance(mask[y0:y1, x0:x1])  # bounding box only: cheap on a big image
    if rng is None:
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    else:
        iy, ix = np.nonzero(dist)
        w = dist[iy, ix] ** power
        j = int(rng.choice(len(iy), p=w / w.sum()))
        y, x = iy[j], ix[j]
    return int(x + x0), int(y + y0)


def correction_click(pred: np.ndarray, target: np.ndarray) -> tuple[int, int, int] | None:
    """The next click of a simulated annotator: the most interior pixel of the largest error region (8-connected
    components of missed ``target & ~pred`` and extra ``pred & ~target`` pixels) -> ``(x, y, label)`` with
    label 1 (positive: a missed region) or 0 (negative: an extra one); None when ``pred == target``."""
    best, best_area, best_label = None, 0, 1
    for region, label in ((target & ~pred, 1), (pred & ~target, 0)):
        comps, n = ndimage.label(region, structure=np.ones((3, 3), bool))
        if n == 0:
            continue
        areas = np.bincount(comps.ravel())[1:]
        j = int(np.argmax(areas))
        if areas[j] > best_area:
            best, best_area, best_label = comps == j + 1, int(areas[j]), label
    if best is None:
        return None
    x, y = interior_point(best)
    return x, y, best_label


def box_of(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Tight bounding box ``(x0, y0, x1, y1)`` of non-empty ``mask`` in pixel indices (x1, y1 inclusive)."""
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())


def jittered_box(mask: np.ndarray, rng: np.random.Generator, frac: float = 0.1, max_px: float = 10.0
                 ) -> tuple[float, float, float, float]:
    """:func:`box_of` with each side moved by ``N(0, frac * side length)`` pixels, clipped to ``max_px`` (SAM's
    box noise) and to the image; the box keeps at least 1 px per side."""
    x0, y0, x1, y1 = box_of(mask)
    h, w = mask.shape
    sx, sy = frac * (x1 - x0 + 1), frac * (y1 - y0 + 1)
    d = np.clip(rng.normal(0.0, 1.0, 4) * (sx, sy, sx, sy), -max_px, max_px)
    x0, x1 = np.clip(x0 + d[0], 0, w - 1), np.clip(x1 + d[2], 0, w - 1)
    y0, y1 = np.clip(y0 + d[1], 0, h - 1), np.clip(y1 + d[3], 0, h - 1)
    return float(min(x0, x1 - 1)), float(min(y0, y1 - 1)), float(max(x1, x0 + 1)), float(max(y1, y0 + 1))


def mask_iou(pred: np.ndarray, target: np.ndarray) -> float:
    """Intersection over union of two ``bool`` masks (1.0 when both are empty)."""
    union = np.count_nonzero(pred | target)
    return 1.0 if union == 0 else np.count_nonzero(pred & target) / union


__all__ = ["interior_distance", "interior_point", "correction_click", "box_of", "jittered_box", "mask_iou"]
