"""Tiling geometry and stitching: an identity-like fake model must give its input map back exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from sac.inference.config import InferenceConfig
from sac.inference.segmenter import Segmenter
from sac.inference.tiling import make_tiles, positions, weight_window
from sac.models.config import SACConfig


class IdentitySAC(nn.Module):
    """Stand-in for :class:`sac.models.sac.SAC` whose mask probability is the red channel of its input tile (the
    tests run SAM on every window, ``sam="all"``, without flips, so the stitched map is that channel).

    Records every prompt set it is given, so tests can check how expert points are mapped into tiles.
    """

    def __init__(self, input_size: int = 64, n_points: int = 2):
        super().__init__()
        cfg = SACConfig()
        cfg.prompts.n_points = n_points
        self.cfg = cfg
        self.input_size = input_size
        self.image_encoder = nn.Identity()
        self.prompt_generator = nn.Identity()
        self.prompt_generator.out_channels = 1  # no distance head
        self.prompt_channels = 1
        self.calls: list[tuple[np.ndarray, np.ndarray]] = []

    def prompt_logits(self, images):
        return torch.logit(images[:, 1:2].clamp(1e-4, 1 - 1e-4))

    def prompt_maps(self, images):
        return self.prompt_logits(images), None

    def normalise(self, images):
        return images

    def encode(self, images):
        return images

    def decode(self, emb, coords, labels, mask_prompt=None):
        self.calls.extend(zip(coords.numpy().copy(), labels.numpy().copy(), strict=True))
        red = emb[:, :1].double().clamp(1e-6, 1 - 1e-6)
        return torch.logit(red), torch.zeros(len(emb), 1)


@pytest.mark.parametrize("length,size,overlap", [(1000, 256, 32), (257, 256, 32), (100, 256, 32), (512, 256, 0),
                                                 (3000, 512, 64), (999, 100, 99)])
def test_positions_cover_with_minimum_overlap(length, size, overlap):
    pos = positions(length, size, overlap)
    assert pos[0] == 0
    assert pos == sorted(set(pos))
    if length > size:
        assert pos[-1] + size == length
        gaps = np.diff(pos)
        assert (size - gaps).min() >= min(overlap, size - 1)
    else:
        assert pos == [0]


def test_tiles_cover_every_pixel_once_or_more():
    tiles = make_tiles(700, 450, 256, 32)
    cover = np.zeros((700, 450), int)
    for t in tiles:
        assert t.y1 - t.y0 <= 256 and t.x1 - t.x0 <= 256
        cover[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert cover.min() >= 1 and cover.max() <= 4


def test_weight_window_ramps_and_is_flat_inside():
    w = weight_window(64, 8)
    assert w.shape == (64, 64) and w.dtype == np.float32
    assert w[32, 32] == 1.0 and w.min() > 0
    assert w[0, 32] < w[4, 32] < w[8, 32] == 1.0


@pytest.mark.parametrize("shape", [(200, 150), (50, 30), (64, 64), (130, 65)])
@pytest.mark.parametrize("overlap", [0, 8, 20])
def test_stitch_gives_identity_back(shape, overlap):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(*shape, 3), dtype=np.uint8)
    seg = Segmenter(IdentitySAC(64), InferenceConfig(sam="all", tta=1, overlap=overlap, instances="components"))
    res = seg.segment(image)
    np.testing.assert_allclose(res.prob, image[..., 0] / 255.0, atol=1e-5)
    np.testing.assert_allclose(res.prompt_prob, np.clip(image[..., 1] / 255.0, 1e-4, 1 - 1e-4), atol=1e-5)
    assert res.tiles == len(make_tiles(*shape, 64, overlap))
    np.testing.assert_array_equal(res.mask, res.labels > 0)
    # Every reported prompt lies inside the image (none in the reflected padding).
    p = res.prompts
    assert len(p) and (p[:, 0] >= -0.5).all() and (p[:, 0] < shape[1]).all() and (p[:, 1] < shape[0]).all()


def test_stitch_with_scale_is_close_to_identity():
    yy, xx = np.mgrid[0:300, 0:220]
    red = (127 + 120 * np.sin(xx / 15.0) * np.cos(yy / 11.0)).astype(np.uint8)  # smooth: survives resampling
    image = np.stack([red, red, red], axis=2)
    res = Segmenter(IdentitySAC(64), InferenceConfig(sam="all", tta=1, scale=0.5, overlap=8)).segment(image)
    assert res.prob.shape == (300, 220)
    assert np.abs(res.prob - red / 255.0)[4:-4, 4:-4].mean() < 0.02


def test_expert_points_go_to_the_tiles_that_contain_them():
    model = IdentitySAC(64, n_points=0)
    image = np.full((100, 100, 3), 128, np.uint8)
    seg = Segmenter(model, InferenceConfig(sam="all", tta=1, overlap=8, n_points=0))
    pts = np.array([[10.0, 12.0, 1], [99.0, 99.0, 0]], np.float32)  # top-left tile only / bottom-right only
    seg.segment(image, expert_points=pts)
    tiles = seg.tiles_for(100, 100)
    assert len(model.calls) == len(tiles) == 4
    for tile, (coords, labels) in zip(tiles, model.calls, strict=True):
        real = labels >= 0
        expected = [(x - tile.x0, y - tile.y0, lab) for x, y, lab in pts
                    if tile.x0 <= x < tile.x1 and tile.y0 <= y < tile.y1]
        got = [(c[0], c[1], lab) for c, lab in zip(coords[real], labels[real], strict=True)]
        assert got == expected
    res = seg.segment(image, expert_points=pts)
    np.testing.assert_allclose(res.prompts, pts)  # each point reported once per tile containing it


def test_n_points_override_changes_prompt_count():
    model = IdentitySAC(64, n_points=2)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    Segmenter(model, InferenceConfig(sam="all", tta=1, n_points=5, select="random")).segment(image)
    coords, labels = model.calls[-1]
    assert (labels == 1).sum() == 5 and (labels == 0).sum() == 5


def test_inference_encoder_matches_model_encode():
    """LoRA merged + BN folded copy == SAC.encode (tiny ViT with non-zero LoRA), and the model is untouched."""
    from sac.backbones import build_sac
    from sac.inference.encoder import inference_encoder
    from sac.models.config import PromptConfig
    from sac.models.lora import LoRAQKV

    torch.manual_seed(0)
    model = build_sac(SACConfig(backbone="vit_tiny", prompts=PromptConfig(enabled=False)), pretrained=False)
    for m in model.modules():
        if isinstance(m, LoRAQKV):
            torch.nn.init.normal_(m.lora_b_q, std=0.5)
            torch.nn.init.normal_(m.lora_b_v, std=0.5)
    x = torch.rand(2, 3, 128, 128)
    enc = inference_encoder(model.image_encoder)
    assert enc.sac_merged_lora == 2
    with torch.inference_mode():
        want = model.encode(x)
        got = enc(model.normalise(x).contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert sum(isinstance(m, LoRAQKV) for m in model.modules()) == 2  # original still wrapped


@pytest.mark.slow
def test_inference_encoder_matches_on_litemedsam():
    """The real TinyViT: 10 LoRA layers merged and every Conv2d_BN folded, same embedding."""
    from sac.backbones import build_sac
    from sac.inference.encoder import inference_encoder
    from sac.models.lora import LoRAQKV

    torch.manual_seed(0)
    model = build_sac()
    for m in model.modules():
        if isinstance(m, LoRAQKV):
            torch.nn.init.normal_(m.lora_b_q, std=0.05)
            torch.nn.init.normal_(m.lora_b_v, std=0.05)
    enc = inference_encoder(model.image_encoder)
    assert enc.sac_merged_lora == 10 and enc.sac_fused_bn > 10
    x = torch.rand(1, 3, 256, 256)
    with torch.inference_mode():
        want = model.encode(x)
        got = enc(model.normalise(x).contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)


def test_tile_smaller_than_the_model_input_is_padded_and_exact():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, size=(90, 70, 3), dtype=np.uint8)
    seg = Segmenter(IdentitySAC(64), InferenceConfig(sam="all", tta=1, tile=40, overlap=6))
    res = seg.segment(image)
    assert seg.window() == (40, 6) and res.tiles == len(make_tiles(90, 70, 40, 6))
    np.testing.assert_allclose(res.prob, image[..., 0] / 255.0, atol=1e-5)
    from sac.errors import SACError

    with pytest.raises(SACError, match="larger than the model input"):
        Segmenter(IdentitySAC(64), InferenceConfig(tile=128))


def test_by_default_sam_runs_only_where_expert_points_are():
    model = IdentitySAC(64, n_points=0)
    image = np.zeros((100, 100, 3), np.uint8)
    image[..., 0], image[..., 1] = 200, 40  # SAM (red) would say nucleus, the UNet (green) background
    seg = Segmenter(model, InferenceConfig(overlap=8, tta=1))
    res = seg.segment(image)
    assert model.calls == [] and seg.windows_run == [4, 0]
    np.testing.assert_allclose(res.prob, 40 / 255, atol=1e-4)  # the UNet's map is the result
    res = seg.segment(image, expert_points=np.array([[10.0, 12.0, 1]], np.float32))  # in the top-left window only
    assert len(model.calls) == 1 and seg.windows_run == [8, 1]
    assert np.allclose(res.prob[:30, :30], 200 / 255, atol=1e-3) and np.allclose(res.prob[70:, 70:], 40 / 255,
                                                                                  atol=1e-4)
