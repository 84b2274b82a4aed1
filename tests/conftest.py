"""Shared fixtures: where the shared real data lives, a fixed torch thread count, and helpers used by several test
files (synthetic datasets and masks, partition comparisons), handed out as fixtures so no test module imports
another."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared/data relative to the repository root; SAC_DATA overrides it.
DATA_ROOT = Path(os.environ.get("SAC_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the shared real data; skips the test with a reason when it is absent."""
    if not (DATA_ROOT / "monuseg").is_dir():
        pytest.skip(f"real data not found at {DATA_ROOT} (set SAC_DATA to its location)")
    return DATA_ROOT


@pytest.fixture(autouse=True, scope="session")

def _threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(2)
    torch.manual_seed(0)


def _make_dataset(root: Path, n_train: int = 4, n_val: int = 2, size: int = 160, seed: int = 0) -> Path:
    """``root/{train,val}/{images,labels}/img<k>.png``: dark disks (nuclei) on a light noisy background."""
    import imageio.v3 as iio

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for split, n in (("train", n_train), ("val", n_val)):
        if n == 0:
            continue
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "labels").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            labels = np.zeros((size, size), np.uint16)
            for k in range(1, 9):
                cy, cx = rng.integers(10, size - 10, 2)
                r = rng.integers(5, 9)
                labels[((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r) & (labels == 0)] = k
            base = np.where(labels > 0, 70, 210).astype(np.float32)
            img = np.clip(base[..., None] + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
            iio.imwrite(root / split / "images" / f"{split}{i}.png", img)
            iio.imwrite(root / split / "labels" / f"{split}{i}.png", labels)
    return root


def _tiny_batch(n: int = 2, size: int = 128, seed: int = 0) -> dict:
    """A training batch (image, mask, labels, index) of ``n`` crops with 5 disk nuclei each."""
    import torch

    rng = np.random.default_rng(seed)
    labels = np.zeros((n, size, size), np.int32)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        for k in range(1, 6):
            cy, cx = rng.integers(12, size - 12, 2)
            labels[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= 64] = k
    img = np.where(labels[:, None] > 0, 0.3, 0.8).astype(np.float32) + rng.normal(0, 0.02, (n, 3, size, size))
    return {"image": torch.from_numpy(np.clip(img, 0, 1).astype(np.float32)),
            "mask": torch.from_numpy((labels > 0)[:, None].astype(np.float32)),
            "labels": torch.from_numpy(labels), "index": torch.arange(n)}


def _touching_disks(height: int, width: int, n: int, rmin: float, rmax: float, seed: int) -> np.ndarray:
    """``bool [height, width]``: ``n`` random disks, dense enough that many touch and form multi-nucleus blobs."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((height, width), dtype=bool)
    for y, x, r in zip(rng.uniform(0, height, n), rng.uniform(0, width, n), rng.uniform(rmin, rmax, n),
                       strict=True):
        y0, y1 = int(max(0, y - r - 1)), int(min(height, y + r + 2))
        x0, x1 = int(max(0, x - r - 1)), int(min(width, x + r + 2))
        yy, xx = np.mgrid[y0:y1, x0:x1]
        mask[y0:y1, x0:x1] |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    return mask


def _assert_same_partition(a: np.ndarray, b: np.ndarray) -> None:
    """``a`` and ``b`` label the same pixels and split them into the same objects (ids may differ)."""
    assert a.dtype == b.dtype == np.int32
    assert np.array_equal(a > 0, b > 0), "different foreground"
    n = int(a.max())
    assert int(b.max()) == n and len(np.unique(b)) == n + 1, "ids not 1..N or different counts"
    fg = a > 0
    pairs = np.unique(np.stack([a[fg], b[fg]]), axis=1)
    # A bijection between ids: every object of a maps to exactly one object of b and vice versa, i.e. no
    # nucleus is cut at a seam (it would map to two ids) and none is merged or duplicated.
    assert pairs.shape[1] == n, f"{pairs.shape[1] - n} object pairs differ"


def _assert_same_nuclei(a: np.ndarray, b: np.ndarray, max_changed: float) -> int:
    """Same foreground, same number of nuclei, ids 1..N, and a one-to-one match in which every nucleus of ``a``
    shares more than half of its pixels with its own nucleus of ``b`` (so none is cut, merged or duplicated); at
    most ``max_changed`` (fraction) of the nuclei differ in any pixel. Returns the number that differ."""
    assert a.dtype == b.dtype == np.int32
    assert np.array_equal(a > 0, b > 0), "different foreground"
    n = int(a.max())
    assert int(b.max()) == n and len(np.unique(b)) == n + 1, "ids not 1..N or different counts"
    fg = a > 0
    pairs, counts = np.unique(np.stack([a[fg], b[fg]]), axis=1, return_counts=True)
    area_a = np.bincount(a[fg], minlength=n + 1)
    area_b = np.bincount(b[fg], minlength=n + 1)
    iou = counts / (area_a[pairs[0]] + area_b[pairs[1]] - counts)
    good = iou > 0.5  # IoU > 0.5 pairs are one-to-one by construction; demand one for every nucleus of a and b
    assert np.array_equal(np.sort(pairs[0][good]), np.arange(1, n + 1)), "a nucleus of a lost its match"
    assert np.array_equal(np.sort(pairs[1][good]), np.arange(1, n + 1)), "a nucleus of b lost its match"
    changed = len(np.unique(pairs[0][iou < 1]))
    assert changed <= max_changed * n, f"{changed} of {n} nuclei differ"
    return changed


@pytest.fixture(scope="session")
def make_dataset():
    """``make_dataset(root, n_train=4, n_val=2, size=160, seed=0) -> root``: a synthetic standard-layout dataset."""
    return _make_dataset


@pytest.fixture(scope="session")
def tiny_batch():
    """``tiny_batch(n=2, size=128, seed=0) -> dict``: a training batch of synthetic nuclei for ``vit_tiny``."""
    return _tiny_batch


@pytest.fixture(scope="session")
def touching_disks():
    """``touching_disks(height, width, n, rmin, rmax, seed) -> bool [H, W]`` of many touching disks."""
    return _touching_disks


@pytest.fixture(scope="session")
def same_partition():
    """``same_partition(a, b)``: asserts two label maps split the same pixels into the same objects."""
    return _assert_same_partition


@pytest.fixture(scope="session")
def same_nuclei():
    """``same_nuclei(a, b, max_changed) -> int``: asserts one-to-one nuclei (see the helper's docstring)."""
    return _assert_same_nuclei


@pytest.fixture(autouse=True, scope="session")
def _engine_cache(tmp_path_factory):
    """Exported inference graphs (sac.inference.engine) go to a per-session folder, never the user's cache; the
    session shares it so each model is exported once."""
    path = tmp_path_factory.mktemp("sac-cache")
    old = os.environ.get("SAC_CACHE_DIR")
    os.environ["SAC_CACHE_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("SAC_CACHE_DIR", None)
    else:
        os.environ["SAC_CACHE_DIR"] = old
