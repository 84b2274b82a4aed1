"""`sac info`: real parameter counts (paper Table 6) for LiteMedSAM and SAM ViT-B, table and JSON."""

from __future__ import annotations

import json

import pytest

from sac.cli import main


def _info(capsys, *args) -> dict:
    assert main(["info", "--json", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_litemedsam_counts(capsys):
    from sac.backbones import BACKBONES
    from sac.models.lora import attention_modules

    info = _info(capsys, "--lora-rank", "8")
    assert info["backbone"] == "litemedsam"
    # BACKBONES.md measurements of the package model
    assert info["image_encoder"] == 5_726_740
    assert info["prompt_encoder"] == 6_220
    assert info["mask_decoder"] == 4_058_340
    # LoRA expected independently from the untouched architecture: per attention layer
    # 2 * r * (in + out_slice) with |Q| = |V| = heads * key_dim for TinyViT (attn_ratio 1).
    r = 8
    enc = BACKBONES["litemedsam"].builder().image_encoder  # the package's build_lite_medsam()
    expected = sum(2 * r * (a.qkv.in_features + a.num_heads * a.key_dim) for _, a in attention_modules(enc))
    assert info["lora"] == expected == 2 * 29_696
    assert info["trainable"] == info["lora"] + info["mask_decoder"] + info["prompt_generator"]
    assert info["frozen"] == info["image_encoder"] + info["prompt_encoder"]
    assert info["total"] == info["trainable"] + info["frozen"]
    assert info["prompt_generator"] > 0


def test_vit_b_counts_without_weights(capsys):
    info = _info(capsys, "--backbone", "vit_b")
    assert info["image_encoder"] == 89_670_912  # BACKBONES.md, sam_model_registry['vit_b']
    # 12 blocks, fused qkv 768 -> 2304: Q and V slices are 768 wide. r = 4 (default).
    assert info["lora"] == 12 * 2 * 4 * (768 + 768)
    assert info["mask_decoder"] == 4_058_340 and info["prompt_encoder"] == 6_220
    assert info["total"] == info["trainable"] + info["frozen"]
    assert "not loaded" in info["weights"]


def test_variants_and_table(capsys):
    info = _info(capsys, "--no-lora", "--no-prompts")
    assert info["lora"] == 0 and info["prompt_generator"] == 0 and info["trainable"] == 4_058_340
    assert main(["info", "--no-lora"]) == 0
    rows = {line[:32].strip(): line[32:].split() for line in capsys.readouterr().out.splitlines()}
    assert rows["LoRA on Q,V (image encoder)"] == ["0", "not", "used"]
    assert rows["mask decoder"] == ["4,058,340", "trainable"]
    assert rows["image encoder (base)"] == ["5,726,740", "frozen"]
    assert main(["info"]) == 0
    table = capsys.readouterr().out
    assert "5,726,740" in table and "29,696" in table and "trainable" in table and "not loaded" in table


@pytest.mark.parametrize("args", [["--backbone", "vit_zz"], ["--lora-rank", "0"]])
def test_bad_arguments_exit_2(capsys, args):
    assert main(["info", *args]) == 2
    assert capsys.readouterr().err.startswith("error: ")
