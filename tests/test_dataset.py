"""CropDataset: item contract, determinism per (seed, epoch, index), padding, sources/ids, grid, real data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sac.data.augment import hed_jitter
from sac.data.dataset import CropDataset
from sac.data.io import write_image, write_labels
from sac.errors import SACError


def _encoded(h, w, tag):
    """Image whose R = row, G = column, B = tag (so a crop tells where it came from); blob labels."""
    rr, cc = np.mgrid[:h, :w]
    img = np.stack([rr % 256, cc % 256, np.full_like(rr, tag)], -1).astype(np.uint8)
    lab = ((rr // 8) * 100 + (cc // 8) + 1).astype(np.int32)
    lab[(rr % 8 == 0) | (cc % 8 == 0)] = 0  # background grid lines between 7x7 "nuclei"
    return img, lab


def _write(root, split, items):
    for pid, (h, w, tag) in items.items():
        img, lab = _encoded(h, w, tag)
        write_image(root / split / "images" / f"{pid}.png", img)
        write_labels(root / split / "labels" / f"{pid}.png", lab)


@pytest.fixture
def root(tmp_path):
    _write(tmp_path, "train", {"a": (70, 50, 10), "b": (40, 90, 20), "small": (20, 30, 30)})
    return tmp_path


def _check_contract(item, s):
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, s, s)
    assert item["mask"].dtype == torch.float32 and item["mask"].shape == (1, s, s)
    assert item["labels"].dtype == torch.int32 and item["labels"].shape == (s, s)
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert torch.equal(item["mask"][0], (item["labels"] > 0).float())
    assert isinstance(item["id"], str)


def test_plain_crop_is_a_window_of_the_source(root):
    ds = CropDataset(root, "train", crop_size=32, augment=False, seed=1)
    assert len(ds) == 3 and ds.ids == ["a", "b", "small"]
    for k in (0, 1):
        item = ds[k]
        _check_contract(item, 32)
        img = np.round(item["image"].numpy() * 255).astype(int)
        r0, c0 = img[0, 0, 0], img[1, 0, 0]
        np.testing.assert_array_equal(img[0], (r0 + np.arange(32))[:, None].repeat(32, 1))
        np.testing.assert_array_equal(img[1], (c0 + np.arange(32))[None, :].repeat(32, 0))
        _, lab = _encoded(*{"a": (70, 50), "b": (40, 90)}[item["id"]], 0)
        np.testing.assert_array_equal(item["labels"].numpy(), lab[r0 : r0 + 32, c0 : c0 + 32])


def test_small_image_is_zero_padded(root):
    ds = CropDataset(root, "train", crop_size=32, augment=False, ids=["small"])
    item = ds[0]
    img = np.round(item["image"].numpy() * 255).astype(int)
    inside = img[2] == 30  # the tag channel marks real pixels
    assert inside.sum() == 20 * 30
    assert np.all(img[:, ~inside] == 0) and np.all(item["labels"].numpy()[~inside] == 0)


def test_augmented_items_are_deterministic_and_valid(root):
    ds = CropDataset(root, "train", crop_size=32, augment=True, length=12, seed=5)
    assert len(ds) == 12
    ids_seen = set()
    for i in range(12):
        a, b = ds[i], ds[i]
        _check_contract(a, 32)
        for key in ("image", "mask", "labels"):
            assert torch.equal(a[key], b[key])
        src = _encoded(*{"a": (70, 50), "b": (40, 90), "small": (20, 30)}[a["id"]], 0)[1]
        assert set(np.unique(a["labels"].numpy())) <= set(np.unique(src))  # nearest: ids survive
        ids_seen.add(a["id"])
    assert len(ids_seen) >= 2
    other = CropDataset(root, "train", crop_size=32, augment=True, length=12, seed=6)
    assert any(not torch.equal(ds[i]["image"], other[i]["image"]) for i in range(12))
    before = [ds[i]["image"] for i in range(4)]
    ds.set_epoch(1)
    assert any(not torch.equal(x, ds[i]["image"]) for i, x in enumerate(before))


def test_gray_stays_gray_and_colour_is_jittered(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (40, 40), dtype=np.uint8)
    write_image(tmp_path / "t/images/g.png", np.stack([gray] * 3, -1))
    write_labels(tmp_path / "t/labels/g.png", np.ones((40, 40), np.int32))
    ds = CropDataset(tmp_path, "t", crop_size=32, augment=True, length=8)
    for i in range(8):
        im = ds[i]["image"]
        assert torch.equal(im[0], im[1]) and torch.equal(im[0], im[2])
    he = np.full((16, 16, 3), (180, 90, 160), np.uint8)  # H&E-like pink/purple
    out = hed_jitter(he, np.random.default_rng(1), 0.05)
    assert out.dtype == np.uint8 and out.shape == he.shape
    assert 0 < np.abs(out.astype(int) - he).max() < 60
    same = hed_jitter(he, np.random.default_rng(1), 0.0)
    np.testing.assert_array_equal(same, he)


def test_sources_ids_and_exclude(root, tmp_path):
    other = tmp_path / "other"
    _write(other, "val", {"z": (40, 40, 99)})
    ds = CropDataset(sources=[(root, "train"), (other, "val")], crop_size=32, augment=False)
    assert ds.ids == ["a", "b", "small", "z"]
    ds = CropDataset(sources=[(root, "train"), (other, "val")], exclude_ids=["a", "b"], crop_size=32)
    assert ds.ids == ["small", "z"]
    ds = CropDataset(root, "train", ids=["b"], length=5, crop_size=32)
    assert {ds[i]["id"] for i in range(5)} == {"b"}
    with pytest.raises(SACError, match="ids not found.*nope"):
        CropDataset(root, "train", ids=["nope", "a"])
    with pytest.raises(SACError, match="no images left"):
        CropDataset(root, "train", exclude_ids=["a", "b", "small"])
    with pytest.raises(SACError, match="sampling"):
        CropDataset(root, "train", sampling="weird")


def test_source_sampling_balances_sources(root, tmp_path):
    other = tmp_path / "other"
    _write(other, "train", {"z": (40, 40, 99)})
    ds = CropDataset(sources=[(root, "train"), (other, "train")], crop_size=16, length=400, sampling="source")
    frac_z = np.mean([ds[i]["id"] == "z" for i in range(400)])
    assert 0.4 < frac_z < 0.6  # one image in source 2 still gets half of the crops


def test_grid_covers_every_pixel(root):
    ds = CropDataset(root, "train", crop_size=32, augment=False, grid=True)
    covered = {"a": np.zeros((70, 50), bool), "b": np.zeros((40, 90), bool)}
    for i in range(len(ds)):
        item = ds[i]
        if item["id"] == "small":
            continue
        img = np.round(item["image"].numpy() * 255).astype(int)
        r0, c0 = img[0, 0, 0], img[1, 0, 0]
        covered[item["id"]][r0 : r0 + 32, c0 : c0 + 32] = True
    assert all(c.all() for c in covered.values())
    # a (70x50): rows {0, 32, 38} x cols {0, 18}; b (40x90): {0, 8} x {0, 32, 58}; small: one padded tile
    assert len(ds) == 6 + 6 + 1


@pytest.mark.slow
def test_dataloader_workers_give_the_same_batches(root):
    ds = CropDataset(root, "train", crop_size=32, augment=True, length=8, seed=3)

    def batches(workers):
        dl = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=workers)
        return [b["image"] for b in dl]

    for x, y in zip(batches(0), batches(2), strict=True):
        assert torch.equal(x, y)


@pytest.mark.data
def test_real_monuseg_and_dsb_crops(data_root):
    mon = data_root / "monuseg"
    dsb = data_root / "dsb2018"
    mon_ids = ["TCGA-21-5784-01Z-00-DX1", "TCGA-B0-5711-01Z-00-DX1"]
    import json

    dsb_ids = json.loads((dsb / "splits.json").read_text())["val"][:4]
    ds = CropDataset(sources=[(mon, "train"), (dsb, "val")], ids=mon_ids + dsb_ids, length=16, seed=0,
                     sampling="source")
    assert sorted(ds.ids) == sorted(mon_ids + dsb_ids)
    fg = []
    for i in range(16):
        item = ds[i]
        _check_contract(item, 256)
        fg.append(float(item["mask"].mean()))
    assert 0.02 < np.mean(fg) < 0.6  # nuclei cover part of a typical crop
    val = CropDataset(mon, "train", ids=mon_ids[:1], augment=False, grid=True)
    assert len(val) == 16  # 1000 px -> tiles at 0, 256, 512, 744 in each direction
    n_nuclei_seen = len(np.unique(np.concatenate([val[i]["labels"].numpy().ravel() for i in range(16)]))) - 1
    assert n_nuclei_seen == 398  # every nucleus of that image appears in some tile
