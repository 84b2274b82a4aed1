"""Image / label reading, writing and pair listing."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from sac.data.io import list_pairs, read_image, read_labels, write_image, write_labels
from sac.errors import SACError


def test_rgb_png_roundtrip(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    write_image(tmp_path / "a.png", img)
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, img)
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left behind


def test_grayscale_is_repeated(tmp_path):
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    iio.imwrite(tmp_path / "g.png", g)
    out = read_image(tmp_path / "g.png")
    assert out.shape == (3, 4, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_rgba_drops_alpha(tmp_path):
    rgba = np.random.default_rng(1).integers(0, 256, (4, 4, 4), dtype=np.uint8)
    iio.imwrite(tmp_path / "x.png", rgba)
    np.testing.assert_array_equal(read_image(tmp_path / "x.png"), rgba[..., :3])


def test_16bit_tiff_is_percentile_stretched(tmp_path):
    a = np.linspace(0, 4000, 100 * 100).reshape(100, 100).astype(np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", a)
    out = read_image(tmp_path / "x.tif")
    assert out.dtype == np.uint8 and out.shape == (100, 100, 3)
    assert out.min() == 0 and out.max() == 255
    # linear in between: the middle value maps to about the middle gray
    assert abs(int(out[50, 0, 0]) - 128) <= 2
    assert np.all(np.diff(out[..., 0].ravel().astype(int)) >= 0)  # monotone


def test_8bit_data_in_16bit_container_is_kept(tmp_path):
    a = np.array([[0, 17], [200, 255]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", a)
    np.testing.assert_array_equal(read_image(tmp_path / "x.tif")[..., 1], a.astype(np.uint8))


def test_channel_first_tiff(tmp_path):
    chw = np.random.default_rng(2).integers(0, 256, (3, 20, 30), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "x.tif", chw, photometric="minisblack")
    out = read_image(tmp_path / "x.tif")
    np.testing.assert_array_equal(out, np.moveaxis(chw, 0, -1))


@pytest.mark.parametrize("reader", [read_image, read_labels])
def test_corrupt_empty_missing_files_name_the_file(tmp_path, reader):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "junk.png").write_bytes(b"this is not a png at all")
    (tmp_path / "junk.tif").write_bytes(b"II*\x00garbage")
    for name in ("empty.png", "junk.png", "junk.tif", "missing.png"):
        with pytest.raises(SACError, match=name.replace(".", r"\.")) as err:
            reader(tmp_path / name)
        assert "\n" not in str(err.value)  # one line for `error: ...` (imageio's hints span several)


def test_labels_uint16_roundtrip_and_dtype(tmp_path):
    lab = np.zeros((6, 6), np.int32)
    lab[1:3, 1:3] = 1
    lab[4:, 4:] = 40000
    write_labels(tmp_path / "l.png", lab)
    assert iio.imread(tmp_path / "l.png").dtype == np.uint16
    out = read_labels(tmp_path / "l.png")
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, lab)
    write_labels(tmp_path / "l.tif", lab)
    np.testing.assert_array_equal(read_labels(tmp_path / "l.tif"), lab)


def test_labels_too_many_for_uint16(tmp_path):
    with pytest.raises(SACError, match="too many"):
        write_labels(tmp_path / "l.png", np.full((2, 2), 70000))
    assert not list(tmp_path.iterdir())


def test_labels_negative_or_float_are_refused_not_wrapped(tmp_path):
    with pytest.raises(ValueError, match=">= 0, got -1"):
        write_labels(tmp_path / "l.png", np.array([[0, -1]]))  # uint16 would turn -1 into id 65535
    with pytest.raises(ValueError, match="integer"):
        write_labels(tmp_path / "l.png", np.array([[0.0, 1.7]]))
    assert not list(tmp_path.iterdir())
    write_labels(tmp_path / "b.png", np.array([[False, True]]))
    np.testing.assert_array_equal(read_labels(tmp_path / "b.png"), [[0, 1]])


def test_labels_rgb_equal_channels_ok_else_error(tmp_path):
    lab = np.array([[0, 1], [2, 2]], np.uint8)
    iio.imwrite(tmp_path / "same.png", np.stack([lab] * 3, -1))
    np.testing.assert_array_equal(read_labels(tmp_path / "same.png"), lab)
    rgb = np.stack([lab, lab, lab + 1], -1)
    iio.imwrite(tmp_path / "diff.png", rgb)
    with pytest.raises(SACError, match="diff.png"):
        read_labels(tmp_path / "diff.png")


def test_labels_float_rejected(tmp_path):
    tifffile.imwrite(tmp_path / "f.tif", np.array([[0.5, 1.0], [0, 0]], np.float32))
    with pytest.raises(SACError, match="non-integer"):
        read_labels(tmp_path / "f.tif")


def _make_split(root, ids, split="train", label_for=None):
    for i in ids:
        write_image(root / split / "images" / f"{i}.png", np.zeros((4, 4, 3), np.uint8))
        if label_for is None or i in label_for:
            write_labels(root / split / "labels" / f"{i}.png", np.zeros((4, 4), np.int32))


def test_list_pairs_sorted_and_mixed_suffixes(tmp_path):
    _make_split(tmp_path, ["b", "a", "c"])
    tifffile.imwrite(tmp_path / "train" / "images" / "d.tif", np.zeros((4, 4, 3), np.uint8))
    tifffile.imwrite(tmp_path / "train" / "labels" / "d.tif", np.zeros((4, 4), np.uint16))
    (tmp_path / "train" / "images" / "notes.txt").write_text("ignored")
    pairs = list_pairs(tmp_path, "train")
    assert [p[0] for p in pairs] == ["a", "b", "c", "d"]
    assert pairs[3][1].name == "d.tif" and pairs[3][2].name == "d.tif"


def test_list_pairs_errors(tmp_path):
    with pytest.raises(SACError, match="split folder not found"):
        list_pairs(tmp_path, "train")
    _make_split(tmp_path, ["a", "b"], label_for={"a"})
    with pytest.raises(SACError, match=r"b\.png has no label"):
        list_pairs(tmp_path, "train")
    with pytest.raises(SACError, match="splits found: train"):
        list_pairs(tmp_path, "val")
