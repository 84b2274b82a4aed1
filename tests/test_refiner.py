"""The click refiner (``SAC.refiner``): module, inputs, model files, ``sac train --variant refiner``, ``sac info``.

Tiny random ViT SAM (``vit_tiny``, 128 px) for the model plumbing; the bundled default's refiner is exercised on real
data in tests/test_editor_real.py and measured by benchmarks/clicks_single.py.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from sac.backbones import build_sac
from sac.errors import SACError
from sac.modelfile import load_model_file, save_model
from sac.models.config import SACConfig
from sac.models.refiner import CROP, MIN_CROP, SIGMA, ClickRefiner, crop_origin, refine_crop, refiner_inputs
from sac.training.config import DataSource, TrainConfig

TINY = SACConfig(backbone="vit_tiny")


def _model(refiner: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    return build_sac(replace(TINY, interactive=True, refiner=refiner), pretrained=False)


def _crop(seed: int = 0, size: int = 40):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, size, size, generator=g), torch.randn(size, size, generator=g) * 5, \
        torch.randn(size, size, generator=g) * 5


def test_untrained_refiner_returns_the_heads_logits_and_has_0_39m_parameters():
    net = ClickRefiner()
    image, z, unet = _crop()
    out = net.refine(image, z, unet, torch.tensor([[20.0, 20.0, 1.0]]))
    assert out.shape == z.shape and torch.equal(out, z)  # zero-initialised output layer: identity on the head
    assert sum(p.numel() for p in net.parameters()) == 387_713
    with torch.no_grad():
        net.out.bias.fill_(-3.0)
    assert torch.allclose(net.refine(image, z.clamp(-20, 20), unet, torch.zeros(0, 3)), z - 3.0)


def test_refiner_inputs_channels():
    image, z, unet = _crop(size=33)
    clicks = torch.tensor([[5.0, 7.0, 1.0], [30.0, 2.0, 0.0], [25.0, 25.0, -1.0]])  # positive, negative, padding
    x = refiner_inputs(image * 0.5 + 0.2, z, unet, clicks)
    assert x.shape == (7, 33, 33) and x.dtype == torch.float32
    # the image, standardised per channel: mean 0, std just under 1 (the +0.05 guard)
    assert torch.allclose(x[:3].mean((1, 2)), torch.zeros(3), atol=1e-5)
    assert ((x[:3].std((1, 2), unbiased=False) < 1) & (x[:3].std((1, 2), unbiased=False) > 0.5)).all()
    assert torch.allclose(x[3], torch.tanh(z / 4)) and torch.allclose(x[4], torch.tanh(unet / 4))
    pos, neg = x[5], x[6]
    assert pos[7, 5] == 1 and neg[2, 30] == 1 and pos[2, 30] < 1e-6 and neg[7, 5] < 1e-6
    assert pos[25, 25] < 1e-6 and neg[25, 25] < 1e-6  # the padding click (label -1) is not drawn
    assert abs(float(pos[7, 5 + 2]) - float(torch.exp(torch.tensor(-4 / (2 * SIGMA**2))))) < 1e-6


def test_crop_origin_centres_and_stays_inside():
    assert crop_origin(100, 100, 128, 256, 256) == (36, 36)
    assert crop_origin(3, 250, 128, 256, 256) == (0, 128)
    assert crop_origin(50, 50, 128, 90, 100) == (0, 0)  # a window smaller than the crop: the whole window


def test_refine_crop_fits_the_heads_mask_and_the_clicks():
    fg = np.zeros((256, 256), bool)
    fg[95:106, 95:106] = True  # an 11 px nucleus at the click: the training crop
    assert refine_crop(fg, np.array([[100.0, 100.0]])) == (68, 68, MIN_CROP)
    fg[60:141, 100] = True  # reaches 40 px above and below the click: 2 * 40 + 2 * 16 = 112
    assert refine_crop(fg, np.array([[100.0, 100.0]])) == (44, 44, 112)
    fg[:] = False
    # a correction click 30 px from the first: 2 * 30 + 32 = 92 -> 96, still centred on the first click
    assert refine_crop(fg, np.array([[100.0, 100.0], [130.0, 100.0]])) == (52, 52, 96)
    fg[0, 0] = True  # a mask across the window is capped, and the crop stays inside it
    assert refine_crop(fg, np.array([[10.0, 250.0]])) == (0, 128, CROP)


def test_refiner_needs_the_interactive_head_and_the_unet():
    with pytest.raises(ValueError, match="refiner"):
        build_sac(replace(TINY, refiner=True), pretrained=False)
    with pytest.raises(ValueError, match="refiner"):
        build_sac(replace(TINY, interactive=True, refiner=True, prompts=replace(TINY.prompts, enabled=False)),
                  pretrained=False)


def test_refiner_is_saved_and_loaded_with_the_model(tmp_path):
    model = _model()
    with torch.no_grad():
        for p in model.refiner.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    assert any(k.startswith("refiner.") for k in model.trained_state_dict())
    assert not any(k.startswith("refiner.") for k in _model(refiner=False).trained_state_dict())
    assert model.parameter_groups()["refiner"] == 387_713
    save_model(tmp_path / "m", model)
    again = load_model_file(tmp_path / "m")
    assert again.cfg.refiner and again.refiner is not None
    for k, v in model.refiner.state_dict().items():
        assert torch.equal(v, again.refiner.state_dict()[k]), k
    # model files written before the refiner existed (no "refiner" key) load without one
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["config"]["refiner"] is True


def test_short_refiner_run_trains_only_the_refiner(tmp_path, make_dataset):
    from sac.training.run import train

    data = make_dataset(tmp_path / "toy", n_train=3, n_val=1, size=140)
    init = tmp_path / "init"
    base = _model(refiner=False)
    save_model(init, base)
    cfg = replace(TrainConfig(), data=[DataSource(str(data))], variant="refiner", monitor="click_iou",
                  init_from=str(init), backbone="vit_tiny", crops_per_epoch=4, batch_size=2, epochs=2,
                  crop_pool=True, progress_bar=False, objects_per_crop=2, object_box_prob=0.5, lr=1e-3)
    summary = train(cfg, tmp_path / "run")
    assert summary["steps"] == 4 and summary["best_val_click_iou"] is not None
    saved = load_model_file(tmp_path / "run" / "best")
    assert saved.cfg.refiner and saved.cfg.interactive
    base_state, new_state = base.state_dict(), saved.state_dict()
    for k, v in base_state.items():  # the head and the automatic model: the --init-from model's, unchanged
        assert torch.equal(v, new_state[k]), k
    assert not torch.equal(saved.refiner.out.weight, torch.zeros_like(saved.refiner.out.weight))  # it trained
    header = (tmp_path / "run" / "metrics.csv").read_text().splitlines()[0]
    assert "val_click_iou" in header and "val_click_iou_head" in header

    # a head trained again (--variant interactive) from a model with a refiner drops it: it fit the old head
    cfg2 = replace(cfg, variant="interactive", init_from=str(tmp_path / "run" / "best"), epochs=1)
    train(cfg2, tmp_path / "run2")
    assert not load_model_file(tmp_path / "run2" / "best").cfg.refiner


def test_refiner_variant_needs_a_model_with_an_interactive_head(tmp_path, make_dataset):
    from sac.training.run import train

    init = tmp_path / "init"
    torch.manual_seed(0)
    save_model(init, build_sac(TINY, pretrained=False))
    data = make_dataset(tmp_path / "toy", n_train=2, n_val=1, size=140)
    cfg = replace(TrainConfig(), data=[DataSource(str(data))], variant="refiner", monitor="click_iou",
                  init_from=str(init), backbone="vit_tiny", progress_bar=False)
    with pytest.raises(SACError, match="no trained interactive head"):
        train(cfg, tmp_path / "run")
    with pytest.raises(SACError, match="click_iou"):
        replace(cfg, monitor="dice").validate()


def test_sac_info_counts_the_refiner(capsys):
    from sac.cli import main

    assert main(["info", "--json", "--refiner"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["refiner"] == 387_713 and info["object_decoder"] == 4_058_340
    assert info["trainable"] == (info["lora"] + info["mask_decoder"] + info["object_decoder"] + info["refiner"]
                                 + info["prompt_generator"])
