"""MoNuSeg 2018: H&E ``.tif`` tiles + Aperio ImageScope ``.xml`` nucleus polygons.

Accepted layouts: the original download (``Tissue Images/*.tif`` and ``Annotations/*.xml``) or both kinds
of file in one folder; ``RAW_DIR`` is searched recursively and images are matched to annotations by
file stem. Each ``Annotations/Annotation/Regions/Region/Vertices/Vertex`` list (X = column, Y = row,
MATLAB 1-based pixel coordinates) is rasterised with :func:`~sac.data.convert.poly2mask.poly2mask`,
the organisers' MATLAB rule. Regions are numbered in document order; on overlap the earlier region
keeps its pixels ("first region wins"); regions with no pixel left (zero area, or fully covered by
earlier ones) are skipped and consume no id. This reproduces the shared labels pixel for pixel.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from sac.data.convert import Item
from sac.data.convert.poly2mask import poly2mask_window
from sac.data.io import read_image
from sac.errors import SACError

_IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


def find_items(raw_dir: Path, split: str | None) -> list[Item]:
    """Pair every image under ``raw_dir`` with the ``.xml`` of the same stem; SACError if one is missing."""
    images: dict[str, Path] = {}
    xmls: dict[str, Path] = {}
    for p in sorted(raw_dir.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        if p.suffix.lower() == ".xml":
            xmls[p.stem] = p
        elif p.suffix.lower() in _IMAGE_SUFFIXES:
            images.setdefault(p.stem, p)  # prefer the first (sorted) if a tile exists as .tif and .png
    for stem, p in images.items():
        if stem not in xmls:
            raise SACError(f"MoNuSeg image {p} has no annotation {stem}.xml under {raw_dir}")
    for stem, p in xmls.items():
        if stem not in images:
            raise SACError(f"MoNuSeg annotation {p} has no image {stem}.tif under {raw_dir}")
    return [Item(stem, split or "train", images[stem], xmls[stem]) for stem in sorted(images)]


def read_polygons(xml_path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """All regions of an Aperio XML as (x, y) float arrays, in document order. SACError if malformed."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise SACError(f"cannot parse annotation {xml_path}: {exc}") from None
    polys = []
    for region in root.iter("Region"):
        verts = region.findall("./Vertices/Vertex")
        try:
            x = np.array([float(v.attrib["X"]) for v in verts], dtype=np.float64)
            y = np.array([float(v.attrib["Y"]) for v in verts], dtype=np.float64)
        except (KeyError, ValueError) as exc:
            rid = region.get("Id", "?")
            raise SACError(f"bad vertex in region {rid} of {xml_path}: {exc}") from None
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise SACError(f"non-finite vertex coordinate in region {region.get('Id', '?')} of {xml_path}")
        polys.append((x, y))
    if not polys:
        raise SACError(f"no Region/Vertices found in annotation {xml_path}")
    return polys


def rasterise(polys: list[tuple[np.ndarray, np.ndarray]], shape: tuple[int, int]) -> np.ndarray:
    """Instance map int32 [H, W] from polygons: MATLAB poly2mask, first region wins, empty ones skipped."""
    labels = np.zeros(shape, dtype=np.int32)
    n = 0
    for x, y in polys:
        r0, c0, win = poly2mask_window(x, y, shape)  # bounding window only: ~400 polygons per tile
        view = labels[r0 : r0 + win.shape[0], c0 : c0 + win.shape[1]]
        win &= view == 0
        if win.any():
            n += 1
            view[win] = n
    return labels


def load_item(item: Item) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 [H,W,3], int32 [H,W] instance labels) of one MoNuSeg tile."""
    image = read_image(item.image)
    labels = rasterise(read_polygons(Path(item.annotation)), image.shape[:2])
    return image, labels
