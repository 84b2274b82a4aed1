"""The interactive (single-nucleus) head: ``SAC.decode_object``, its training variant and its model files.

Tiny random ViT SAM (``vit_tiny``, 128 px) throughout; the real-data measurements are benchmarks/clicks_single.py.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from sac.backbones import build_sac
from sac.errors import SACError
from sac.evaluation.clicks import correction_click, interior_point, jittered_box, mask_iou
from sac.modelfile import load_model_file, save_model
from sac.models.config import SACConfig
from sac.training.config import DataSource, TrainConfig
from sac.training.interactive import InteractiveLitModule, pick_objects

TINY = SACConfig(backbone="vit_tiny")


def _model(interactive: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    return build_sac(replace(TINY, interactive=interactive), pretrained=False)


def _prompts(n: int, npts: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(n, npts, 2, generator=g) * 127
    labels = torch.ones(n, npts, dtype=torch.long)
    labels[:, -1] = 0
    return coords, labels


def test_decode_object_shapes_and_prompt_kinds():
    model = _model()
    emb = torch.randn(2, 256, 8, 8)
    coords, labels = _prompts(6)  # K = 3 prompt sets per image
    boxes = torch.tensor([[10.0, 12.0, 40.0, 50.0]] * 6)
    mask_in = torch.randn(6, 1, 128, 128) * 5
    with torch.no_grad():
        plain, iou = model.decode_object(emb, coords, labels)
        with_box, _ = model.decode_object(emb, coords, labels, boxes=boxes)
        box_only, _ = model.decode_object(emb, None, None, boxes=boxes)
        with_mask, _ = model.decode_object(emb, coords, labels, mask_input=mask_in)
    assert plain.shape == (6, 1, 128, 128) and iou.shape == (6, 1) and box_only.shape == (6, 1, 128, 128)
    assert plain.dtype == torch.float32
    # every prompt kind reaches the decoder
    assert not torch.equal(plain, with_box) and not torch.equal(plain, with_mask)
    with pytest.raises(ValueError):
        model.decode_object(emb, coords[:5], labels[:5])  # 5 sets for 2 images
    with pytest.raises(ValueError):
        model.decode_object(emb, None, None)  # no prompt at all
    with pytest.raises(ValueError):
        model.decode_object(emb, coords, labels, mask_input=mask_in[:2])


def test_object_decoder_starts_as_the_backbone_decoder_and_leaves_the_automatic_path_alone():
    model = _model()
    for (n1, a), (n2, b) in zip(model.mask_decoder.state_dict().items(),
                                model.object_decoder.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(a, b)
    emb = torch.randn(1, 256, 8, 8)
    coords, labels = _prompts(1, 3)
    with torch.no_grad():
        before = model.decode(emb, coords, labels)[0]
        obj_before = model.decode_object(emb, coords, labels)[0]
        for p in model.object_decoder.parameters():
            p.add_(torch.randn_like(p) * 0.1)
        after = model.decode(emb, coords, labels)[0]
        obj_after = model.decode_object(emb, coords, labels)[0]
    assert torch.equal(before, after)  # bit-identical automatic output
    assert not torch.equal(obj_before, obj_after)
    groups = model.parameter_groups()
    assert groups["object_decoder"] == groups["mask_decoder"] > 0
    assert _model(interactive=False).parameter_groups()["object_decoder"] == 0


def test_without_object_decoder_decode_object_is_zero_shot_sam():
    model = _model(interactive=False)
    emb = torch.randn(1, 256, 8, 8)
    coords, labels = _prompts(2)
    with torch.no_grad():
        a = model.decode_object(emb, coords, labels)[0]
        b = model.decode_object(emb, coords, labels, mask_input=torch.randn(2, 1, 128, 128))[0]
    assert torch.equal(a, b)  # the mask input is ignored without the trained head


def test_model_file_round_trip_and_old_files_load(tmp_path):
    model = _model()
    with torch.no_grad():
        for p in model.object_decoder.parameters():
            p.add_(0.01)
    save_model(tmp_path / "m", model)
    again = load_model_file(tmp_path / "m")
    assert again.cfg.interactive and again.object_decoder is not None
    emb = torch.randn(1, 256, 8, 8)
    coords, labels = _prompts(2)
    mask_in = torch.randn(2, 1, 128, 128)
    with torch.no_grad():
        assert torch.equal(model.decode_object(emb, coords, labels, mask_input=mask_in)[0],
                           again.decode_object(emb, coords, labels, mask_input=mask_in)[0])
    # a model file written before the interactive key existed
    old = _model(interactive=False)
    save_model(tmp_path / "old", old)
    cfg_path = tmp_path / "old" / "config.json"
    meta = json.loads(cfg_path.read_text())
    del meta["config"]["interactive"]
    cfg_path.write_text(json.dumps(meta))
    loaded = load_model_file(tmp_path / "old")
    assert loaded.cfg.interactive is False and loaded.object_decoder is None


def test_trained_tensors_include_the_object_decoder_only_when_present():
    keys = _model().trained_state_dict().keys()
    assert any(k.startswith("object_decoder.") for k in keys)
    assert not any(k.startswith("object_decoder.") for k in _model(False).trained_state_dict())


def test_clicks_are_inside_and_corrections_point_at_the_largest_error():
    yy, xx = np.mgrid[:40, :40]
    disk = (yy - 20) ** 2 + (xx - 15) ** 2 <= 49
    assert interior_point(disk) == (15, 20)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = interior_point(disk, rng)
        assert disk[y, x]
    pred = disk.copy()
    pred[:, :15] = False  # left half missed
    x, y, label = correction_click(pred, disk)
    assert label == 1 and disk[y, x] and not pred[y, x]
    extra = disk | ((yy - 5) ** 2 + (xx - 32) ** 2 <= 16)
    x, y, label = correction_click(extra, disk)
    assert label == 0 and extra[y, x] and not disk[y, x]
    assert correction_click(disk, disk) is None
    x0, y0, x1, y1 = jittered_box(disk, rng)
    assert 0 <= x0 < x1 <= 39 and 0 <= y0 < y1 <= 39
    assert mask_iou(pred, disk) == pytest.approx(pred.sum() / disk.sum())


def test_pick_objects_prefers_whole_nuclei():
    lab = np.zeros((30, 30), np.int32)
    lab[0:5, 0:5] = 1  # cut by the border
    lab[10:15, 10:15] = 2
    lab[20:22, 20:22] = 3  # 4 px: too small
    assert pick_objects(lab, 1, None) == [2]
    assert pick_objects(lab, 5, np.random.default_rng(0)) == [2, 1]


def _lit(**kw) -> InteractiveLitModule:
    cfg = replace(TrainConfig(), variant="interactive", monitor="click_iou", backbone="vit_tiny", **kw)
    return InteractiveLitModule(cfg, _model())


@pytest.mark.parametrize("box, refine", [(0.0, 0.0), (1.0, 1.0)])
def test_gradients_reach_only_the_object_decoder(box, refine, tiny_batch):
    module = _lit(object_box_prob=box, object_refine_prob=refine, object_no_mask_prob=0.0)
    module.train()
    loss = module.training_step(tiny_batch(), 0)
    assert torch.isfinite(loss)
    loss.backward()
    got = 0
    for name, p in module.model.named_parameters():
        if name.startswith("object_decoder."):
            got += p.grad is not None and bool(p.grad.abs().sum() > 0)
        else:
            assert p.grad is None, f"frozen {name} got a gradient"
    assert got > 10


def test_refine_rounds_chain_clicks_and_masks(tiny_batch):
    """Each corrective round adds one click to the previous ones and takes the previous round's logits as its mask
    input; a step runs 1..object_refine_rounds of them."""
    module = _lit(object_box_prob=0.0, object_refine_prob=1.0, object_refine_rounds=3, object_no_mask_prob=0.0)
    module.train()
    calls = []
    real = module._decode

    def spy(emb, rows, coords, labels, boxes, mask_input):
        out = real(emb, rows, coords, labels, boxes, mask_input)
        calls.append((coords.shape[1], mask_input, out[0]))
        return out

    module._decode = spy
    rounds = []
    for step in range(6):
        calls.clear()
        assert torch.isfinite(module.training_step(tiny_batch(seed=step), step))
        assert [c[0] for c in calls] == list(range(1, len(calls) + 1))  # one more click per round
        for (_, _, prev), (_, mask_in, _) in zip(calls, calls[1:], strict=False):
            assert torch.equal(mask_in, prev.detach())
        rounds.append(len(calls) - 1)
    assert set(rounds) <= {1, 2, 3} and max(rounds) > 1
    with pytest.raises(SACError, match="--refine-rounds"):
        replace(TrainConfig(), data=[DataSource("x")], variant="interactive", monitor="click_iou", init_from="x",
                object_refine_rounds=0).validate()


def test_config_requires_init_from_and_click_iou():
    base = replace(TrainConfig(), data=[DataSource("x")], variant="interactive")
    with pytest.raises(SACError, match="click_iou"):
        base.validate()
    with pytest.raises(SACError, match="init-from"):
        replace(base, monitor="click_iou").validate()
    with pytest.raises(SACError, match="click_iou"):
        replace(TrainConfig(), data=[DataSource("x")], monitor="click_iou").validate()


def test_short_interactive_run_trains_and_saves(tmp_path, make_dataset):
    from sac.training.run import train

    data = make_dataset(tmp_path / "toy", n_train=3, n_val=1, size=140)
    init = tmp_path / "init"
    base = _model(interactive=False)
    save_model(init, base)
    cfg = replace(TrainConfig(), data=[DataSource(str(data))], variant="interactive", monitor="click_iou",
                  init_from=str(init), backbone="vit_tiny", crops_per_epoch=4, batch_size=2, epochs=2,
                  crop_pool=True, progress_bar=False, objects_per_crop=2)
    summary = train(cfg, tmp_path / "run")
    assert summary["steps"] == 4 and summary["best_val_click_iou"] is not None
    saved = load_model_file(tmp_path / "run" / "best")
    assert saved.cfg.interactive
    # the automatic part is the --init-from model's, unchanged; the object decoder has moved away from it
    base_state, new_state = base.state_dict(), saved.state_dict()
    for k, v in base_state.items():
        assert torch.equal(v, new_state[k]), k
    moved = [k for k, v in saved.object_decoder.state_dict().items()
             if not torch.equal(v, base.mask_decoder.state_dict()[k])]
    assert moved
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert "val_click_iou" in rows[0] and len(rows) == 3


def test_sac_info_counts_the_interactive_head(capsys):
    from sac.cli import main

    assert main(["info", "--json", "--interactive"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["object_decoder"] == info["mask_decoder"] == 4_058_340
    assert info["trainable"] == info["lora"] + info["mask_decoder"] + info["object_decoder"] + info["prompt_generator"]
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["object_decoder"] == 0


def test_init_from_default_keeps_the_head_and_the_resolution_facts():
    """`sac train --init-from default` (the loop of sac serve's "save as training example") resolves the bundled model
    and a plain `sac` run keeps its interactive head and the mpp / nucleus size of its training data."""
    from sac.modelfile import default_model_dir, read_model_config
    from sac.models.config import SACConfig
    from sac.training.interactive import carry_init_facts, init_folder

    assert init_folder("default") == default_model_dir()
    shipped = read_model_config(default_model_dir())["config"]
    carried = carry_init_facts(SACConfig(), "default")
    assert carried.interactive is True and carried.interactive == shipped["interactive"]
    assert carried.mpp == shipped["mpp"] and carried.nucleus_diameter == shipped["nucleus_diameter"]
    assert carry_init_facts(SACConfig(), "default").lora == SACConfig().lora  # the variant's architecture stays
