"""Training data: random scale-augmented crops from several datasets, and a fixed validation grid.

Why not ``sac.data.CropDataset`` directly: training needs (a) several datasets at once with weights,
(b) a subset of a split's images (the MoNuSeg hold-out), (c) mild *scale* augmentation and (d) an
epoch-seeded, reproducible stream. Images are read with ``sac.data`` readers when available, decoded
once and kept in memory (MoNuSeg 30 x 3 MB, DSB 536 small images), so a crop costs ~1 ms.

Item layout (matches ``CropDataset``): ``image`` float32 [3,S,S] in [0,1], ``mask`` float32 [1,S,S]
in {0,1}, ``labels`` int32 [S,S] (instance ids), ``valid`` float32 [1,S,S] (0 on padding), ``id`` str.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sac.errors import SACError
from sac.training.config import DataSource, TrainConfig

IMAGE_EXTS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


@dataclass
class Sample:
    """One decoded image: ``image`` uint8 [H,W,3], ``labels`` int32 [H,W]."""

    id: str
    source: str
    image: np.ndarray
    labels: np.ndarray


def list_ids(root: str | Path, split: str) -> list[tuple[str, Path, Path]]:
    """Sorted ``(id, image_path, label_path)`` of ``<root>/<split>``; SACError when the folder is unusable."""
    try:  # helper D's lister when present (same layout contract)
        from sac.data import list_pairs  # type: ignore[attr-defined]

        pairs = list_pairs(root, split)
        return sorted((Path(i).stem, Path(i), Path(lb)) for i, lb in pairs)
    except ImportError:
        pass
    img_dir, lbl_dir = Path(root) / split / "images", Path(root) / split / "labels"
    if not img_dir.is_dir():
        raise SACError(f"no images folder {img_dir} (expected <root>/<split>/images)")
    out = []
    for p in sorted(img_dir.iterdir()):
        if p.suffix.lower() not in IMAGE_EXTS:
            continue
        labels = [lbl_dir / f"{p.stem}{e}" for e in (".png", ".tif", ".tiff")]
        lbl = next((q for q in labels if q.exists()), None)
        if lbl is None:
            raise SACError(f"no label file for {p} in {lbl_dir}")
        out.append((p.stem, p, lbl))
    if not out:
        raise SACError(f"no images in {img_dir}")
    return out


def _read(img_path: Path, lbl_path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        from sac.data import read_image, read_labels  # type: ignore[attr-defined]

        return read_image(img_path), read_labels(lbl_path).astype(np.int32)
    except ImportError:
        import imageio.v3 as iio

        img = iio.imread(img_path)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        return np.ascontiguousarray(img[..., :3]).astype(np.uint8), iio.imread(lbl_path).astype(np.int32)


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
        ids = [i for i, _, _ in list_ids(src.root, src.split)]
        has_val = (Path(src.root) / cfg.val_split / "images").is_dir() and cfg.val_split != src.split
        if has_val:
            if not any(v[0] == src.root and v[1] == cfg.val_split for v in val):
                val_ids = [i for i, _, _ in list_ids(src.root, cfg.val_split)]
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
    paths = {i: (p, q) for i, p, q in list_ids(root, split)}
    name = Path(root).name
    return [Sample(i, name, *_read(*paths[i])) for i in ids]


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


class RandomCropDataset(Dataset):
    """``length`` random crops per epoch, reproducible from ``(seed, epoch, index)``.

    A crop of side ``round(S / s)`` (``s`` log-uniform in [scale_min, scale_max]) is cut from an image
    (source chosen by weight, image uniformly), resized to S x S (bilinear image, nearest labels),
    then flipped / rotated by multiples of 90 degrees.
    """

    def __init__(self, sources: list[tuple[list[Sample], float]], size: int, length: int,
                 scale: tuple[float, float] = (0.8, 1.25), seed: int = 0):
        self.sources = [(s, w) for s, w in sources if s]
        if not self.sources:
            raise SACError("no training images left after the validation hold-out")
        self.size, self.length, self.scale, self.seed, self.epoch = size, length, scale, seed, 0
        w = np.array([w for _, w in self.sources], dtype=float)
        self.p = w / w.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        samples = self.sources[rng.choice(len(self.sources), p=self.p)][0]
        smp = samples[rng.integers(len(samples))]
        s = math.exp(rng.uniform(math.log(self.scale[0]), math.log(self.scale[1])))
        side = max(8, round(self.size / s))
        img, lbl = _pad_to(smp.image, side), _pad_to(smp.labels, side)
        valid = _pad_to(np.ones(smp.labels.shape, np.uint8), side)
        y = rng.integers(img.shape[0] - side + 1)
        x = rng.integers(img.shape[1] - side + 1)
        img, lbl, valid = (a[y:y + side, x:x + side] for a in (img, lbl, valid))
        if side != self.size:
            interp = cv2.INTER_AREA if side > self.size else cv2.INTER_LINEAR
            img = cv2.resize(img, (self.size, self.size), interpolation=interp)
            lbl = cv2.resize(lbl, (self.size, self.size), interpolation=cv2.INTER_NEAREST)
            valid = cv2.resize(valid, (self.size, self.size), interpolation=cv2.INTER_NEAREST)
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        img, lbl, valid = (np.rot90(a, k) for a in (img, lbl, valid))
        if flip:
            img, lbl, valid = (a[:, ::-1] for a in (img, lbl, valid))
        return _to_item(img, lbl, valid, smp.id)


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


def _collate(batch: list[dict]) -> dict:
    out = {}
    for k in batch[0]:
        vals = [b[k] for b in batch]
        out[k] = torch.stack(vals) if isinstance(vals[0], torch.Tensor) else (
            torch.tensor(vals) if isinstance(vals[0], int) else vals)
    return out


class SACDataModule(L.LightningDataModule):
    """Train = weighted random crops of every ``--data`` source; val = fixed grid crops (see above)."""

    def __init__(self, cfg: TrainConfig, crop_size: int):
        super().__init__()
        self.cfg, self.size = cfg, crop_size
        self.train_set: RandomCropDataset | None = None
        self.val_set: GridCropDataset | None = None
        self.split_record: dict = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        cfg = self.cfg
        train, val = resolve_splits(cfg)
        sources = [(load_samples(src.root, src.split, ids), src.weight) for src, ids in train]
        self.train_set = RandomCropDataset(sources, self.size, cfg.crops_per_epoch,
                                           (cfg.scale_min, cfg.scale_max), cfg.seed)
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
        return DataLoader(self.train_set, batch_size=self.cfg.batch_size, shuffle=False, drop_last=True,
                          num_workers=self.cfg.num_workers, collate_fn=_collate,
                          persistent_workers=False)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.cfg.batch_size, shuffle=False,
                          num_workers=0, collate_fn=_collate)
