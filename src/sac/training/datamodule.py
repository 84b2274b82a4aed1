"""Training data: ``sac.data.CropDataset`` over several datasets, and a small fixed validation grid.

Training crops come from :class:`sac.data.dataset.CropDataset` (random crops, mild scale, flips, rot90,
intensity/stain jitter; a pure function of ``(seed, epoch, index)``) over every ``--data`` source with
``sampling="source"`` (each dataset gives the same share of crops, so 24 MoNuSeg images are not drowned by
536 DSB images) and the validation hold-out excluded.

Validation uses :class:`GridCropDataset` rather than ``CropDataset(grid=True)``: it caps the crops per image
(``--val-crops``, default 4 = a 2x2 grid at the corners of a 1000 px image) so one validation pass costs
seconds, not minutes, on a CPU; items carry ``valid`` (0 on padding), ``key`` (``"<source>/<id>"``) and a
stable ``index`` (the frozen-prefix cache key). Full-image scoring is ``sac evaluate --model``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sac.data.augment import AugmentConfig
from sac.data.dataset import CropDataset
from sac.data.io import list_pairs, read_image, read_labels
from sac.errors import SACError
from sac.training.config import DataSource, TrainConfig


@dataclass
class Sample:
    """One decoded validation image: ``image`` uint8 [H,W,3], ``labels`` int32 [H,W]."""

    id: str
    source: str
    image: np.ndarray
    labels: np.ndarray


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


def load_samples(root: str, split: str, ids: list[str]) -> list[Sample]:
    paths = {i: (p, q) for i, p, q in list_pairs(root, split)}
    name = Path(root).name
    return [Sample(i, name, read_image(paths[i][0]), read_labels(paths[i][1]).astype(np.int32)) for i in ids]


def _pad_to(a: np.ndarray, size: int) -> np.ndarray:
    h, w = a.shape[:2]
    pad = [(0, max(0, size - h)), (0, max(0, size - w))] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, pad) if any(p[1] for p in pad[:2]) else a


def _to_item(img: np.ndarray, lbl: np.ndarray, valid: np.ndarray, id_: str) -> dict:
    return {
        "image": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))).float() / 255.0,
        "mask": torch.from_numpy((lbl > 0)[None].astype(np.float32)),
        "labels": torch.from_numpy(np.ascontiguousarray(lbl).astype(np.int32)),
        "valid": torch.from_numpy(valid[None].astype(np.float32)),
        "id": id_,
    }


def grid_positions(length: int, size: int, n: int) -> list[int]:
    """``n`` evenly spaced crop starts covering [0, length) (one start 0 when ``length <= size``)."""
    if length <= size:
        return [0]
    return sorted({round(v) for v in np.linspace(0, length - size, n)})


class GridCropDataset(Dataset):
    """Fixed validation crops: per image a g x g grid (g = ceil(sqrt(k))) of S x S crops, first k kept.

    Deterministic (no randomness at all), zero-padded when an image is smaller than S; ``valid`` marks
    real pixels so padding never counts in the metrics. Item ``key`` = ``"<source>/<id>"``.
    """

    def __init__(self, samples: list[Sample], size: int, per_image: int):
        g = math.ceil(math.sqrt(per_image))
        self.items = []
        for smp in samples:
            h, w = smp.labels.shape
            boxes = [(y, x) for y in grid_positions(h, size, g) for x in grid_positions(w, size, g)]
            for y, x in boxes[:per_image]:
                img = _pad_to(smp.image[y:y + size, x:x + size], size)
                lbl = _pad_to(smp.labels[y:y + size, x:x + size], size)
                valid = _pad_to(np.ones(smp.labels[y:y + size, x:x + size].shape, np.uint8), size)
                item = _to_item(img, lbl, valid, smp.id)
                item["key"] = f"{smp.source}/{smp.id}"
                item["index"] = len(self.items)
                self.items.append(item)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


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
        self.val_set: GridCropDataset | None = None
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
        val_samples = [s for root, split, ids in val for s in load_samples(root, split, ids)]
        self.val_set = GridCropDataset(val_samples, self.size, cfg.val_crops_per_image)
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
