"""Training internals on a tiny random ViT SAM (``vit_tiny``, 128 px): variants, encoder split, metrics,
atomic run-folder IO, hold-out. The end-to-end ``sac train`` runs are in test_training_cli.py."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from sac.backbones import build_sac
from sac.data.dataset import CropDataset, grid_positions
from sac.errors import SACError
from sac.training.callbacks import AtomicCheckpointIO, replace_dir
from sac.training.config import DataSource, TrainConfig, from_dict, to_dict
from sac.training.datamodule import holdout, resolve_splits
from sac.training.encoder_split import SplitEncoder
from sac.training.module import SACLitModule, expert_points_from_labels, sac_config


def _module(variant: str, **kw) -> SACLitModule:
    cfg = replace(TrainConfig(), variant=variant, backbone="vit_tiny", **kw)
    torch.manual_seed(0)
    return SACLitModule(cfg, build_sac(sac_config(cfg), pretrained=False))


def _trainable(module: SACLitModule) -> set[str]:
    groups = module.model.named_groups()
    return {g for g, ps in groups.items() if any(p.requires_grad for _, p in ps)}


@pytest.mark.parametrize("variant, expected", [
    ("sac", {"lora", "mask_decoder", "prompt_generator"}),
    ("sam-ft", {"mask_decoder"}),
    ("lora-noprompt", {"lora", "mask_decoder"}),
    ("unet", {"prompt_generator"}),
])
def test_variants_train_exactly_their_parameters(variant, expected, tiny_batch):
    module = _module(variant)
    assert _trainable(module) == expected
    if variant == "lora-noprompt" or variant == "sam-ft":
        assert module.model.prompt_generator is None
    module.train()
    loss = module.training_step(tiny_batch(), 0)
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in module.model.named_parameters():
        if not p.requires_grad:
            assert p.grad is None, f"frozen {name} got a gradient"
        elif p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
    # every trainable group receives gradient (the decoder's unused multimask/IoU heads may not)
    for group, params in module.model.named_groups().items():
        if group in expected:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in params), group


def test_sac_loss_decreases_on_a_fixed_batch(tiny_batch):
    module = _module("sac", lr=1e-3, lr_prompt=3e-3)
    module.train()
    opt = module.configure_optimizers()
    batch = tiny_batch()
    losses = []
    for i in range(6):
        opt.zero_grad()
        loss = module.training_step(batch, i)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("last_n, channels_last", [(None, False), (1, True)])
def test_split_encoder_equals_model_encode(last_n, channels_last, tiny_batch):
    module = _module("sac", lora_last_n_layers=last_n)
    model = module.model
    with torch.no_grad():  # make LoRA non-trivial so a wrong split would show
        for n, p in model.named_parameters():
            if "lora_b" in n:
                p.normal_(0, 0.1)
    split = SplitEncoder(model, channels_last=channels_last, no_grad_prefix=True, cache=True)
    # vit_tiny: embed, 2 blocks, neck; LoRA on both blocks -> prefix 1 unit, on the last only -> 2 units
    assert split.n_prefix == (1 if last_n is None else 2)
    images = tiny_batch()["image"]
    with torch.no_grad():
        ref = model.encode(images)
        got = split.encode(images)
        cached = split.encode(images, keys=["a", "b"])
        hit = split.encode(images, keys=["a", "b"])
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cached, ref, rtol=2e-2, atol=2e-2)  # fp16 cache
    torch.testing.assert_close(hit, cached)
    assert set(split.cache) == {"a", "b"}


def test_split_encoder_gradient_reaches_lora_only_after_prefix(tiny_batch):
    module = _module("sac", lora_last_n_layers=1)
    emb = module.encoder.encode(tiny_batch()["image"])
    emb.sum().backward()
    grads = {n: p.grad for n, p in module.model.named_parameters() if "lora_a" in n}
    assert grads and all(g is not None and g.abs().sum() == 0 for g in grads.values())  # B = 0 at init
    b_grads = [p.grad for n, p in module.model.named_parameters() if "lora_b" in n]
    assert all(g is not None and g.abs().sum() > 0 for g in b_grads)


def test_expert_points_are_inside_nuclei_or_far_from_them(tiny_batch):
    labels = tiny_batch(4)["labels"]
    coords, plabels = expert_points_from_labels(labels, 3, np.random.default_rng(0))
    assert coords.shape == (4, 6, 2) and plabels.shape == (4, 6)
    n_pos = n_neg = 0
    for i in range(4):
        for (x, y), lab in zip(coords[i], plabels[i], strict=False):
            if lab == 1:
                n_pos += 1
                assert labels[i, int(y), int(x)] > 0
            elif lab == 0:
                n_neg += 1
                y0, x0 = int(y), int(x)
                assert (labels[i, max(y0 - 3, 0):y0 + 4, max(x0 - 3, 0):x0 + 4] == 0).all()
        assert (plabels[i] == 1).sum() == (plabels[i] == 0).sum()  # k positives, k negatives
    assert n_pos > 0 and n_neg == n_pos


def test_grid_crops_are_fixed_and_padding_is_marked(tmp_path):
    import imageio.v3 as iio

    assert grid_positions(1000, 256, 2) == [0, 744]
    assert grid_positions(200, 256, 3) == [0]
    img = np.zeros((100, 300, 3), np.uint8)
    lab = np.zeros((100, 300), np.uint16)
    lab[10:20, 10:20] = 1
    for sub, arr in (("images", img), ("labels", lab)):
        (tmp_path / "src" / "val" / sub).mkdir(parents=True)
        iio.imwrite(tmp_path / "src" / "val" / sub / "x.png", arr)
    ds = CropDataset(sources=[(tmp_path / "src", "val", ["x"])], crop_size=128, augment=False, grid=True,
                     per_image=4)
    assert len(ds) == 2  # one row (100 <= 128) x two columns
    item = ds[0]
    assert item["valid"][0, :100].all() and not item["valid"][0, 100:].any()
    assert item["mask"].sum() == 100 and item["key"] == "src/x" and item["index"] == 0
    assert ds[1]["index"] == 1 and torch.equal(ds[1]["image"], ds[1]["image"])  # fixed: no randomness


def test_holdout_is_seeded_and_recorded(tmp_path, make_dataset):
    ids = [f"img{i}" for i in range(10)]
    assert holdout(ids, 3, 0) == holdout(list(reversed(ids)), 3, 0)
    assert holdout(ids, 3, 0) != holdout(ids, 3, 1)
    with pytest.raises(SACError, match="all 10"):
        holdout(ids, 10, 0)
    root = make_dataset(tmp_path / "d", n_train=5, n_val=0, size=96)
    cfg = replace(TrainConfig(), data=[DataSource(str(root), "train")], val_from_train=2)
    train, val = resolve_splits(cfg)
    held = val[0][2]
    assert len(held) == 2 and not set(held) & set(train[0][1]) and len(train[0][1]) == 3
    with pytest.raises(SACError, match="val-from-train"):
        resolve_splits(replace(cfg, val_from_train=0))


def test_atomic_checkpoint_io_never_truncates(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"a": torch.ones(3)}, path)

    def boom(*a, **k):
        raise KeyboardInterrupt  # a kill while the new checkpoint is being written

    monkeypatch.setattr("os.fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"a": torch.zeros(1000)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_replace_dir_keeps_old_folder_on_failure(tmp_path):
    target = tmp_path / "best"
    replace_dir(lambda d: (d.mkdir(), (d / "f.txt").write_text("1")), target)

    def half(d: Path):
        d.mkdir()
        (d / "f.txt").write_text("2")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        replace_dir(half, target)
    assert (target / "f.txt").read_text() == "1"
    replace_dir(lambda d: (d.mkdir(), (d / "f.txt").write_text("3")), target)
    assert (target / "f.txt").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best"]


def test_config_validation_names_the_value():
    for kw, msg in ((dict(variant="x"), "--variant"), (dict(data=[]), "--data"), (dict(batch_size=0), "batch-size"),
                    (dict(scale_min=2.0, scale_max=1.0), "scale"), (dict(max_time=0), "max-time")):
        cfg = replace(replace(TrainConfig(), data=[DataSource("r")]), **kw)
        with pytest.raises(SACError, match=msg):
            cfg.validate()
    # what a run folder stores (config.json) reads back as the same config, nested DataSources included
    cfg = replace(TrainConfig(), data=[DataSource("a", "train"), DataSource("b", "val")], variant="unet",
                  lora_last_n_layers=4, max_time=12.5, scale_min=0.9)
    assert from_dict(json.loads(json.dumps(to_dict(cfg)))) == cfg
    with pytest.raises(ValueError, match="nonsense"):
        from_dict({**to_dict(cfg), "nonsense": 1})


def test_vary_points_draws_no_points_and_log_uniform_counts():
    module = _module("sac", vary_points=True, n_points=64)
    draws = [module._draw_points() for _ in range(800)]
    assert 150 < draws.count(0) < 250  # p = 1/4
    nonzero = [d for d in draws if d]
    assert min(nonzero) == 1 and 48 <= max(nonzero) <= 64
    # log-uniform: about half of the non-zero counts are <= sqrt(64) = 8
    assert 0.4 < np.mean([d <= 8 for d in nonzero]) < 0.6
    assert _module("sac", n_points=64)._draw_points() is None  # off: the configured count


def test_select_prompts_n_points_override(tiny_batch):
    module = _module("sac", n_points=4)
    batch = tiny_batch()
    logits = module.model.prompt_logits(batch["image"])
    _, none = module.model.select_prompts(logits, batch_size=2, n_points=0)
    assert (none == -1).all()  # no automatic point: SAM's "not a point" padding only
    _, labels = module.model.select_prompts(logits, batch_size=2, n_points=1)
    assert ((labels >= 0).sum(1) <= 2).all()  # at most 1 positive + 1 negative per image
    # With --vary-points every training step draws its count and hands it to select_prompts.
    varied = _module("sac", n_points=4, vary_points=True)
    seen = []
    select = varied.model.select_prompts

    def spy(*args, **kw):
        seen.append(kw.get("n_points"))
        return select(*args, **kw)

    varied.model.select_prompts = spy
    for step in range(6):
        assert torch.isfinite(varied.training_step(batch, step))
    assert len(seen) == 6 and all(isinstance(n, int) and 0 <= n <= 4 for n in seen)
    assert len(set(seen)) > 1  # drawn, not the fixed configured count
