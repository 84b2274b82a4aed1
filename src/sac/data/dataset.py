"""``CropDataset``: fixed-size training/validation crops from one or more dataset splits, held in memory.

Images and labels are decoded once at construction (the datasets here are ~100 MB) and kept as
``uint8 [H, W, 3]`` and ``uint16 [H, W]``; DataLoader workers started by fork share them. Each item
is a pure function of ``(seed, epoch, index)`` (a ``numpy`` generator seeded with that triple), so
runs are reproducible whatever the number of workers; call :meth:`CropDataset.set_epoch` at the start
of each epoch (non-persistent workers pick up the new epoch when they are re-created).

Item (``S = crop_size``; torch tensors, so the default DataLoader collate stacks them)::

    {"image": float32 [3, S, S] in [0, 1], "mask": float32 [1, S, S] in {0, 1} (= labels > 0),
     "labels": int32 [S, S] instance ids (0 = background), "id": str (image id)}

Grid items (``grid=True``: the validation crops of ``sac train``) also carry ``"valid"`` float32 [1, S, S]
(1 on image pixels, 0 on padding, so padding never counts in a metric), ``"key"`` ``"<source folder>/<id>"``
(the unit validation scores are averaged by) and ``"index"`` (the item's position: a stable cache key).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sac.data.augment import (
    AugmentConfig,
    build_colour_transform,
    build_transform,
    hed_jitter,
    is_grayscale,
    sample_scale,
)
from sac.data.io import list_pairs, read_image, read_labels
from sac.errors import SACError

SAMPLING = ("image", "area", "source")


@dataclass(frozen=True)
class Sample:
    """One decoded image: ``image`` uint8 [H, W, 3], ``labels`` uint16 [H, W], its source index."""

    id: str
    image: np.ndarray
    labels: np.ndarray
    source: int
    gray: bool


def load_samples(sources: Sequence[tuple], ids: Iterable[str] | None = None,
                 exclude_ids: Iterable[str] | None = None) -> list[Sample]:
    """Decode all (image, labels) pairs of the given ``(root, split)`` sources, optionally filtered.

    A source may be ``(root, split, source_ids)``: only those ids of that source (e.g. the images a run
    validates on), on top of the global ``ids`` / ``exclude_ids`` filters.
    Raises SACError for a malformed split, an image/label size mismatch, an id in ``ids`` or ``source_ids``
    that is not there, or a filter that leaves nothing.
    """
    keep = None if ids is None else set(ids)
    drop = set(exclude_ids or ())
    samples, seen = [], set()
    for k, (root, split, *own) in enumerate(sources):
        own_ids = None if not own or own[0] is None else set(own[0])
        pairs = list_pairs(root, split)
        if own_ids is not None and own_ids - {p[0] for p in pairs}:
            raise SACError(f"ids not found in {root}/{split}: {', '.join(sorted(own_ids - {p[0] for p in pairs})[:5])}")
        for pid, img_path, lab_path in pairs:
            seen.add(pid)
            if (keep is not None and pid not in keep) or pid in drop or (own_ids is not None and pid not in own_ids):
                continue
            image, labels = read_image(img_path), read_labels(lab_path)
            if image.shape[:2] != labels.shape:
                raise SACError(f"image {img_path} is {image.shape[:2]} but labels {lab_path} are {labels.shape}")
            if labels.max(initial=0) > np.iinfo(np.uint16).max:
                raise SACError(f"more than 65535 instances in {lab_path}")
            samples.append(Sample(pid, image, labels.astype(np.uint16), k, is_grayscale(image)))
    if keep is not None and keep - seen:
        raise SACError(f"ids not found in {list(sources)}: {', '.join(sorted(keep - seen)[:5])}")
    if not samples:
        raise SACError(f"no images left in {list(sources)} after the ids filter")
    return samples


class CropDataset(Dataset):
    """Random (or grid) ``crop_size`` crops of in-memory images, with optional augmentation.

    Args:
        root, split: one dataset split; or give ``sources=[(root, split), ...]`` to mix several.
        crop_size: S, the side of every crop (256 = LiteMedSAM input). Smaller images are zero-padded
            (image black, labels background).
        augment: random scale/flip/rot90/intensity/stain jitter (see :mod:`sac.data.augment`); False
            gives plain crops for validation.
        length: items per epoch; each picks a random image (see ``sampling``) and a random position.
            None: one random crop per image (in order), or with ``grid=True`` every tile of a fixed grid.
        seed: base seed; item ``i`` of epoch ``e`` uses ``numpy.random.default_rng([seed, e, i])``.
        ids / exclude_ids: keep only / drop these image ids (e.g. hold out MoNuSeg images for validation).
        sampling: how ``length`` items choose images: ``image`` uniform over images, ``area`` in
            proportion to pixel count, ``source`` uniform over sources then uniform within the source.
        grid: deterministic validation tiling, no randomness; not combinable with ``length``. Without
            ``per_image``: crops at a regular grid covering each image completely (last row/column aligned to
            the border). With ``per_image=k``: a g x g grid (g = ceil(sqrt(k))) of evenly spaced crops
            (:func:`grid_positions`), the first k kept -- cheap validation (k = 4: the corners of a 1000 px
            image). Images smaller than S are zero-padded at the bottom/right.
        augment_config: strengths (defaults: :class:`~sac.data.augment.AugmentConfig`).
    """

    def __init__(self, root: str | Path | None = None, split: str | None = None, crop_size: int = 256,
                 augment: bool = True, length: int | None = None, seed: int = 0, *,
                 sources: Sequence[tuple[str | Path, str]] | None = None, ids: Iterable[str] | None = None,
                 exclude_ids: Iterable[str] | None = None, sampling: str = "image", grid: bool = False,
                 per_image: int | None = None, augment_config: AugmentConfig | None = None):
        if sources is None:
            if root is None or split is None:
                raise SACError("CropDataset needs root and split, or sources=[(root, split), ...]")
            sources = [(root, split)]
        elif root is not None:
            raise SACError("give either root/split or sources, not both")
        if crop_size < 8:
            raise SACError(f"crop_size must be >= 8, got {crop_size}")
        if sampling not in SAMPLING:
            raise SACError(f"sampling must be one of {', '.join(SAMPLING)}, got {sampling!r}")
        if grid and length is not None:
            raise SACError("grid=True enumerates fixed tiles; do not also give length")
        if per_image is not None and (not grid or per_image < 1):
            raise SACError(f"per_image must be >= 1 and needs grid=True, got {per_image}")
        if length is not None and length < 1:
            raise SACError(f"length must be >= 1, got {length}")
        self.crop_size, self.augment, self.length, self.seed = crop_size, augment, length, seed
        self.sampling, self.grid, self.per_image, self.epoch = sampling, grid, per_image, 0
        self.cfg = augment_config or AugmentConfig()
        self.samples = load_samples(sources, ids, exclude_ids)
        self.n_sources = len(sources)
        self.source_names = [Path(src[0]).name for src in sources]
        self._tiles = self._grid_tiles() if grid else None
        self._geo = build_transform(crop_size, self.cfg, augment)
        self._colour = build_colour_transform(self.cfg) if augment else None
        self._probs = self._image_probabilities()

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose crops are produced (part of every item's seed)."""
        self.epoch = int(epoch)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def __len__(self) -> int:
        if self._tiles is not None:
            return len(self._tiles)
        return self.length if self.length is not None else len(self.samples)

    def _image_probabilities(self) -> np.ndarray:
        n = len(self.samples)
        if self.sampling == "area":
            w = np.array([s.labels.size for s in self.samples], dtype=np.float64)
        elif self.sampling == "source":
            per_source = np.bincount([s.source for s in self.samples], minlength=self.n_sources)
            w = np.array([1.0 / per_source[s.source] for s in self.samples])
        else:
            w = np.ones(n)
        return w / w.sum()

    def _grid_tiles(self) -> list[tuple[int, int, int]]:
        tiles = []
        s = self.crop_size
        for k, smp in enumerate(self.samples):
            h, w = smp.labels.shape
            if self.per_image is None:
                rows = sorted({min(r, max(h - s, 0)) for r in range(0, max(h - s, 0) + s, s)})
                cols = sorted({min(c, max(w - s, 0)) for c in range(0, max(w - s, 0) + s, s)})
                tiles += [(k, r, c) for r in rows for c in cols]
            else:
                g = math.ceil(math.sqrt(self.per_image))
                boxes = [(k, r, c) for r in grid_positions(h, s, g) for c in grid_positions(w, s, g)]
                tiles += boxes[: self.per_image]
        return tiles

    @staticmethod
    def _window(img: np.ndarray, lab: np.ndarray, r: int, c: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``size`` x ``size`` window at (r, c), zero-padded where it leaves the image."""
        out_i = np.zeros((size, size, 3), dtype=np.uint8)
        out_l = np.zeros((size, size), dtype=np.int32)
        h, w = lab.shape
        r0, c0, r1, c1 = max(r, 0), max(c, 0), min(r + size, h), min(c + size, w)
        out_i[r0 - r : r1 - r, c0 - c : c1 - c] = img[r0:r1, c0:c1]
        out_l[r0 - r : r1 - r, c0 - c : c1 - c] = lab[r0:r1, c0:c1]
        return out_i, out_l

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self._tiles is not None:
            return self._grid_item(index)
        else:
            k = int(rng.choice(len(self.samples), p=self._probs)) if self.length is not None else index
            h, w = self.samples[k].labels.shape
            scale = sample_scale(rng, self.cfg) if self.augment else 1.0
            win = max(1, int(round(self.crop_size / scale)))
            # a window larger than the image is centred (padding split between sides) rather than at 0
            r = int(rng.integers(0, h - win + 1)) if h >= win else -((win - h) // 2)
            c = int(rng.integers(0, w - win + 1)) if w >= win else -((win - w) // 2)
        smp = self.samples[k]
        img, lab = self._window(smp.image, smp.labels, r, c, win)
        self._geo.set_random_seed(int(rng.integers(2**31)))
        out = self._geo(image=img, mask=lab)
        img, lab = out["image"], out["mask"].astype(np.int32)
        if self.augment and not smp.gray:
            if self.cfg.hed_sigma > 0 and rng.random() < self.cfg.p_intensity:
                img = hed_jitter(img, rng, self.cfg.hed_sigma)
            if self._colour is not None:
                self._colour.set_random_seed(int(rng.integers(2**31)))
                img = self._colour(image=img)["image"]
        image = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
        return {
            "image": torch.from_numpy(image),
            "mask": torch.from_numpy((lab > 0).astype(np.float32)[None]),
            "labels": torch.from_numpy(np.ascontiguousarray(lab)),
            "id": smp.id,
        }

    def _grid_item(self, index: int) -> dict:
        """A fixed grid crop, no transform at all, with ``valid``, ``key`` and ``index`` (module docstring)."""
        k, r, c = self._tiles[index]
        smp, s = self.samples[k], self.crop_size
        img, lab = self._window(smp.image, smp.labels, r, c, s)
        h, w = smp.labels.shape
        valid = np.zeros((1, s, s), np.float32)
        valid[0, : min(h - r, s), : min(w - c, s)] = 1.0
        image = np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)
        return {
            "image": torch.from_numpy(image),
            "mask": torch.from_numpy((lab > 0).astype(np.float32)[None]),
            "labels": torch.from_numpy(lab),
            "id": smp.id,
            "valid": torch.from_numpy(valid),
            "key": f"{self.source_names[smp.source]}/{smp.id}",
            "index": index,
        }


def grid_positions(length: int, size: int, n: int) -> list[int]:
    """``n`` evenly spaced crop starts covering [0, length) (one start 0 when ``length <= size``)."""
    if length <= size:
        return [0]
    return sorted({round(v) for v in np.linspace(0, length - size, n)})
