"""Reading and writing images and instance-label maps, and listing the pairs of a dataset split.

Standard layout (see docs/data.md)::

    <root>/<split>/images/<id>.<png|tif|tiff|jpg|jpeg|bmp>   RGB (or grayscale) image
    <root>/<split>/labels/<id>.<png|tif|tiff>                uint16 instance map, 0 = background

TIFF goes through tifffile (LZW/JPEG via imagecodecs); everything else through imageio. Every reader
raises :class:`~sac.errors.SACError` naming the file when it is missing, empty or cannot be decoded, and
every writer goes through :func:`sac.atomic.atomic_path`, so a crash never leaves a half-written file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sac.atomic import atomic_path
from sac.errors import SACError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
# Whole-slide formats (read by sac.inference.slide through tiffslide / OpenSlide; never training data).
SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
LABEL_SUFFIXES = (".png", ".tif", ".tiff")

# Percentiles used to stretch images that are not already 8-bit (16-bit / float microscopy).
_LOW_PCT, _HIGH_PCT = 0.1, 99.9


def _tiff_image(path: Path) -> np.ndarray:
    """The image of a TIFF file: its first series, where up to 4 single-channel pages are channels (``[C, H, W]``,
    ImageJ-style) and any other page stack (frames, levels, RGB pages) gives its first page."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        n_pages = len(series.pages)
        if n_pages > 1 and (series.keyframe.ndim != 2 or n_pages > 4):
            return series.pages[0].asarray()
        return series.asarray()


def _read_array(path: Path, first_page: bool = False) -> np.ndarray:
    """Decode ``path`` to a numpy array, or raise SACError naming the file. ``first_page``: of a TIFF page stack
    that is not a channel stack read only the first page (:func:`_tiff_image`), not all pages."""
    path = Path(path)
    if not path.is_file():
        raise SACError(f"file not found: {path}")
    if path.stat().st_size == 0:
        raise SACError(f"file is empty (0 bytes): {path}")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            arr = _tiff_image(path) if first_page else tifffile.imread(path)
        else:
            import imageio.v3 as iio

            arr = iio.imread(path)
    except Exception as exc:  # decoders raise many unrelated types for a corrupt file
        # First line only: imageio appends multi-line plugin install hints that do not help with a corrupt file.
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise SACError(f"cannot read {path}: {type(exc).__name__}: {detail}") from None
    arr = np.asarray(arr)
    if arr.size == 0:
        raise SACError(f"image has no pixels: {path}")
    return arr


def intensity_levels(arr: np.ndarray) -> tuple[float, float]:
    """``(lo, hi)`` that :func:`to_uint8` maps to 0 and 255 (documented in docs/data.md).

    Integer data within 0..255 (8-bit data stored in a wider type) keep their values: (0, 255). Float data
    within [0, 1]: (0, 1). Anything else (real 12/16-bit or arbitrary float microscopy) is stretched between the
    0.1st and 99.9th percentiles, over all channels together (so the colour balance is kept); percentiles rather
    than min/max so a few hot pixels do not darken the whole image. Non-finite values count as 0.
    """
    a = np.asarray(arr, dtype=np.float64)
    a = np.where(np.isfinite(a), a, 0.0)
    lo_v, hi_v = float(a.min()), float(a.max())
    if np.issubdtype(arr.dtype, np.integer) and lo_v >= 0 and hi_v <= 255:
        return 0.0, 255.0
    if np.issubdtype(arr.dtype, np.floating) and lo_v >= 0 and hi_v <= 1:
        return 0.0, 1.0
    lo, hi = np.percentile(a, [_LOW_PCT, _HIGH_PCT])
    return float(lo), float(hi if hi > lo else lo + 1.0)  # constant image: black rather than a division by 0


def to_uint8(arr: np.ndarray, levels: tuple[float, float] | None = None) -> np.ndarray:
    """Any numeric array -> uint8 [0, 255]: uint8 unchanged, bool to {0, 255}, anything else mapped linearly from
    ``levels`` (default :func:`intensity_levels` of ``arr``; a lazy reader passes the levels of the whole image
    so that every region is mapped alike) and rounded. Non-finite values count as 0."""
    arr = np.asarray(arr)
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    lo, hi = intensity_levels(arr) if levels is None else levels
    a = arr.astype(np.float64)
    a = np.where(np.isfinite(a), a, 0.0)
    return np.round(np.clip((a - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def to_rgb_uint8(arr: np.ndarray, *, levels: tuple[float, float] | None = None, name: str = "image") -> np.ndarray:
    """Any 2-D image array -> RGB ``uint8 [H, W, 3]``: the one conversion of every reader (files, arrays, TIFF regions).

    Gray ``[H, W]`` or ``[H, W, 1]`` is repeated to 3 channels; ``[H, W, 4]`` (RGBA) loses alpha; ``[H, W, 2]``
    (gray + alpha) keeps the gray; channel-first ``[C, H, W]`` (C in 1..4, e.g. some TIFFs) is transposed.
    Non-uint8 data go through :func:`to_uint8` (``levels`` as there). Raises :class:`SACError` naming ``name``
    for an empty image or an unsupported shape (e.g. 5 or more channels).
    """
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[0] in (1, 2, 3, 4) and arr.shape[-1] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.ndim not in (2, 3) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise SACError(f"{name}: not a 2-D image (shape {arr.shape}; expected [H, W] or [H, W, 1|2|3|4])")
    if arr.ndim == 3:
        c = arr.shape[2]
        if c in (1, 2):
            arr = arr[..., 0]
        elif c in (3, 4):
            arr = arr[..., :3]
        else:
            raise SACError(f"{name}: unsupported number of channels {c} (expected 1, 2, 3 or 4)")
    arr = to_uint8(arr, levels)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    return np.ascontiguousarray(arr)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as RGB ``uint8 [H, W, 3]`` (:func:`to_rgb_uint8`). A multi-page TIFF of up to 4 gray pages is
    read as channels; any other page stack gives its first page (like the lazy reader of large TIFFs: a pyramid's
    full resolution, a stack's first frame); singleton dimensions are dropped. Raises SACError naming the file if it
    cannot be read or is not a 2-D image."""
    path = Path(path)
    arr = _read_array(path, first_page=True)
    return to_rgb_uint8(np.squeeze(arr) if arr.ndim > 3 else arr, name=str(path))


def read_labels(path: str | Path) -> np.ndarray:
    """Read an instance-label map as ``int32 [H, W]`` (0 = background, 1..N = instances).

    A 3-channel file is accepted only if its channels are identical (some tools save gray as RGB).
    Raises SACError naming the file for unreadable files, float or negative values, or a wrong shape.
    """
    path = Path(path)
    arr = _read_array(path)
    arr = np.squeeze(arr) if arr.ndim > 2 else arr  # (1, H, W) pages; keep 1-row images 2-D
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
            raise SACError(f"label image has colour channels that differ (expected one instance id per pixel): {path}")
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise SACError(f"expected a 2-D label image, got array of shape {arr.shape}: {path}")
    if arr.dtype == bool:
        arr = arr.astype(np.int32)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.mod(arr, 1) == 0):
            raise SACError(f"label image has non-integer values: {path}")
    if arr.min() < 0 or arr.max() > np.iinfo(np.int32).max:
        raise SACError(f"label image has values outside 0..2^31-1: {path}")
    return arr.astype(np.int32)


def write_image(path: str | Path, image: np.ndarray) -> None:
    """Atomically write ``uint8 [H, W, 3]`` (or ``[H, W]``) to ``path`` (format from the suffix)."""
    import imageio.v3 as iio

    with atomic_path(path) as tmp:
        iio.imwrite(tmp, np.ascontiguousarray(image))


def write_labels(path: str | Path, labels: np.ndarray) -> None:
    """Atomically write an instance map as uint16 PNG (or TIFF by suffix). Raises SACError if ids > 65535.

    ``labels`` must be integer (or bool) and >= 0: the uint16 cast would silently wrap -1 to 65535."""
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"labels must be an integer array, got {labels.dtype}: {path}")
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {labels.min()}: {path}")
    if labels.size and labels.max() > np.iinfo(np.uint16).max:
        raise SACError(f"too many instances ({labels.max()}) for a uint16 label file: {path}")
    out = labels.astype(np.uint16)
    with atomic_path(path) as tmp:
        if Path(path).suffix.lower() in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, out, compression="zlib")
        else:
            import imageio.v3 as iio

            iio.imwrite(tmp, out)


def find_with_suffix(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    """Return ``folder/<stem><suffix>`` for the first existing suffix (case-insensitive), else None."""
    for suffix in suffixes:
        for cand in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
            if cand.is_file():
                return cand
    return None


def list_pairs(root: str | Path, split: str) -> list[tuple[str, Path, Path]]:
    """Sorted ``(id, image_path, label_path)`` of ``<root>/<split>``.

    Raises SACError if the split folder, its ``images/`` or ``labels/`` folder is missing, if it holds
    no images, if two images share an id, or if an image has no label file.
    """
    root = Path(root)
    split_dir = root / split
    if not split_dir.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        hint = f" (splits found: {', '.join(have)})" if have else ""
        raise SACError(f"split folder not found: {split_dir}{hint}")
    img_dir, lab_dir = split_dir / "images", split_dir / "labels"
    for d in (img_dir, lab_dir):
        if not d.is_dir():
            raise SACError(f"folder not found: {d} (expected <root>/<split>/images and labels)")
    images: dict[str, Path] = {}
    for p in sorted(img_dir.iterdir()):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in images:
                raise SACError(f"two images with id {p.stem!r}: {images[p.stem].name} and {p.name} in {img_dir}")
            images[p.stem] = p
    if not images:
        raise SACError(f"no images ({'/'.join(IMAGE_SUFFIXES)}) in {img_dir}")
    pairs = []
    for stem, img in sorted(images.items()):
        lab = find_with_suffix(lab_dir, stem, LABEL_SUFFIXES)
        if lab is None:
            raise SACError(f"image {img} has no label file {lab_dir / stem}.png")
        pairs.append((stem, img, lab))
    return pairs
