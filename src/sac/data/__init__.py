"""Datasets: image IO, converters of original downloads, splits, and training crops (docs/data.md).

Names are exported lazily so ``import sac.data.io`` (or the converters) does not pull in torch or
albumentations: ``sac.data.read_image``, ``read_labels``, ``list_pairs``, ``CropDataset``.
"""

from __future__ import annotations

_EXPORTS = {
    "read_image": "sac.data.io",
    "read_labels": "sac.data.io",
    "write_image": "sac.data.io",
    "write_labels": "sac.data.io",
    "list_pairs": "sac.data.io",
    "CropDataset": "sac.data.dataset",
    "AugmentConfig": "sac.data.augment",
    "convert": "sac.data.convert",
    "make_split": "sac.data.split",
    "choose_ids": "sac.data.split",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sac.data' has no attribute {name!r}")
