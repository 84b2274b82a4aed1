"""Whole-slide images (SVS, NDPI, MRXS, OME-TIFF, tiled pyramidal TIFF) as region sources for `sac segment`.

:class:`SlideSource` has the interface of the sources in :mod:`sac.inference.reader` (``read(y0, y1, x0, x1)``
-> ``uint8 [h, w, 3]``, ``shape``, ``full()`` for small regions only, ``close()``), in the pixels of the
*analysis level*: the pyramid level chosen from the slide's microns per pixel so that, after the segmenter's
resampling by ``scale``, nuclei have the size the model was trained on (:func:`choose_level`). Coordinates of
``read`` are relative to the region of interest (``roi``, level-0 pixels ``x, y, w, h``); :meth:`to_level0` maps
them back for the outputs (QuPath expects level-0 pixels).

Reader: ``tiffslide`` (pure Python over tifffile; SVS, NDPI, SCN, OME-TIFF, generic tiled TIFF). ``openslide``
(openslide-python + openslide-bin) is used only for the formats tiffslide cannot read (MRXS, VMS/VMU), the one
thing it adds here. Both expose the same ``OpenSlide`` API (tiffslide is a drop-in replacement).

Tissue: :func:`tissue_mask` thresholds the HSV saturation of a thumbnail (glass is grey-white, stained tissue is
coloured) at Otsu's threshold, capped at ``OTSU_CAP`` so a slide that is all tissue is not split in two.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sac.data.io import SLIDE_SUFFIXES
from sac.errors import SACError

OPENSLIDE_ONLY = (".mrxs", ".vms", ".vmu")  # formats tiffslide cannot read
TIFF_SUFFIXES = (".tif", ".tiff")
MPP_KEYS = (("tiffslide.mpp-x", "tiffslide.mpp-y"), ("openslide.mpp-x", "openslide.mpp-y"))
FULL_MAX_PIXELS = 8192 * 8192  # full() refuses more: the whole analysis level would not fit in memory
THUMBNAIL_SIDE = 2048  # longest side of the thumbnail the tissue mask is computed on
OTSU_CAP = 0.1  # saturation: glass stays below ~0.05, H&E tissue above ~0.15 (thumbnails of the MoNuSeg crops)


def is_slide(path: str | Path) -> bool:
    """True for a whole-slide format, or a TIFF with more than one pyramid level (tiffslide's view of it)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix not in TIFF_SUFFIXES or not path.is_file():
        return False
    try:
        import tiffslide

        with tiffslide.TiffSlide(path) as s:
            return s.level_count > 1
    except Exception:  # not a slide to tiffslide: reader.open_image reports what is wrong with the file
        return False


def open_slide(path: str | Path):
    """``tiffslide.TiffSlide`` (or ``openslide.OpenSlide`` for MRXS/VMS/VMU); SACError naming the file if unreadable."""
    path = Path(path)
    if not path.is_file():
        raise SACError(f"{path}: no such file")
    try:
        if path.suffix.lower() in OPENSLIDE_ONLY:
            import openslide

            return openslide.OpenSlide(str(path))
        import tiffslide

        return tiffslide.TiffSlide(path)
    except Exception as exc:  # both readers raise many types for corrupt or foreign files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SACError(f"{path}: cannot read slide ({msg})") from None


def slide_mpp(slide) -> float | None:
    """Level-0 microns per pixel recorded in the slide (mean of x and y), or None."""
    props = slide.properties
    for kx, ky in MPP_KEYS:
        try:
            x, y = float(props.get(kx) or "nan"), float(props.get(ky) or props.get(kx) or "nan")
        except (TypeError, ValueError):
            continue
        if math.isfinite(x) and math.isfinite(y) and x > 0 and y > 0:
            return (x + y) / 2
    return None


def choose_level(downsamples, mpp: float, model_mpp: float) -> tuple[int, float]:
    """Pyramid level and segmenter scale for a slide at ``mpp`` (level 0) and a model trained at ``model_mpp``.

    The coarsest level that still needs no upsampling beyond the snap range of
    :func:`sac.inference.scale.scale_from_mpp` (a level at most 1.25x coarser than the model's resolution), then the
    scale that brings it to the model's resolution (1.0 within 0.8..1.25). Reading a coarser level is much cheaper
    than reading level 0 and downsampling.
    """
    from sac.inference.scale import MPP_SNAP, scale_from_mpp

    level = 0
    for i, ds in enumerate(downsamples):
        if mpp * float(ds) / model_mpp <= MPP_SNAP[1] and float(ds) >= float(downsamples[level]):
            level = i
    return level, scale_from_mpp(mpp * float(downsamples[level]), model_mpp)


def parse_roi(text: str | None) -> tuple[int, int, int, int] | None:
    """``"x,y,w,h"`` (level-0 pixels, integers, w and h > 0) -> tuple; SACError naming the value."""
    if text is None:
        return None
    try:
        vals = [int(v) for v in text.split(",")]
    except ValueError:
        vals = []
    if len(vals) != 4 or vals[2] <= 0 or vals[3] <= 0 or vals[0] < 0 or vals[1] < 0:
        raise SACError(f"--roi must be x,y,w,h in level-0 pixels (x, y >= 0; w, h > 0), got {text!r}")
    return vals[0], vals[1], vals[2], vals[3]


class SlideSource:
    """Region reader over one pyramid level of a slide, restricted to a region of interest.

    ``model_mpp``: the model's training resolution (``SACConfig.mpp``); ``mpp``: overrides the slide's own value
    (``--mpp``); ``roi``: ``(x, y, w, h)`` level-0 pixels. Attributes: ``level``, ``downsample`` (level-0 pixels per
    analysis pixel), ``mpp`` (level 0), ``scale`` (for :class:`~sac.inference.config.InferenceConfig`; None when the
    model records no resolution: the caller's scale applies, at level 0), ``shape`` (analysis pixels of the ROI),
    ``roi``. Raises SACError for an unreadable slide, a missing mpp, or a ROI outside the slide.
    """

    def __init__(self, path: str | Path, *, model_mpp: float | None = None, mpp: float | None = None,
                 roi: tuple[int, int, int, int] | None = None):
        self.name = str(path)
        self.path = Path(path)
        self._slide = open_slide(path)
        try:
            self._setup(model_mpp, mpp, roi)
        except BaseException:
            self._slide.close()
            raise

    def _setup(self, model_mpp, mpp, roi) -> None:
        s = self._slide
        W0, H0 = (int(v) for v in s.level_dimensions[0])
        if mpp is not None and not mpp > 0:
            raise SACError(f"--mpp must be > 0, got {mpp}")
        self.mpp = mpp if mpp is not None else slide_mpp(s)
        if model_mpp is not None and self.mpp is None:
            raise SACError(f"{self.name}: the slide records no microns per pixel; pass --mpp (e.g. --mpp 0.25 for "
                           "a 40x scan, 0.5 for 20x)")
        if model_mpp is None:
            self.level, self.scale = 0, None
        else:
            self.level, self.scale = choose_level(s.level_downsamples, self.mpp, model_mpp)
        self.downsample = float(s.level_downsamples[self.level])
        x, y, w, h = roi if roi is not None else (0, 0, W0, H0)
        if x >= W0 or y >= H0:
            raise SACError(f"--roi {x},{y},{w},{h} lies outside the slide ({W0} x {H0} level-0 pixels)")
        w, h = min(w, W0 - x), min(h, H0 - y)
        self.roi = (x, y, w, h)
        ds = self.downsample
        self._origin = (int(x / ds), int(y / ds))  # analysis-level pixel of the ROI's top-left corner
        lw, lh = (int(v) for v in s.level_dimensions[self.level])
        self.shape = (max(1, min(lh - self._origin[1], math.ceil(h / ds))),
                      max(1, min(lw - self._origin[0], math.ceil(w / ds))))

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Rows ``y0:y1``, columns ``x0:x1`` of the ROI at the analysis level (clipped) as ``uint8 [h, w, 3]``."""
        H, W = self.shape
        y0, y1, x0, x1 = max(0, y0), min(H, y1), max(0, x0), min(W, x1)
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0), 3), np.uint8)
        ox, oy = self._origin
        loc = (round((ox + x0) * self.downsample), round((oy + y0) * self.downsample))
        try:
            img = self._slide.read_region(loc, self.level, (x1 - x0, y1 - y0))
        except Exception as exc:
            raise SACError(f"{self.name}: cannot read region at {loc} ({str(exc).splitlines()[0]})") from None
        return _to_rgb(np.asarray(img))

    def full(self) -> np.ndarray:
        """The whole ROI at the analysis level; SACError above ``FULL_MAX_PIXELS`` (use the block-wise path)."""
        H, W = self.shape
        if H * W > FULL_MAX_PIXELS:
            raise SACError(f"{self.name}: {W} x {H} pixels are too many to hold in memory at once")
        return self.read(0, H, 0, W)

    def thumbnail(self, max_side: int = THUMBNAIL_SIDE) -> tuple[np.ndarray, float]:
        """The ROI as ``uint8 [h, w, 3]`` with longest side <= ``max_side``, and its factor: analysis pixels per
        thumbnail pixel. Read from the coarsest level that is still at least that fine."""
        from skimage.transform import resize

        s = self._slide
        H, W = self.shape
        f = max(1.0, max(H, W) / max_side)
        want = f * self.downsample  # level-0 pixels per thumbnail pixel
        fine = [i for i, d in enumerate(s.level_downsamples) if float(d) <= want] or [0]
        level = max(fine, key=lambda i: float(s.level_downsamples[i]))
        d = float(s.level_downsamples[level])
        x, y, w, h = self.roi
        size = (max(1, math.ceil(w / d)), max(1, math.ceil(h / d)))
        img = _to_rgb(np.asarray(s.read_region((x, y), level, size)))
        out = (max(1, round(H / f)), max(1, round(W / f)))
        if img.shape[:2] != out:
            img = (resize(img, out, order=1, anti_aliasing=True, preserve_range=True) + 0.5).astype(np.uint8)
        return img, f

    def to_level0(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Analysis-level pixel-corner coordinates (relative to the ROI) -> level-0 pixel-corner coordinates."""
        ox, oy = self._origin
        return (np.asarray(x) + ox) * self.downsample, (np.asarray(y) + oy) * self.downsample

    def close(self) -> None:
        self._slide.close()


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    """``[h, w, 3|4]`` uint8 -> ``[h, w, 3]``; transparent pixels (openslide's "no data") become white glass."""
    if arr.ndim == 3 and arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.uint16)
        return ((arr[..., :3] * alpha + 255 * (255 - alpha)) // 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def tissue_mask(thumb: np.ndarray, threshold: float | None = None) -> tuple[np.ndarray, float]:
    """``uint8 [h, w, 3]`` thumbnail -> (``bool [h, w]`` tissue, the saturation threshold used, in [0, 1]).

    Tissue = HSV saturation above ``threshold`` (None: Otsu's threshold of the thumbnail, capped at ``OTSU_CAP``),
    then small holes and specks (< 0.1 % of the thumbnail) removed.
    """
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_holes, remove_small_objects

    sat = rgb2hsv(thumb)[..., 1]
    if threshold is None:
        threshold = min(float(threshold_otsu(sat)) if sat.max() > sat.min() else 0.0, OTSU_CAP)
    mask = sat > threshold
    small = max(1, mask.size // 1000)
    mask = remove_small_holes(remove_small_objects(mask, max_size=small), max_size=small)
    return mask, float(threshold)


def write_pyramid_tiff(path: str | Path, image: np.ndarray, mpp: float | None, *, levels: int = 3, tile: int = 256,
                       compression: str = "zlib") -> None:
    """Write ``uint8 [H, W, 3]`` as a tiled pyramidal TIFF (level 0 plus ``levels - 1`` halvings in SubIFDs) with
    ``mpp`` microns per pixel in its resolution tags (None: no resolution), atomically. The layout QuPath and
    tiffslide read as a generic pyramidal slide; used by the tests and benchmarks to build slides from images."""
    import tifffile
    from skimage.transform import downscale_local_mean

    from sac.atomic import atomic_path

    pyramid = [np.asarray(image, np.uint8)]
    for _ in range(levels - 1):
        pyramid.append(downscale_local_mean(pyramid[-1], (2, 2, 1)).round().astype(np.uint8))

    def res(k: int) -> dict:
        if mpp is None:
            return {}
        return {"resolution": (1e4 / (mpp * 2**k),) * 2, "resolutionunit": "CENTIMETER"}

    with atomic_path(path) as tmp, tifffile.TiffWriter(tmp, bigtiff=pyramid[0].nbytes > 2**31) as tw:
        tw.write(pyramid[0], tile=(tile, tile), compression=compression, photometric="rgb",
                 subifds=len(pyramid) - 1, **res(0))
        for k, level in enumerate(pyramid[1:], start=1):
            tw.write(level, tile=(tile, tile), compression=compression, photometric="rgb", subfiletype=1, **res(k))
