"""Inference options beyond the defaults: flip test-time augmentation of the prompt UNet (``--tta``) and the
watershed marker height on a distance head's map (``--split-h``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sac.inference.segmenter as segmenter_module
from sac.backbones import build_sac
from sac.cli import main
from sac.errors import SACError
from sac.inference.config import InferenceConfig
from sac.inference.segmenter import Segmenter
from sac.models.config import SACConfig, UNetConfig


@pytest.fixture(scope="module")
def model():
    """A random tiny SAC with a distance head: its UNet is not flip-equivariant by itself."""
    torch.manual_seed(0)
    return build_sac(SACConfig(backbone="vit_tiny", unet=UNetConfig(distance_head=True)), pretrained=False).eval()


def _image(size: int) -> np.ndarray:
    return (np.random.default_rng(1).random((size, size, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("axis", [0, 1])
def test_tta_makes_the_prompt_maps_equivariant_under_flips(model, axis):
    image = _image(model.input_size)  # one tile: the stitched maps are the tile's own maps
    flipped = np.ascontiguousarray(np.flip(image, axis))

    def maps(cfg, img):
        res = Segmenter(model, cfg).segment(img)
        return np.stack([res.prompt_prob, res.distance])

    plain, plain_f = maps(InferenceConfig(tta=1), image), maps(InferenceConfig(tta=1), flipped)
    tta, tta_f = maps(InferenceConfig(tta=4), image), maps(InferenceConfig(tta=4), flipped)
    # without TTA a random UNet is visibly not equivariant; with it, flipping the input flips the output
    assert np.abs(np.flip(plain, axis + 1) - plain_f).max() > 1e-3
    np.testing.assert_allclose(np.flip(tta, axis + 1), tta_f, atol=1e-5)
    assert np.abs(tta - plain).max() > 1e-3  # the averaged maps are not the single pass's
    assert Segmenter(model, InferenceConfig()).settings()["tta"] == 2  # on by default, the tile and its mirror
    # two flips (the tile and its left-right mirror) make the maps equivariant under that flip only
    two, two_f = maps(InferenceConfig(tta=2), image), maps(InferenceConfig(tta=2), flipped)
    if axis == 1:
        np.testing.assert_allclose(np.flip(two, axis + 1), two_f, atol=1e-5)
    else:
        assert np.abs(np.flip(two, axis + 1) - two_f).max() > 1e-3


@pytest.mark.parametrize("bad", [0, 3, True, "4"])
def test_tta_takes_a_number_of_mirror_images(bad):
    with pytest.raises(SACError, match="--tta must be one of 1, 2, 4"):
        InferenceConfig(tta=bad).validate()


def test_split_h_reaches_the_watershed_only_with_a_distance_map(model, monkeypatch):
    seen = []
    real = segmenter_module.make_instances
    monkeypatch.setattr(segmenter_module, "make_instances",
                        lambda *a, **kw: seen.append((kw.get("h"), kw.get("distance") is not None)) or real(*a, **kw))
    image = _image(100)
    Segmenter(model, InferenceConfig(split_h=0.1)).segment(image)
    Segmenter(model).segment(image)
    Segmenter(model, InferenceConfig(split_h=0.1, use_distance=False)).segment(image)  # h is in the map's units
    assert seen == [(0.1, True), (None, True), (None, False)]


def test_lower_split_h_never_gives_fewer_nuclei(touching_disks):
    from sac.data.targets import distance_target
    from sac.postprocess.instances import make_instances

    mask = touching_disks(200, 200, 60, 6, 10, seed=0)
    from scipy import ndimage as ndi

    comp, _ = ndi.label(mask)
    dist = distance_target(comp) * np.random.default_rng(0).uniform(0.7, 1.0, mask.shape)  # ragged, many maxima
    counts = [make_instances(mask, "watershed", min_area=1, distance=dist, h=h).max() for h in (0.05, 0.15, 0.4)]
    assert counts[0] >= counts[1] >= counts[2] and counts[0] > counts[2]


@pytest.mark.parametrize("value", [0.0, 1.0, -0.2])
def test_bad_split_h_is_a_clear_error(value, tmp_path, capsys):
    with pytest.raises(SACError, match="--split-h must be in"):
        InferenceConfig(split_h=value).validate()
    image = tmp_path / "a.png"
    from PIL import Image

    Image.fromarray(_image(40)).save(image)
    assert main(["segment", str(image), "--out", str(tmp_path / "o"), "--split-h", str(value)]) == 2
    err = capsys.readouterr().err
    assert "--split-h must be in" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kwargs,match", [({"sam": "everywhere"}, "--sam must be one of"),
                                          ({"sam": "uncertain", "sam_uncertain": 1.5}, "sam_uncertain must be")])
def test_bad_sam_settings_are_one_line_errors(kwargs, match):
    from sac.errors import SACError

    with pytest.raises(SACError, match=match) as err:
        InferenceConfig(**kwargs).validate()
    assert "\n" not in str(err.value)
