"""From a semantic nucleus mask to one label per nucleus: the one entry point, :func:`make_instances`.

The methods live in :mod:`sac.postprocess.watershed` (single pass: :func:`components`, :func:`watershed_instances`)
and :mod:`sac.postprocess.blockwise` (the same watershed block by block, for masks too large for one pass); they
are re-exported here so callers import one module.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from sac.postprocess.blockwise import blockwise_watershed
from sac.postprocess.watershed import DISTANCE_H, DISTANCE_SIGMA, components, watershed_instances

__all__ = ["BLOCK", "BLOCKWISE_ABOVE", "DISTANCE_H", "DISTANCE_SIGMA", "HALO", "components", "make_instances",
           "watershed_instances"]


# Above this many pixels the watershed runs block by block (sac.postprocess.blockwise): its single-pass working
# arrays cost ~80 bytes/pixel (8 GB for 10,000 x 10,000). Below it the single pass is kept unchanged.
BLOCKWISE_ABOVE = 4096 * 4096
BLOCK = 2048
HALO = 128


def make_instances(
    mask: np.ndarray,
    method: str,
    *,
    min_area: int,
    points: np.ndarray | None = None,
    prob: np.ndarray | None = None,
    distance: np.ndarray | None = None,
    h: float | None = None,
    block: int = BLOCK,
    halo: int = HALO,
    blockwise_above: int = BLOCKWISE_ABOVE,
) -> np.ndarray:
    """Dispatch on ``InferenceConfig.instances``: ``watershed`` | ``components`` | ``none`` (= components).

    ``mask bool [H, W]`` -> ``int32 [H, W]`` ids 1..N; ``prob float [H, W]`` (optional) weights the watershed,
    ``distance float [H, W]`` (optional, a distance head's map) replaces its distance transform; ``h`` is the
    watershed's marker height (None: :func:`watershed_instances`' default).
    Masks with more than ``blockwise_above`` pixels go
    through :func:`sac.postprocess.blockwise.blockwise_watershed` (``block`` px cores + ``halo`` px) or, for
    components, an in-place renumbering; both give the same partition as the single pass (ids may be ordered
    differently for the watershed).
    """
    large = mask.size > blockwise_above
    if method == "watershed":
        if large:
            return blockwise_watershed(mask, min_area=min_area, points=points, prob=prob, distance=distance,
                                       block=block, halo=halo, h=h)
        return watershed_instances(mask, min_area=min_area, points=points, prob=prob, distance=distance, h=h)
    if large:
        return _components_inplace(mask, min_area)
    return components(mask, min_area=min_area)


def _components_inplace(mask: np.ndarray, min_area: int) -> np.ndarray:
    """:func:`components` without its int64 ``[H, W]`` temporaries: ids renumbered in place (same result)."""
    labels, n = ndi.label(mask, structure=np.ones((3, 3), dtype=bool), output=np.int32)
    if n == 0:
        return labels
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    keep = areas >= max(min_area, 1)
    keep[0] = False
    lut = np.zeros(n + 1, dtype=np.int32)
    lut[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    for y in range(0, labels.shape[0], 1024):  # banded take: no full-size temporary
        band = labels[y : y + 1024]
        np.take(lut, band, out=band)
    return labels
