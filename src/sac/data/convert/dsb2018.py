"""2018 Data Science Bowl (BBBC038v1) ``stage1_train``: ``<id>/images/<id>.png`` + ``<id>/masks/*.png``.

``RAW_DIR`` may be the ``stage1_train`` folder itself or a folder containing it. The RGBA image is saved
as RGB (alpha is 255 everywhere in stage1_train). Each mask file is one nucleus (any value > 0); ids are
assigned 1..N in the order of the mask *file names* sorted as strings, which reproduces the shared
labels exactly. Masks do not overlap in the original data; if they did, the earlier file would keep
its pixels, and an empty mask file is skipped (consumes no id), as for MoNuSeg.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sac.data.convert import Item
from sac.data.io import read_image, read_labels
from sac.errors import SACError


def find_items(raw_dir: Path, split: str | None) -> list[Item]:
    """One item per ``<id>`` folder that has ``images/<id>.png``; SACError for an incomplete folder."""
    base = raw_dir / "stage1_train" if (raw_dir / "stage1_train").is_dir() else raw_dir
    items = []
    for d in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        image = d / "images" / f"{d.name}.png"
        if not image.is_file():
            raise SACError(f"DSB folder {d} has no image images/{d.name}.png")
        masks = tuple(sorted((d / "masks").glob("*.png"))) if (d / "masks").is_dir() else ()
        if not masks:
            raise SACError(f"DSB folder {d} has no masks/*.png (test-stage folders have no annotations)")
        items.append(Item(d.name, split or "train", image, masks))
    return items


def load_item(item: Item) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 [H,W,3], int32 [H,W] instance labels) of one DSB folder."""
    image = read_image(item.image)
    labels = np.zeros(image.shape[:2], dtype=np.int32)
    n = 0
    for mask_path in item.annotation:
        mask = read_labels(mask_path) > 0
        if mask.shape != labels.shape:
            raise SACError(f"mask {mask_path} is {mask.shape} but image {item.image} is {labels.shape}")
        mask &= labels == 0
        if mask.any():
            n += 1
            labels[mask] = n
    return image, labels
