"""GlaS 2015 (gland segmentation): ``<name>.bmp`` + ``<name>_anno.bmp`` in one folder.

The split comes from the file name prefix: ``train_*`` -> ``train``, ``testA_*`` -> ``testA``,
``testB_*`` -> ``testB`` (ids keep the full name, e.g. ``testA_3``). The annotation holds one integer id
per gland (0 = background); ids are renumbered 1..N in increasing order of the original id
(``skimage.segmentation.relabel_sequential``) so every split follows the standard layout.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sac.data.convert import Item
from sac.data.io import read_image, read_labels
from sac.errors import SACError

SPLITS = ("train", "testA", "testB")
_SUFFIXES = (".bmp", ".png", ".tif", ".tiff")


def find_items(raw_dir: Path, split: str | None) -> list[Item]:
    """Images ``<split>_<n>.<ext>`` with their ``_anno`` files; SACError for an unknown split or a missing anno."""
    if split is not None and split not in SPLITS:
        raise SACError(f"GlaS split must be one of {', '.join(SPLITS)}, got {split!r}")
    files = {p.stem: p for p in sorted(raw_dir.rglob("*")) if p.is_file() and p.suffix.lower() in _SUFFIXES}
    items = []
    for stem, path in sorted(files.items()):
        if stem.endswith("_anno"):
            if stem[: -len("_anno")] not in files:
                raise SACError(f"GlaS annotation {path} has no image {stem[:-5]}.bmp")
            continue
        prefix = stem.split("_", 1)[0]
        if prefix not in SPLITS:
            continue  # e.g. Grade.csv neighbours or unrelated images: not part of GlaS naming
        anno = files.get(f"{stem}_anno")
        if anno is None:
            raise SACError(f"GlaS image {path} has no annotation {stem}_anno.bmp")
        if split is None or prefix == split:
            items.append(Item(stem, prefix, path, anno))
    return items


def load_item(item: Item) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 [H,W,3], int32 [H,W] gland ids renumbered 1..N)."""
    from skimage.segmentation import relabel_sequential

    image = read_image(item.image)
    labels = relabel_sequential(read_labels(Path(item.annotation)))[0].astype(np.int32)
    return image, labels
