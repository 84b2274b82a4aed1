"""Whole-slide input (sac.inference.slide): pyramid level and scale from microns per pixel, ROI, tissue mask, errors.

The slides are pyramidal tiled TIFFs built here from real MoNuSeg tissue (the layout tiffslide and QuPath read).
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from sac.errors import SACError
from sac.inference.slide import (
    SlideSource,
    choose_level,
    is_slide,
    parse_roi,
    tissue_mask,
    write_pyramid_tiff,
)

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def tissue(data_root) -> np.ndarray:
    """512 x 768 of two real MoNuSeg training images side by side (uint8 RGB)."""
    folder = data_root / "monuseg" / "train" / "images"
    a, b = (iio.imread(folder / f"{i}.png")[..., :3] for i in ("TCGA-18-5592-01Z-00-DX1", "TCGA-38-6178-01Z-00-DX1"))
    return np.concatenate([a[:512, :384], b[:512, :384]], axis=1)


@pytest.fixture(scope="module")
def slide(tissue, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    write_pyramid_tiff(path, tissue, mpp=0.25, tile=128)
    return path


def test_levels_scale_and_pixels(slide, tissue):
    assert is_slide(slide)
    src = SlideSource(slide, model_mpp=0.25)  # 40x model on a 40x slide: level 0, no resampling
    assert (src.level, src.scale, src.shape, src.mpp) == (0, 1.0, (512, 768), 0.25)
    np.testing.assert_array_equal(src.read(10, 200, 300, 500), tissue[10:200, 300:500])
    np.testing.assert_array_equal(src.full(), tissue)
    src.close()
    src = SlideSource(slide, model_mpp=0.5)  # 20x model: the 2x level, read as is
    assert (src.level, src.scale, src.shape, src.downsample) == (1, 1.0, (256, 384), 2.0)
    small = src.read(0, 256, 0, 384).astype(int)
    assert np.abs(small - tissue[::2, ::2]).mean() < 20  # the 2x level is a mean of 2x2 pixels
    src.close()
    src = SlideSource(slide, model_mpp=0.7)  # between levels: the finer one, downsampled by the segmenter
    assert src.level == 1 and src.scale == pytest.approx(0.5 / 0.7)
    src.close()
    src = SlideSource(slide, model_mpp=0.25, mpp=0.5)  # --mpp overrides a wrong value: upsampled 2x
    assert (src.level, src.scale, src.mpp) == (0, 2.0, 0.5)
    src.close()


def test_choose_level_rule():
    assert choose_level([1, 4, 16], 0.25, 0.25) == (0, 1.0)
    assert choose_level([1, 4, 16], 0.25, 1.0) == (1, 1.0)
    assert choose_level([1, 4, 16], 0.25, 0.5) == (0, 0.5)  # level 1 (1.0 um) would need 2x upsampling
    assert choose_level([1, 2, 4], 0.5, 0.25) == (0, 2.0)  # a 20x slide on a 40x model is upsampled
    assert choose_level([1, 2, 4], 0.26, 0.25) == (0, 1.0)  # within the snap range: no resampling


def test_roi_is_relative_and_checked(slide, tissue):
    src = SlideSource(slide, model_mpp=0.25, roi=(100, 50, 200, 120))
    assert src.shape == (120, 200) and src.roi == (100, 50, 200, 120)
    np.testing.assert_array_equal(src.full(), tissue[50:170, 100:300])
    x, y = src.to_level0(np.array([0.0, 10.0]), np.array([0.0, 5.0]))
    assert x.tolist() == [100.0, 110.0] and y.tolist() == [50.0, 55.0]
    src.close()
    clipped = SlideSource(slide, model_mpp=0.25, roi=(700, 500, 500, 500))  # clipped to the slide
    assert clipped.shape == (12, 68)
    clipped.close()
    with pytest.raises(SACError, match="outside the slide"):
        SlideSource(slide, model_mpp=0.25, roi=(5000, 0, 10, 10))
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,5", "-1,0,5,5"):
        with pytest.raises(SACError, match="--roi"):
            parse_roi(bad)
    assert parse_roi("1,2,3,4") == (1, 2, 3, 4) and parse_roi(None) is None


def test_missing_mpp_and_unreadable(tissue, tmp_path):
    bare = tmp_path / "bare.tif"
    write_pyramid_tiff(bare, tissue[:256, :256], mpp=None, levels=2, tile=128)
    with pytest.raises(SACError, match="records no microns per pixel; pass --mpp") as err:
        SlideSource(bare, model_mpp=0.25)
    assert "\n" not in str(err.value)
    src = SlideSource(bare, model_mpp=0.25, mpp=0.5)  # --mpp supplies it
    assert src.mpp == 0.5 and src.scale == 2.0
    src.close()
    junk = tmp_path / "junk.svs"
    junk.write_bytes(b"not a slide at all" * 100)
    assert is_slide(junk)  # by suffix: the reader then says what is wrong
    with pytest.raises(SACError, match="cannot read slide"):
        SlideSource(junk, model_mpp=0.25)
    with pytest.raises(SACError, match="no such file"):
        SlideSource(tmp_path / "missing.svs")
    flat = tmp_path / "flat.tif"
    iio.imwrite(flat, tissue[:64, :64])
    assert not is_slide(flat) and not is_slide(tmp_path / "x.png")


def test_tissue_mask_finds_glass(tissue, tmp_path):
    canvas = np.full((512, 1024, 3), 242, np.uint8)  # glass: bright and grey
    canvas[:, :768] = tissue
    path = tmp_path / "glass.tif"
    write_pyramid_tiff(path, canvas, mpp=0.25, tile=128)
    src = SlideSource(path, model_mpp=0.25)
    thumb, f = src.thumbnail(256)
    assert thumb.shape == (128, 256, 3) and f == 4.0
    mask, thr = tissue_mask(thumb)
    assert 0 < thr <= 0.1
    assert mask[:, :192].mean() > 0.9 and not mask[:, 200:].any()
    src.close()


def test_folder_input_picks_up_slides(tmp_path):
    from sac.inference.files import expand_inputs

    for name in ("a.svs", "b.NDPI", "c.png", "notes.txt", ".hidden.svs"):
        (tmp_path / name).write_bytes(b"x")
    paths, problems = expand_inputs([str(tmp_path)])
    assert [p.name for p in paths] == ["a.svs", "b.NDPI", "c.png"] and problems == []
