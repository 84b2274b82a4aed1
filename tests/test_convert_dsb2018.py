"""DSB 2018 converter: id order = sorted mask file names, RGBA -> RGB, errors, real raw samples."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from sac.data.convert import convert
from sac.data.io import read_image, read_labels
from sac.errors import SACError


def _folder(base, pid, masks, shape=(6, 8)):
    d = base / "stage1_train" / pid
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    rgba = np.random.default_rng(len(pid)).integers(0, 256, (*shape, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    iio.imwrite(d / "images" / f"{pid}.png", rgba)
    for name, (r0, r1, c0, c1) in masks.items():
        m = np.zeros(shape, np.uint8)
        m[r0:r1, c0:c1] = 255
        iio.imwrite(d / "masks" / f"{name}.png", m)
    return rgba


def test_ids_follow_sorted_mask_names(tmp_path):
    masks = {"zz": (0, 2, 0, 2), "aa": (3, 5, 3, 5), "mm": (0, 2, 5, 8), "empty": (0, 0, 0, 0)}
    rgba = _folder(tmp_path, "img1", masks)
    convert("dsb2018", tmp_path, tmp_path / "out")  # parent of stage1_train is accepted too
    lab = read_labels(tmp_path / "out/train/labels/img1.png")
    # sorted names: aa, empty (skipped: no pixels), mm, zz -> ids 1, 2, 3
    assert lab[3, 3] == 1 and lab[0, 6] == 2 and lab[0, 0] == 3 and lab.max() == 3
    np.testing.assert_array_equal(read_image(tmp_path / "out/train/images/img1.png"), rgba[..., :3])


def test_overlapping_masks_first_wins(tmp_path):
    _folder(tmp_path, "img1", {"a": (0, 4, 0, 4), "b": (2, 6, 2, 6)})
    convert("dsb2018", tmp_path / "stage1_train", tmp_path / "out", split="val")
    lab = read_labels(tmp_path / "out/val/labels/img1.png")
    assert lab[3, 3] == 1 and lab[5, 5] == 2 and np.sum(lab == 1) == 16


def test_corrupt_mask_names_file_and_leaves_output_untouched(tmp_path):
    _folder(tmp_path, "a1", {"m": (0, 2, 0, 2)})
    _folder(tmp_path, "b2", {"m": (0, 2, 0, 2)})
    (tmp_path / "stage1_train/b2/masks/bad.png").write_bytes(b"\x89PNG broken")
    out = tmp_path / "out"
    (out / "train" / "images").mkdir(parents=True)
    (out / "train" / "images" / "keep.png").write_bytes(b"existing")
    with pytest.raises(SACError, match=r"bad\.png"):
        convert("dsb2018", tmp_path, out)
    # the first (valid) folder was converted in staging but nothing reached OUT_ROOT
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert left == ["train", "train/images", "train/images/keep.png"]


def test_missing_masks_and_size_mismatch(tmp_path):
    _folder(tmp_path, "a1", {})
    with pytest.raises(SACError, match="no masks"):
        convert("dsb2018", tmp_path, tmp_path / "out")
    raw2 = tmp_path / "r2"
    _folder(raw2, "a1", {"m": (0, 1, 0, 1)})
    iio.imwrite(raw2 / "stage1_train/a1/masks/m.png", np.zeros((3, 3), np.uint8))
    with pytest.raises(SACError, match=r"m\.png is \(3, 3\)"):
        convert("dsb2018", raw2, tmp_path / "out2")


@pytest.mark.data
def test_reproduces_shared_labels_exactly(data_root, tmp_path):
    raw = data_root / "raw-samples" / "dsb2018"
    summary = convert("dsb2018", raw, tmp_path / "out")
    ids = sorted(summary.counts["train"])
    assert len(ids) == 3
    for pid in ids:
        split = "train" if (data_root / "dsb2018/train/labels" / f"{pid}.png").exists() else "val"
        ref = read_labels(data_root / "dsb2018" / split / "labels" / f"{pid}.png")
        ours = read_labels(tmp_path / "out/train/labels" / f"{pid}.png")
        np.testing.assert_array_equal(ours, ref)
        assert ours.max() == len(list((raw / "stage1_train" / pid / "masks").glob("*.png")))
        np.testing.assert_array_equal(
            read_image(tmp_path / "out/train/images" / f"{pid}.png"),
            read_image(data_root / "dsb2018" / split / "images" / f"{pid}.png"),
        )
