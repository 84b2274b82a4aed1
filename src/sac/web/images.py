"""Images entering the app: uploaded bytes and ``--data-dir`` items, both decoded as `sac segment` decodes files.

Uploads are recognised by their first bytes (PNG, JPEG, BMP, TIFF), written to a private temporary folder with the
matching suffix, read with :func:`sac.inference.reader.open_image` (the reader of `sac segment`) and deleted at once:
nothing a client sends is kept on disk. The size in pixels is checked from the header before decoding, so a small
file that claims 100,000 x 100,000 pixels is refused without allocating anything.

``--data-dir`` items are listed recursively and named by an opaque id (a hash of the relative path): the client
never sends a path, and an id that is not in the listing is a 404.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sac.data.io import IMAGE_SUFFIXES
from sac.errors import SACError
from sac.inference.reader import TIFF_SUFFIXES, TiffSource, open_image
from sac.web.errors import NotFound, TooLarge, Unsupported, WebError
from sac.web.settings import MAX_PIXELS

# First bytes -> the suffix the readers of `sac segment` expect (tifffile for TIFF, imageio for the rest).
MAGIC = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"BM", ".bmp"),
    (b"II*\x00", ".tif"),
    (b"MM\x00*", ".tif"),
    (b"II+\x00", ".tif"),  # BigTIFF
    (b"MM\x00+", ".tif"),
)
# Listing --data-dir stops after this many images (a mistyped "/" must not walk the whole disk).
MAX_LIBRARY_ITEMS = 5000
ID_PATTERN = re.compile(r"[0-9a-f]{16}")


def sniff_suffix(head: bytes) -> str:
    """The file suffix for the first bytes of an image file; :class:`Unsupported` (415) if none matches."""
    for magic, suffix in MAGIC:
        if head.startswith(magic):
            return suffix
    raise Unsupported("not a PNG, JPEG, BMP or TIFF image (files are recognised by their content)")


def image_size(path: Path, name: str) -> tuple[int, int]:
    """``(height, width)`` from the file header, without decoding the pixels; errors name ``name``."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            src = TiffSource(path)
        except SACError as exc:
            raise WebError(str(exc).replace(str(path), name)) from None
        try:
            return src.shape
        finally:
            src.close()
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise WebError(f"{name}: not a readable image ({type(exc).__name__})") from None


def check_pixels(height: int, width: int, name: str) -> None:
    if height * width > MAX_PIXELS:
        raise TooLarge(
            f"{name}: {width} x {height} pixels is above the {MAX_PIXELS / 1e6:.0f} megapixels the browser app "
            "supports; crop it, or segment it whole with `sac segment` (no size limit)"
        )


def read_checked(path: Path, name: str) -> np.ndarray:
    """Header size check, then the `sac segment` reader -> ``uint8 [H, W, 3]``. SACError names ``name``, not the
    server's path."""
    check_pixels(*image_size(path, name), name)
    try:
        source = open_image(path)
    except SACError as exc:
        raise WebError(str(exc).replace(str(path), name)) from None
    try:
        return np.ascontiguousarray(source.full())
    except SACError as exc:
        raise WebError(str(exc).replace(str(path), name)) from None
    finally:
        source.close()


def decode_upload(data: bytes, name: str) -> np.ndarray:
    """Uploaded file bytes -> ``uint8 [H, W, 3]``; nothing is kept on disk, whatever happens."""
    if not data:
        raise WebError("the uploaded file is empty")
    suffix = sniff_suffix(data[:8])
    with tempfile.TemporaryDirectory(prefix="sac-upload-") as tmp:
        path = Path(tmp) / f"upload{suffix}"
        path.write_bytes(data)
        return read_checked(path, name)


def safe_name(name: str | None, default: str = "image") -> str:
    """A display name / file stem made of ``[A-Za-z0-9._-]`` only (from a client-chosen file name)."""
    stem = Path(str(name or "")).stem if name else ""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._")[:80]
    return stem or default


@dataclass(frozen=True)
class LibraryItem:
    id: str
    name: str  # path relative to --data-dir, for display only
    path: Path


class Library:
    """The images under ``--data-dir`` (recursive, hidden files and the training-example folder excluded)."""

    def __init__(self, root: Path | None, exclude: Path | None = None):
        self.root = root
        self.exclude = exclude
        self._items: dict[str, LibraryItem] | None = None

    def items(self) -> dict[str, LibraryItem]:
        if self._items is None:
            self._items = self._scan()
        return self._items

    def refresh(self) -> None:
        self._items = None

    def _scan(self) -> dict[str, LibraryItem]:
        items: dict[str, LibraryItem] = {}
        if self.root is None:
            return items
        for dirpath, dirnames, filenames in os.walk(self.root):
            here = Path(dirpath)
            # Hidden folders and the corrections folder are skipped; sorted for a stable order.
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                 and (self.exclude is None or (here / d).resolve() != self.exclude))
            for fn in sorted(filenames):
                if fn.startswith(".") or Path(fn).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                path = (here / fn).resolve()
                if not path.is_relative_to(self.root):  # a symlink pointing outside --data-dir
                    continue
                rel = (here / fn).relative_to(self.root).as_posix()
                item_id = hashlib.sha256(rel.encode()).hexdigest()[:16]
                items[item_id] = LibraryItem(item_id, rel, path)
                if len(items) >= MAX_LIBRARY_ITEMS:
                    return items
        return items

    def get(self, item_id: str) -> LibraryItem:
        """The item with this id; :class:`NotFound` (404) for anything else, including anything path-like."""
        if not isinstance(item_id, str) or not ID_PATTERN.fullmatch(item_id):
            raise NotFound("unknown image id (ids come from /api/library)")
        item = self.items().get(item_id)
        if item is None:
            raise NotFound("unknown image id (ids come from /api/library)")
        return item

    def read(self, item_id: str) -> tuple[str, np.ndarray]:
        item = self.get(item_id)
        return item.name, read_checked(item.path, item.name)
