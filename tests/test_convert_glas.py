"""GlaS converter on small files made here (no GlaS data is shipped)."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from sac.data.convert import convert
from sac.data.io import read_image, read_labels
from sac.errors import SACError


def _glas(raw):
    raw.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = {}
    for name in ("train_1", "train_2", "testA_1", "testB_1"):
        img = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
        anno = np.zeros((8, 10), np.uint8)
        anno[1:4, 1:4] = 5  # non-consecutive gland ids: 5 and 9
        anno[5:7, 5:9] = 9
        iio.imwrite(raw / f"{name}.bmp", img)
        iio.imwrite(raw / f"{name}_anno.bmp", anno)
        images[name] = img
    (raw / "Grade.csv").write_text("name,grade\n")
    return images


def test_splits_from_file_names_and_relabelling(tmp_path):
    images = _glas(tmp_path / "raw")
    summary = convert("glas", tmp_path / "raw", tmp_path / "out")
    assert {k: sorted(v) for k, v in summary.counts.items()} == {
        "train": ["train_1", "train_2"], "testA": ["testA_1"], "testB": ["testB_1"]}
    lab = read_labels(tmp_path / "out/testA/labels/testA_1.png")
    assert sorted(np.unique(lab)) == [0, 1, 2]
    assert np.all(lab[1:4, 1:4] == 1) and np.all(lab[5:7, 5:9] == 2)
    np.testing.assert_array_equal(read_image(tmp_path / "out/train/images/train_2.png"), images["train_2"])


def test_one_split_only(tmp_path):
    _glas(tmp_path / "raw")
    summary = convert("glas", tmp_path / "raw", tmp_path / "out", split="testB")
    assert list(summary.counts) == ["testB"]
    assert not (tmp_path / "out/train").exists()
    with pytest.raises(SACError, match="train, testA, testB"):
        convert("glas", tmp_path / "raw", tmp_path / "out", split="val")


def test_missing_annotation(tmp_path):
    _glas(tmp_path / "raw")
    (tmp_path / "raw/testA_1_anno.bmp").unlink()
    with pytest.raises(SACError, match=r"testA_1\.bmp has no annotation"):
        convert("glas", tmp_path / "raw", tmp_path / "out")
