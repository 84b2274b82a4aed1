"""Sliding-window geometry and weighted stitching for whole images of any size.

Tiles are laid out in *original-image* pixels: a window of ``round(tile / scale)`` pixels is read, resampled to the
model's ``tile x tile`` input and its outputs resampled back onto the same window. Reading and writing the same
window keeps stitching exact for any ``--scale`` (no sub-pixel drift between tiles).

Overlapping tiles are blended with a weight window that ramps linearly over the overlap and is flat (1) in the
centre, so each output pixel is a convex combination of the tiles covering it: seams vanish and a model that
returns its input gives the input back exactly (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Tile:
    """One window: rows ``y0:y1``, columns ``x0:x1`` of the original image (``y1 - y0 <= size``)."""

    y0: int
    x0: int
    y1: int
    x1: int
    size: int  # side of the window in original pixels (the region is padded up to it at image borders)


def positions(length: int, size: int, overlap: int) -> list[int]:
    """Start offsets of windows of ``size`` covering ``[0, length)`` with at least ``overlap`` shared pixels.

    The fewest windows that respect the minimum overlap are spread evenly, so the first starts at 0 and the last
    ends exactly at ``length``. ``length <= size`` gives one window at 0 (the region is padded).
    """
    if length <= size:
        return [0]
    overlap = min(overlap, size - 1)
    n = math.ceil((length - overlap) / (size - overlap))
    n = max(n, 2)
    return [round(i * (length - size) / (n - 1)) for i in range(n)]


def make_tiles(height: int, width: int, size: int, overlap: int) -> list[Tile]:
    """Row-major list of windows of ``size`` (original pixels) covering an ``height x width`` image."""
    tiles = []
    for y in positions(height, size, overlap):
        for x in positions(width, size, overlap):
            tiles.append(Tile(y, x, min(y + size, height), min(x + size, width), size))
    return tiles


def weight_window(size: int, ramp: int) -> np.ndarray:
    """``float32 [size, size]`` blending weights: linear ramp over ``ramp`` pixels at each edge, 1 inside.

    The minimum is kept above zero so pixels at the image border (covered by one tile only) stay defined.
    """
    ramp = max(1, min(ramp, size // 2))
    idx = np.arange(size, dtype=np.float32)
    edge = np.minimum(idx + 1, size - idx)
    w1 = np.clip(edge / (ramp + 1), 1e-3, 1.0)
    return np.outer(w1, w1).astype(np.float32)


class Stitcher:
    """Accumulate weighted tile outputs into preallocated full-size maps.

    ``channels`` maps are kept (e.g. SAC mask probability and UNet probability): memory is
    ``4 * (channels + 1) * H * W`` bytes (1.2 GB for two maps of a 10,000 x 10,000 image).
    """

    def __init__(self, height: int, width: int, channels: int, window: np.ndarray):
        self.sums = np.zeros((channels, height, width), dtype=np.float32)
        self.weight = np.zeros((height, width), dtype=np.float32)
        self.window = window

    def add(self, tile: Tile, maps: np.ndarray) -> None:
        """Add ``maps float32 [channels, size, size]`` (the whole padded window) for ``tile``."""
        h, w = tile.y1 - tile.y0, tile.x1 - tile.x0
        wnd = self.window[:h, :w]
        self.sums[:, tile.y0 : tile.y1, tile.x0 : tile.x1] += maps[:, :h, :w] * wnd
        self.weight[tile.y0 : tile.y1, tile.x0 : tile.x1] += wnd

    def result(self) -> np.ndarray:
        """``float32 [channels, H, W]``: the weighted mean (computed in place, the sums are consumed)."""
        np.divide(self.sums, np.maximum(self.weight, 1e-12), out=self.sums)
        self.weight = None
        return self.sums
