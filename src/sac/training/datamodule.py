"""Training data: ``sac.data.CropDataset`` over several datasets, and a small fixed validation grid.

Training crops come from :class:`sac.data.dataset.CropDataset` (random crops, mild scale, flips, rot90,
intensity/stain jitter; a pure function of ``(seed, epoch, index)``) over every ``--data`` source with
``sampling="source"`` (each dataset gives the same share of crops, so 24 MoNuSeg images are not drowned by
536 DSB images) and the validation hold-out excluded.

Validation uses ``CropDataset(grid=True, per_image=--val-crops)``: fixed crops, capped per image (default 4 = a
2x2 grid at the corners of a 1000 px image) so one validation pass costs seconds, not minutes, on a CPU; items
carry ``valid`` (0 on padding), ``key`` (``"<source>/<id>"``) and a stable ``index`` (the frozen-prefix cache
key). Full-image scoring is ``sac evaluate --model``.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from sac.data.augment import AugmentConfig
from sac.data.dataset import CropDataset
from sac.data.io import list_pairs
from sac.errors import SACError
from sac.training.config import DataSource, TrainConfig


def list_ids(root: str | Path, split: str) -> list[str]:
    """Sorted image ids of ``<root>/<split>`` (SACError when the folder is unusable)."""
    return [i for i, _, _ in list_pairs(root, split)]


def holdout(ids: list[str], n: int, seed: int) -> list[str]:
    """The ``n`` ids held out for validation: ``random.Random(seed).sample(sorted(ids), n)``, sorted."""
    if n >= len(ids):
        raise SACError(f"--val-from-train {n} would hold out all {len(ids)} training images")
    return sorted(random.Random(seed).sample(sorted(ids), n))


def resolve_splits(cfg: TrainConfig) -> tuple[list[tuple[DataSource, list[str]]], list[tuple[str, str, list[str]]]]:
    """Decide which images train and which validate.

    Returns ``train`` = [(source, ids)] and ``val`` = [(root, split, ids)]. A root that has
    ``cfg.val_split`` is validated on it; one that has not loses ``cfg.val_from_train`` of its train
    images to validation (seeded by ``cfg.val_seed``).
    """
    train, val = [], []
    for src in cfg.data:
        ids = list_ids(src.root, src.split)
        has_val = (Path(src.root) / cfg.val_split / "images").is_dir() and cfg.val_split != src.split
        if has_val:
            if not any(v[0] == src.root and v[1] == cfg.val_split for v in val):
                val_ids = list_ids(src.root, cfg.val_split)
                if cfg.val_max_images is not None:
                    val_ids = val_ids[: cfg.val_max_images]
                val.append((src.root, cfg.val_split, val_ids))
        elif cfg.val_from_train > 0:
            held = holdout(ids, cfg.val_from_train, cfg.val_seed)
            ids = [i for i in ids if i not in set(held)]
            val.append((src.root, src.split, held))
        train.append((src, ids))
    if not val:
        raise SACError(
            f"no validation data: none of the --data roots has a '{cfg.val_split}' split; "
            "use --val-from-train N to hold out N training images"
        )
    return train, val


class Indexed(Dataset):
    """Adds ``index`` (the item's position, the frozen-prefix cache key in pool mode) to every item."""

    def __init__(self, ds: Dataset):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict:
        return {**self.ds[index], "index": index}


def _collate(batch: list[dict]) -> dict:
    out = {}
    for k in batch[0]:
        vals = [b[k] for b in batch]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else (
            torch.tensor(vals) if isinstance(vals[0], int) else vals)
    return out


class SACDataModule(L.LightningDataModule):
    """Train = random crops of every ``--data`` source (hold-out excluded); val = fixed grid crops."""

    def __init__(self, cfg: TrainConfig, crop_size: int):
        super().__init__()
        self.cfg, self.size = cfg, crop_size
        self.train_set: CropDataset | None = None
        self.val_set: CropDataset | None = None
        self.split_record: dict = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        cfg = self.cfg
        train, val = resolve_splits(cfg)
        held = {i for _, split, ids in val for i in ids if split != cfg.val_split}
        self.train_set = CropDataset(
            sources=[(src.root, src.split) for src, _ in train], exclude_ids=held, crop_size=self.size,
            augment=True, length=cfg.crops_per_epoch, seed=cfg.seed, sampling="source",
            augment_config=AugmentConfig(scale_min=cfg.scale_min, scale_max=cfg.scale_max))
        self.val_set = CropDataset(sources=val, crop_size=self.size, augment=False, grid=True,
                                   per_image=cfg.val_crops_per_image)
        self.split_record = {
            "train": [{"root": str(s.root), "split": s.split, "n_images": len(ids)} for s, ids in train],
            "val": [{"root": str(r), "split": sp, "ids": ids} for r, sp, ids in val],
            "val_crops": len(self.val_set),
            "val_seed": cfg.val_seed,
        }

    def write_split_record(self, path: Path) -> None:
        from sac.atomic import atomic_write_text

        atomic_write_text(path, json.dumps(self.split_record, indent=2) + "\n")

    def train_dataloader(self) -> DataLoader:
        # Pool mode: the same crops every epoch (set_epoch is never advanced), visited in a seeded new order.
        shuffle = self.cfg.crop_pool
        return DataLoader(Indexed(self.train_set), batch_size=self.cfg.batch_size, shuffle=shuffle, drop_last=True,
                          num_workers=self.cfg.num_workers, collate_fn=_collate,
                          persistent_workers=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.cfg.batch_size, shuffle=False,
                          num_workers=0, collate_fn=_collate)
