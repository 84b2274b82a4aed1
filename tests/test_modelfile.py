"""Model folders: save -> load round trips to identical outputs; clear errors for missing/wrong files."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file

from sac.backbones import BACKBONES, build_sac
from sac.errors import SACError
from sac.modelfile import CONFIG_NAME, WEIGHTS_NAME, load_model_file, read_model_config, save_model
from sac.models.config import PromptConfig, SACConfig, UNetConfig
from sac.models.lora import LoRAQKV

SMALL_UNET = UNetConfig(channels=(8, 16, 32, 64), num_res_units=0)


def _cfg(**kw) -> SACConfig:
    return SACConfig(backbone="vit_tiny", unet=SMALL_UNET, prompts=PromptConfig(n_points=4), **kw)


def _perturb(model) -> None:
    """Make every trained part differ from its init, as after training."""
    with torch.no_grad():
        for m in model.image_encoder.modules():
            if isinstance(m, LoRAQKV):
                m.lora_b_q.normal_(0, 0.1)
                m.lora_b_v.normal_(0, 0.1)
        for p in list(model.mask_decoder.parameters()) + list(model.prompt_generator.parameters()):
            p.add_(torch.randn_like(p) * 0.01)


def _outputs(model, images):
    with torch.no_grad():
        out = model(images, rng=None)
    return out.mask_logits, out.prompt_logits, out.coords, out.labels


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """An official-format SAM state dict (image_encoder.*, prompt_encoder.*, mask_decoder.*) of vit_tiny."""
    torch.manual_seed(1)
    sam = BACKBONES["vit_tiny"].builder()
    path = tmp_path_factory.mktemp("ckpt") / "sam_vit_tiny.pth"
    torch.save(sam.state_dict(), path)
    return path


def test_round_trip_with_user_backbone_weights(tmp_path, tiny_checkpoint):
    torch.manual_seed(0)
    model = build_sac(_cfg(), sam_checkpoint=tiny_checkpoint)
    _perturb(model)
    folder = save_model(tmp_path / "m", model, extra={"val_dice": 0.5})
    meta = json.loads((folder / CONFIG_NAME).read_text())
    assert meta["backbone"] == "vit_tiny" and meta["extra"] == {"val_dice": 0.5}
    assert meta["backbone_sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert meta["includes_backbone"] is False
    assert meta["config"]["unet"]["channels"] == [8, 16, 32, 64]
    keys = set(load_file(str(folder / WEIGHTS_NAME)))
    assert keys == set(model.trained_state_dict())
    assert not any(k.startswith(("prompt_encoder.", "image_encoder.patch_embed")) for k in keys)
    assert any(".lora_b_q" in k for k in keys) and any(k.startswith("mask_decoder.") for k in keys)

    loaded = load_model_file(folder, sam_checkpoint=tiny_checkpoint)
    assert not loaded.training and loaded.model_info["extra"]["val_dice"] == 0.5
    images = torch.rand(2, 3, 128, 128)
    for a, b in zip(_outputs(model.eval(), images), _outputs(loaded, images), strict=False):
        assert torch.equal(a, b)
    # Path to config.json works as well.
    assert read_model_config(folder / CONFIG_NAME)["format"] == "sac-model"


def test_missing_or_wrong_backbone_weights_are_named(tmp_path, tiny_checkpoint):
    model = build_sac(_cfg(), sam_checkpoint=tiny_checkpoint)
    folder = save_model(tmp_path / "m", model)
    sha = read_model_config(folder)["backbone_sha256"]
    with pytest.raises(SACError, match=f"needs the vit_tiny backbone weights .*{sha}.*--sam-checkpoint"):
        load_model_file(folder)
    other = tmp_path / "other.pth"
    torch.save(BACKBONES["vit_tiny"].builder().state_dict(), other)
    with pytest.raises(SACError, match=f"{other}.*has sha256 .*needs .*{sha}"):
        load_model_file(folder, sam_checkpoint=other)
    with pytest.raises(SACError, match="not found"):
        load_model_file(folder, sam_checkpoint=tmp_path / "nope.pth")


def test_random_backbone_model_stores_backbone_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = build_sac(_cfg(), pretrained=False)
    _perturb(model)
    folder = save_model(tmp_path / "m", model)
    assert read_model_config(folder)["includes_backbone"] is True
    loaded = load_model_file(folder)
    images = torch.rand(1, 3, 128, 128)
    for a, b in zip(_outputs(model.eval(), images), _outputs(loaded, images), strict=False):
        assert torch.equal(a, b)


def test_inconsistent_or_incomplete_folders_are_rejected(tmp_path, tiny_checkpoint):
    with pytest.raises(SACError, match="not a SAC model folder"):
        load_model_file(tmp_path)
    model = build_sac(_cfg(), sam_checkpoint=tiny_checkpoint)
    a = save_model(tmp_path / "a", model)
    cfg_b = _cfg()
    cfg_b.lora.rank = 2
    b = save_model(tmp_path / "b", build_sac(cfg_b, sam_checkpoint=tiny_checkpoint))
    # weights from another save: detected by the recorded sha256
    (a / WEIGHTS_NAME).write_bytes((b / WEIGHTS_NAME).read_bytes())
    with pytest.raises(SACError, match="does not belong"):
        load_model_file(a, sam_checkpoint=tiny_checkpoint)
    # a config edited to another rank: tensors no longer fit -> names the mismatching keys
    meta = json.loads((b / CONFIG_NAME).read_text())
    meta["config"]["lora"]["rank"] = 3
    (b / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(SACError, match="does not fit its config .*shape image_encoder.blocks.0.attn.qkv.lora_"):
        load_model_file(b, sam_checkpoint=tiny_checkpoint)
    meta["config"]["lora"]["rnak"] = 3
    (b / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(SACError, match="rnak"):
        load_model_file(b, sam_checkpoint=tiny_checkpoint)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda m: m.update(format_version="2"), "format_version must be an integer"),
        (lambda m: m["config"].update(lora=None), "LoraConfig must be a JSON object, got None"),
        (lambda m: m["config"]["unet"].update(channels=[8, 16]), "invalid model config: unet: need len"),
    ],
)
def test_hand_edited_config_gives_one_line_error(tmp_path, edit, message):
    folder = save_model(tmp_path / "m", build_sac(_cfg(), pretrained=False))
    meta = json.loads((folder / CONFIG_NAME).read_text())
    edit(meta)
    (folder / CONFIG_NAME).write_text(json.dumps(meta))
    with pytest.raises(SACError, match=message) as err:
        load_model_file(folder)
    assert CONFIG_NAME in str(err.value) and "\n" not in str(err.value)


def test_unserialisable_extra_writes_nothing(tmp_path):
    model = build_sac(_cfg(), pretrained=False)
    with pytest.raises(TypeError):
        save_model(tmp_path / "m", model, extra={"bad": object()})
    assert not (tmp_path / "m" / WEIGHTS_NAME).exists() and not (tmp_path / "m" / CONFIG_NAME).exists()


@pytest.mark.slow
def test_litemedsam_model_file_is_small_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = build_sac(SACConfig(prompts=PromptConfig(n_points=4)))
    _perturb(model)
    folder = save_model(tmp_path / "m", model)
    size_mb = (folder / WEIGHTS_NAME).stat().st_size / 1e6
    assert size_mb < 30  # LoRA + decoder + UNet only, not the 39 MB backbone
    loaded = load_model_file(folder)
    images = torch.rand(1, 3, 256, 256)
    for a, b in zip(_outputs(model.eval(), images), _outputs(loaded, images), strict=False):
        assert torch.equal(a, b)
    with pytest.raises(SACError, match="packaged"):
        load_model_file(folder, sam_checkpoint=tmp_path / "x.pth")


def test_half_precision_save_is_half_the_size_and_close(tmp_path, tiny_checkpoint):
    torch.manual_seed(0)
    model = build_sac(_cfg(), sam_checkpoint=tiny_checkpoint)
    _perturb(model)
    full = save_model(tmp_path / "full", model)
    half = save_model(tmp_path / "half", model, half=True)
    ratio = (half / WEIGHTS_NAME).stat().st_size / (full / WEIGHTS_NAME).stat().st_size
    assert 0.45 < ratio < 0.55
    assert read_model_config(half)["stored_dtype"] == "float16"
    loaded = load_model_file(half, sam_checkpoint=tiny_checkpoint)
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    images = torch.rand(1, 3, 128, 128)
    ref, got = _outputs(model.eval(), images)[0], _outputs(loaded, images)[0]
    assert not torch.equal(ref, got)  # really rounded
    torch.testing.assert_close(got, ref, rtol=0.05, atol=0.05)
