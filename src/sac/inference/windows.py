"""Model windows of the :class:`~sac.inference.editor.Editor`: which cached image embedding a click uses, and the
mapping between image pixels and that window's model input.

The automatic segmentation embeds every tile of the fixed grid once (``Segmenter.segment(keep_embeddings=True)``).
A click (or a box, or the points of a refinement) uses the cached window in which it lies farthest from the window
border; sides that coincide with the image border do not count (the nucleus cannot continue past the image). When
that distance is below :data:`MARGIN` model pixels, or no cached window covers the click (SAM was skipped there),
a new window *centred* on the click is embedded (clamped to the image) and cached too, so a click near a tile seam
sees its whole nucleus and no encoder runs per click otherwise.

Why 35 model pixels: at the models' scale (MoNuSeg 40x at scale 1; DSB) the largest extent of a ground-truth nucleus
has median 23 px, 90th percentile 40-45 px and 99th percentile 63-77 px (30 MoNuSeg training images, 16,958 nuclei;
67 DSB val images, measured for this module). A click at a nucleus's interior sees the p99 nucleus's far edge
within ~32-39 px, so a 35 px margin keeps almost every clicked nucleus inside the window. It is also half the
overlap of the grid on a 1000 px image at scale 1 (70 px), so no click there waits for the encoder: at 40 px, 11 of
200 clicks did, each an encoder pass (0.7 s on the AVX2 machine, p95 latency 728 ms; docs/results.md).
The grid's tiles overlap by >= 32 px, so most clicks find a cached window with that margin on other image sizes too.

Embeddings are stored as float16 (``[256, 64, 64]`` for LiteMedSAM: 2 MiB each; the 25 grid windows of a
1000 x 1000 image at scale 1 take 50 MiB); at most :data:`MAX_EXTRA` extra (click-centred) windows are kept,
least recently used dropped first.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi

from sac.inference.tiling import Tile
from sac.models.refiner import refine_crop

MARGIN = 35  # model pixels, see the module docstring
MAX_EXTRA = 64  # click-centred windows kept besides the grid (2 MiB each for LiteMedSAM)
_EIGHT = np.ones((3, 3), dtype=bool)


def resample_window(region: np.ndarray, size: int, tile_model: int, input_size: int) -> np.ndarray:
    """One map's window region ``float32 [h, w]`` (h, w <= size) -> the model input grid ``float32 [S, S]``
    exactly as :meth:`Segmenter.window_input` builds an image window: reflect-padded to ``size``, resampled to the
    model-space tile ``tile_model``, reflect-padded to ``input_size``."""
    h, w = region.shape
    if h < size or w < size:
        region = np.pad(region, ((0, size - h), (0, size - w)), mode="reflect" if min(h, w) > 1 else "edge")
    t = torch.from_numpy(np.ascontiguousarray(region, dtype=np.float32))[None, None]
    if size != tile_model:
        t = F.interpolate(t, size=(tile_model,) * 2, mode="bilinear", antialias=True, align_corners=False)
    if tile_model < input_size:
        pad = input_size - tile_model
        t = F.pad(t, (0, pad, 0, pad), mode="reflect" if pad < tile_model else "replicate")
    return t[0, 0].numpy()



def pick_component(mask: np.ndarray, seeds, near: float) -> np.ndarray | None:
    """The 8-connected piece of ``mask bool [h, w]`` holding the most ``seeds`` ((x, y) pixels; ties: the larger
    piece); if none holds one, the piece nearest the first seed within ``near`` pixels; else None."""
    lab, n = ndi.label(mask, structure=_EIGHT)
    if n == 0:
        return None
    h, w = mask.shape
    hits = [int(lab[min(max(round(y), 0), h - 1), min(max(round(x), 0), w - 1)]) for x, y in seeds]
    hits = [k for k in hits if k]
    if hits:
        areas = np.bincount(lab.ravel())
        return lab == max(set(hits), key=lambda k: (hits.count(k), areas[k]))
    ys, xs = np.nonzero(lab)
    d2 = (xs - seeds[0][0]) ** 2 + (ys - seeds[0][1]) ** 2
    j = int(np.argmin(d2))
    return lab == lab[ys[j], xs[j]] if d2[j] <= near**2 else None


def honour_clicks(mask: np.ndarray, clicks, prob: np.ndarray | None, radius: float = 2.0) -> np.ndarray:
    """``mask bool [h, w]`` made to obey its clicks ``[(x, y, label), ...]`` (window pixels; 1 nucleus, 0 not).

    A disc of ``radius`` px around each negative click leaves the mask, so a negative click is never inside the
    result; what else it removes is the decoder's (and the click refiner's) answer. A positive click the mask misses
    adds its 8-connected part of the UNet's ``prob > 0.5`` (``prob float [h, w]`` in [0, 1], None: no map) outside
    those discs, or a disc of ``radius`` px where the UNet sees no nucleus, so a positive click is always inside.
    Why: the single-nucleus head alone honoured few correction clicks (docs/results.md), and a click the result
    ignores is a click that does not count. Only a disc for a negative click: the annotator clicks a thin wrong rim of
    a nearly right mask, and cutting all that is nearer to it than to a positive click took half the nucleus away
    (docs/results.md, "Negative clicks")."""
    pts = np.asarray(clicks, dtype=np.float64).reshape(-1, 3)
    h, w = mask.shape
    yy, xx = np.mgrid[0:h, 0:w]

    def nearest(sel: np.ndarray) -> np.ndarray:
        if not sel.any():
            return np.full((h, w), np.inf)
        return np.min([(xx - x) ** 2 + (yy - y) ** 2 for x, y, _ in pts[sel]], axis=0)

    pos, neg = pts[:, 2] == 1, pts[:, 2] == 0
    side = nearest(neg) > radius**2
    out = mask & side
    for x, y, _ in pts[pos]:
        r, c = min(max(round(y), 0), h - 1), min(max(round(x), 0), w - 1)
        if out[r, c]:
            continue
        region = None
        if prob is not None and prob[r, c] > 0.5:
            lab, _ = ndi.label((prob > 0.5) & side, structure=_EIGHT)
            region = lab == lab[r, c] if lab[r, c] else None
        if region is None:
            region = ((xx - x) ** 2 + (yy - y) ** 2 <= radius**2) & side
        out |= region
    return out


def box_mask(shape: tuple[int, int], box, clicks) -> np.ndarray:
    """``bool [h, w]``: the box ``(x0, y0, x1, y1)`` (window pixels, inclusive) grown to hold the positive clicks
    ``[(x, y, label), ...]``. A boxed nucleus, or the corrections of a clicked one (its first mask's box), stay in
    it unless a positive click says otherwise: the corrections' fused mask otherwise spreads into neighbours
    (docs/results.md)."""
    pos = np.array([(x, y) for x, y, lab in clicks if lab == 1] + [box[:2], box[2:]], np.float64)
    (x0, y0), (x1, y1) = pos.min(0), pos.max(0)
    out = np.zeros(shape, bool)
    out[max(round(y0), 0) : max(round(y1) + 1, 0), max(round(x0), 0) : max(round(x1) + 1, 0)] = True
    return out


def largest_component(mask: np.ndarray) -> np.ndarray | None:
    """The largest 8-connected piece of ``mask bool [h, w]`` (None if empty)."""
    lab, n = ndi.label(mask, structure=_EIGHT)
    return None if n == 0 else lab == int(np.argmax(np.bincount(lab.ravel())[1:])) + 1

class WindowCache:
    """Embedded model windows of one image, keyed by :class:`Tile` (original-image pixels).

    ``segmenter``: the :class:`~sac.inference.segmenter.Segmenter` that segmented the image (its engine encodes
    new windows, its ``window_input`` builds their input); ``source``: the image as a reader source; ``scale``: the
    scale the image was segmented at; ``embeddings``: ``{Tile: float [256, h, w]}`` of the grid (any dtype).
    """

    def __init__(self, segmenter, source, scale: float, embeddings: dict):
        self.segmenter = segmenter
        self.source = source
        self.H, self.W = source.shape
        self.size = segmenter.window(scale)[0]
        self.tile_model = segmenter.tile_model
        self.input_size = segmenter.input_size
        self.f = self.tile_model / self.size  # model pixels per image pixel
        self.margin = MARGIN / self.f  # image pixels
        self.grid: dict[Tile, torch.Tensor] = {t: e.detach().to("cpu", torch.float16) for t, e in embeddings.items()}
        self.extra: OrderedDict[Tile, torch.Tensor] = OrderedDict()
        self.encoded = 0  # windows embedded after the automatic run (for tests and benchmarks)

    def __len__(self) -> int:
        return len(self.grid) + len(self.extra)

    def nbytes(self) -> int:
        return sum(e.numel() * e.element_size() for e in (*self.grid.values(), *self.extra.values()))

    # ------------------------------------------------------------------ choosing a window
    def clearance(self, tile: Tile, x0: float, y0: float, x1: float, y1: float) -> float:
        """Smallest distance (image pixels) from the box ``x0..x1, y0..y1`` (pixel coordinates, inclusive) to a
        side of ``tile`` that lies inside the image; ``-inf`` if the box is not inside the tile, ``inf`` if every
        side is an image border."""
        if x0 < tile.x0 or y0 < tile.y0 or x1 > tile.x1 - 1 or y1 > tile.y1 - 1:
            return -math.inf
        d = math.inf
        if tile.x0 > 0:
            d = min(d, x0 - tile.x0 + 0.5)
        if tile.y0 > 0:
            d = min(d, y0 - tile.y0 + 0.5)
        if tile.x0 + tile.size < self.W:
            d = min(d, tile.x0 + tile.size - x1 - 0.5)
        if tile.y0 + tile.size < self.H:
            d = min(d, tile.y0 + tile.size - y1 - 0.5)
        return d

    def centred(self, cx: float, cy: float) -> Tile:
        """The window of the grid's size centred on ``(cx, cy)``, shifted to stay inside the image."""
        x0 = int(min(max(round(cx + 0.5 - self.size / 2), 0), max(self.W - self.size, 0)))
        y0 = int(min(max(round(cy + 0.5 - self.size / 2), 0), max(self.H - self.size, 0)))
        return Tile(y0, x0, min(y0 + self.size, self.H), min(x0 + self.size, self.W), self.size)

    def window_for(self, x0: float, y0: float, x1: float | None = None, y1: float | None = None
                   ) -> tuple[Tile, torch.Tensor]:
        """(window, its embedding ``float16 [256, h, w]``) for a click ``(x0, y0)`` or the box up to ``(x1, y1)``.

        The cached window with the largest :meth:`clearance` if that is at least :attr:`margin`; otherwise a
        window centred on the box, embedded now (and cached) unless it was embedded before.
        """
        x1 = x0 if x1 is None else x1
        y1 = y0 if y1 is None else y1
        best, best_d = None, -math.inf
        for tile in (*self.grid, *self.extra):
            d = self.clearance(tile, x0, y0, x1, y1)
            if d > best_d:
                best, best_d = tile, d
        if best is not None and best_d >= self.margin:
            return best, self._get(best)
        tile = self.centred((x0 + x1) / 2, (y0 + y1) / 2)
        if tile in self.grid or tile in self.extra:
            return tile, self._get(tile)
        return tile, self._encode(tile)

    def embedding(self, tile: Tile) -> torch.Tensor:
        """The embedding of a window chosen before (embedded again if it was dropped from the cache)."""
        return self._get(tile) if tile in self.grid or tile in self.extra else self._encode(tile)

    def _get(self, tile: Tile) -> torch.Tensor:
        if tile in self.extra:
            self.extra.move_to_end(tile)
            return self.extra[tile]
        return self.grid[tile]

    @torch.inference_mode()
    def _encode(self, tile: Tile) -> torch.Tensor:
        seg = self.segmenter
        batch = seg.window_input(self.source, tile)[None].to(seg.device)
        emb = seg.engine.encode(batch)[0].to("cpu", torch.float16)
        self.encoded += 1
        self.extra[tile] = emb
        while len(self.extra) > MAX_EXTRA:
            self.extra.popitem(last=False)
        return emb

    # ------------------------------------------------------------------ coordinates and maps
    def to_model(self, tile: Tile, xy: np.ndarray) -> np.ndarray:
        """Image pixel coordinates ``[N, 2]`` (x, y) -> model-input coordinates of ``tile`` (pixel centres map
        onto pixel centres, as for the automatic prompts)."""
        xy = np.asarray(xy, np.float32).reshape(-1, 2)
        origin = np.array([tile.x0, tile.y0], np.float32)
        return ((xy - origin + 0.5) * self.f - 0.5).astype(np.float32)

    def model_map(self, tile: Tile, full: np.ndarray) -> np.ndarray:
        """A full-image map ``float [H, W]`` -> its window on the model input grid ``float32 [S, S]``."""
        region = np.asarray(full[tile.y0 : tile.y1, tile.x0 : tile.x1], dtype=np.float32)
        return resample_window(region, tile.size, self.tile_model, self.input_size)

    def content(self, tile: Tile) -> tuple[int, int]:
        """Rows, columns of ``tile``'s model grid that show the image (the rest is padding)."""
        return (min(math.ceil((tile.y1 - tile.y0) * self.f), self.tile_model),
                min(math.ceil((tile.x1 - tile.x0) * self.f), self.tile_model))

    def model_image(self, tile: Tile) -> torch.Tensor:
        """``tile``'s model input ``float32 [3, S, S]`` in [0, 1], as the encoder saw it."""
        return self.segmenter.window_input(self.source, tile)

    def from_model(self, tile: Tile, logits: np.ndarray) -> np.ndarray:
        """Model output ``float [S, S]`` -> the window's image pixels ``float32 [y1 - y0, x1 - x0]`` (the model
        tile cropped from the padding, resampled to the window size, cropped at the image border)."""
        t = torch.as_tensor(np.ascontiguousarray(logits[: self.tile_model, : self.tile_model]), dtype=torch.float32)
        if self.size != self.tile_model:
            t = F.interpolate(t[None, None], size=(self.size,) * 2, mode="bilinear", align_corners=False)[0, 0]
        return t[: tile.y1 - tile.y0, : tile.x1 - tile.x0].numpy()


def refine_logits(windows: WindowCache, engine, tile: Tile, logits: np.ndarray, unet: np.ndarray | None,
                  points: np.ndarray) -> np.ndarray:
    """The interactive head's ``logits float32 [S, S]`` on ``tile``'s model grid, corrected by the engine's click
    refiner (:mod:`sac.models.refiner`) on the crop :func:`~sac.models.refiner.refine_crop` centres on the first of
    ``points float [N, 3]`` (image pixels, label 1 / 0) inside the grid's image part; ``unet``: the UNet's logits
    ``[S, S]`` (or None). Outside the crop the head's logits are kept."""
    xy = windows.to_model(tile, points[:, :2])
    h, w = windows.content(tile)
    x0, y0, size = refine_crop(logits[:h, :w] > 0, xy)
    sl = np.s_[y0 : y0 + size, x0 : x0 + size]
    clicks = torch.from_numpy(np.column_stack([xy - [x0, y0], points[:, 2]]).astype(np.float32))
    out = logits.copy()
    out[sl] = engine.refine_object(windows.model_image(tile)[(slice(None), *sl)], torch.from_numpy(logits[sl]),
                                   None if unet is None else torch.from_numpy(unet[sl]), clicks).numpy()
    return out
