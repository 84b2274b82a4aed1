"""Lazy TIFF reading: regions come back exact and only the needed segments are decoded."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from sac.data.io import read_image, to_rgb_uint8
from sac.errors import SACError
from sac.inference import reader
from sac.inference.reader import ArraySource, TiffSource, open_image


def _smooth_rgb(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx * 7) % 256, (yy * 5) % 256, (xx + yy) % 256], axis=2).astype(np.uint8)


@pytest.fixture(scope="module")
def big_tiff(tmp_path_factory):
    """A 3000 x 3000 RGB tiled (256 x 256) zlib TIFF: 144 tiles."""
    path = tmp_path_factory.mktemp("big") / "big.tif"
    image = _smooth_rgb(3000, 3000)
    tifffile.imwrite(path, image, tile=(256, 256), compression="zlib")
    return path, image


def test_big_tiled_tiff_reads_only_the_tiles_it_needs(big_tiff):
    path, image = big_tiff
    src = open_image(path)
    assert isinstance(src, TiffSource) and src.shape == (3000, 3000)
    region = src.read(1000, 1256, 2000, 2256)  # straddles 2 x 2 tiles
    np.testing.assert_array_equal(region, image[1000:1256, 2000:2256])
    assert src.segments_read == 4  # of 144: the page is never decoded whole
    src.read(1000, 1256, 2000, 2256)
    assert src.segments_read == 4  # cached
    np.testing.assert_array_equal(src.read(2900, 3100, -5, 100), image[2900:, :100])  # clipped at the border
    src.close()


@pytest.mark.parametrize("kind", ["strips", "contiguous", "planar"])
def test_other_tiff_layouts_read_exactly(tmp_path, kind, monkeypatch):
    monkeypatch.setattr(reader, "LAZY_PIXELS", 100)
    image = _smooth_rgb(300, 410)
    path = tmp_path / f"{kind}.tif"
    if kind == "strips":
        tifffile.imwrite(path, image, compression="zlib", rowsperstrip=32)
    elif kind == "contiguous":
        tifffile.imwrite(path, image)
    else:
        tifffile.imwrite(path, np.moveaxis(image, -1, 0), planarconfig="separate", tile=(64, 64), photometric="rgb")
    src = open_image(path)
    assert isinstance(src, TiffSource)
    np.testing.assert_array_equal(src.read(33, 290, 17, 400), image[33:290, 17:400])
    np.testing.assert_array_equal(src.full(), image)
    if kind == "strips":
        assert src.segments_read <= 10  # 9 strips cover rows 33..290, not all 10
    src.close()


def test_lazy_16bit_gray_matches_project_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "LAZY_PIXELS", 100)
    rng = np.random.default_rng(0)
    gray = rng.integers(100, 40000, size=(200, 300)).astype(np.uint16)
    path = tmp_path / "g16.tif"
    tifffile.imwrite(path, gray, tile=(64, 64), compression="zlib")
    src = open_image(path)
    lazy = src.read(0, 200, 0, 300)
    assert lazy.dtype == np.uint8 and lazy.shape == (200, 300, 3)
    # Levels come from every pixel below SUBSAMPLE_PIXELS, so the lazy result is identical to read_image.
    np.testing.assert_array_equal(lazy, read_image(path))
    src.close()


def test_small_files_are_decoded_whole(tmp_path):
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, _smooth_rgb(50, 60))
    src = open_image(path)
    assert isinstance(src, ArraySource) and src.shape == (50, 60)


@pytest.mark.parametrize("content", [b"", b"not an image at all", None])
def test_bad_files_raise_sacerror_naming_the_file(tmp_path, content):
    path = tmp_path / "bad.tif"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SACError, match="bad.tif"):
        open_image(path)


def test_truncated_tiled_tiff(tmp_path, monkeypatch):
    monkeypatch.setattr(reader, "LAZY_PIXELS", 100)
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.random.default_rng(0).integers(0, 255, (512, 512, 3), dtype=np.uint8),
                     tile=(128, 128), compression="zlib")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SACError, match="cut.tif"):
        src = open_image(path)
        src.full()


def test_to_rgb_uint8_shapes():
    assert to_rgb_uint8(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 3] = 255
    assert to_rgb_uint8(rgba).shape == (4, 5, 3) and to_rgb_uint8(rgba).max() == 0
    f = to_rgb_uint8(np.full((3, 3), 0.5, np.float32))
    assert f.dtype == np.uint8 and f[0, 0, 0] == 128
    with pytest.raises(SACError):
        to_rgb_uint8(np.zeros((0, 5), np.uint8))
