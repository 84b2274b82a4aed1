"""Image sources that `Segmenter` reads region by region, so a 10,000 x 10,000 TIFF is never decoded whole.

* :class:`ArraySource` wraps an in-memory image (small files, notebook arrays).
* :class:`TiffSource` reads only the TIFF segments (tiles or strips) that intersect the requested region.
  Uncompressed contiguous pages are memory-mapped (``tifffile.memmap``) instead.

Why hand-written rather than ``tifffile.TiffFile.aszarr()``: ``aszarr`` needs the ``zarr`` package, which is not
a dependency here; tifffile's own ``TiffPage.decode`` does the decompression, we only choose which segments to read
(about 60 lines) and keep a small LRU cache because overlapping windows revisit the same tiles.

Every source returns ``uint8 [h, w, 3]`` RGB regions converted by :func:`sac.data.io.to_rgb_uint8` (the one
conversion of the project): grayscale is repeated to 3 channels, alpha is dropped and 16-bit / float data are
mapped to 0..255 (percentile stretch; for lazy TIFFs the levels come once from a subsample read band by band).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np

from sac.data.io import intensity_levels, read_image, to_rgb_uint8
from sac.errors import SACError

# TIFFs with more pixels than this are read lazily; smaller files are simply decoded whole.
LAZY_PIXELS = 2048 * 2048
# Intensity levels of non-uint8 lazy TIFFs come from every 4th row/column above this size (bounded memory).
SUBSAMPLE_PIXELS = 4096 * 4096
TIFF_SUFFIXES = (".tif", ".tiff")


class ArraySource:
    """An image held in memory: ``uint8 [H, W, 3]`` after :func:`to_rgb_uint8`."""

    def __init__(self, image: np.ndarray, name: str = "image"):
        self.name = name
        self.image = to_rgb_uint8(image, name=name)
        self.shape = self.image.shape[:2]

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Region rows ``y0:y1``, columns ``x0:x1`` (clipped to the image) as ``uint8 [h, w, 3]``."""
        return self.image[y0:y1, x0:x1]

    def full(self) -> np.ndarray:
        return self.image

    def close(self) -> None:
        pass


class TiffSource:
    """Lazy region reader for the first page of a (possibly huge) TIFF.

    ``segments_read`` counts decoded tiles/strips, so tests can check that a region read does not
    decode the whole page.
    """

    def __init__(self, path: str | Path, cache_segments: int = 64):
        import tifffile

        self.name = str(path)
        self.path = Path(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
            page = self._tif.pages.first
        except Exception as exc:  # tifffile raises many types for corrupt files
            raise SACError(f"{path}: cannot read TIFF ({exc})") from None
        if page.imagedepth != 1:
            raise SACError(f"{path}: volumetric TIFF pages (depth {page.imagedepth}) are not supported")
        self._page = page
        planes, _, height, width, samples = page.shaped
        self.shape = (int(height), int(width))
        self.separate = page.planarconfig == 2 and planes > 1
        self.n_planes = planes if self.separate else 1
        self.channels = planes if self.separate else samples
        self.dtype = page.dtype
        self.segments_read = 0
        self._cache: OrderedDict[int, tuple] = OrderedDict()
        self._cache_size = cache_segments
        self._memmap = None
        if page.is_contiguous and page.compression == 1:
            try:
                self._memmap = tifffile.memmap(self.path, page=0, mode="r")
            except Exception:  # some layouts cannot be memory-mapped; fall back to segment reads
                self._memmap = None
        if page.is_tiled:
            self._ch, self._cw = int(page.tilelength), int(page.tilewidth)
        else:
            self._ch, self._cw = min(int(page.rowsperstrip or height), height), width
        self._rows = math.ceil(height / self._ch)
        self._cols = math.ceil(width / self._cw)
        self._levels: tuple[float, float] | None = None  # computed on the first read of non-uint8 data

    def _segment(self, index: int):
        """Decoded segment ``index`` as (array [1, h, w, s], (plane, y, x)), cached."""
        hit = self._cache.get(index)
        if hit is not None:
            self._cache.move_to_end(index)
            return hit
        page = self._page
        fh = self._tif.filehandle
        fh.seek(page.dataoffsets[index])
        data = fh.read(page.databytecounts[index])
        try:
            seg, idx, _ = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception as exc:
            raise SACError(f"{self.name}: corrupt or truncated TIFF data ({exc})") from None
        if seg is None:
            raise SACError(f"{self.name}: TIFF segment {index} is empty (truncated file?)")
        self.segments_read += 1
        hit = (seg, (idx[0], idx[2], idx[3]))
        self._cache[index] = hit
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return hit

    def _read_raw(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Raw pixels (page dtype) ``[h, w, channels]`` of the clipped region."""
        H, W = self.shape
        y0, y1, x0, x1 = max(0, y0), min(H, y1), max(0, x0), min(W, x1)
        if self._memmap is not None:
            arr = np.asarray(self._memmap[y0:y1, x0:x1] if not self.separate else self._memmap[:, y0:y1, x0:x1])
            if self.separate:
                arr = np.moveaxis(arr, 0, -1)
            return arr.reshape(y1 - y0, x1 - x0, -1)
        out = np.zeros((y1 - y0, x1 - x0, self.channels), dtype=self.dtype)
        per_plane = self._rows * self._cols
        for plane in range(self.n_planes):
            for r in range(y0 // self._ch, (y1 - 1) // self._ch + 1):
                for c in range(x0 // self._cw, (x1 - 1) // self._cw + 1):
                    seg, (p, sy, sx) = self._segment(plane * per_plane + r * self._cols + c)
                    seg = seg[0]  # [h, w, s]
                    ty0, tx0 = max(y0, sy), max(x0, sx)
                    ty1, tx1 = min(y1, sy + seg.shape[0]), min(x1, sx + seg.shape[1])
                    if ty1 <= ty0 or tx1 <= tx0:
                        continue
                    block = seg[ty0 - sy : ty1 - sy, tx0 - sx : tx1 - sx]
                    dst = out[ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0]
                    if self.separate:
                        dst[..., p] = block[..., 0]
                    else:
                        dst[...] = block
        return out

    def _streamed_levels(self) -> tuple[float, float]:
        """:func:`intensity_levels` from a strided subsample (every 4th row and column), one band at a time,
        so a 16-bit gigapixel page is never held whole. Exact for the 0..255 / [0, 1] rules; the percentiles
        are those of the subsample."""
        H, W = self.shape
        step = 4 if H * W > SUBSAMPLE_PIXELS else 1
        parts = []
        for y in range(0, H, self._ch):
            band = self._read_raw(y, min(y + self._ch, H), 0, W)
            parts.append(band[(-y) % step :: step, ::step].copy())
            self._cache.clear()
        return intensity_levels(np.concatenate(parts, axis=0))

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Region rows ``y0:y1``, columns ``x0:x1`` (clipped to the image) as ``uint8 [h, w, 3]``."""
        if self._levels is None and self.dtype not in (np.uint8, bool):
            self._levels = self._streamed_levels()
        return to_rgb_uint8(self._read_raw(y0, y1, x0, x1), levels=self._levels, name=self.name)

    def full(self) -> np.ndarray:
        """The whole image as ``uint8 [H, W, 3]`` (for writers that need it: overlay, intensities)."""
        H, W = self.shape
        out = np.empty((H, W, 3), dtype=np.uint8)
        band = max(self._ch, 512)
        for y in range(0, H, band):
            out[y : y + band] = self.read(y, y + band, 0, W)
        return out

    def close(self) -> None:
        self._cache.clear()
        self._memmap = None
        self._tif.close()


def open_image(path: str | Path):
    """Open an image file as a region source; big TIFFs lazily, everything else decoded whole.

    Raises :class:`SACError` naming the file if it is missing, empty, not an image or truncated.
    """
    path = Path(path)
    if not path.is_file():
        raise SACError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise SACError(f"{path}: empty file (0 bytes)")
    if path.suffix.lower() in TIFF_SUFFIXES:
        src = TiffSource(path)
        if src.shape[0] * src.shape[1] > LAZY_PIXELS:
            return src
        src.close()  # small: decode whole with the project's reader, like every other format
    return ArraySource(read_image(path), name=str(path))
