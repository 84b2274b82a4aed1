"""An inference-only copy of a SAC image encoder: LoRA merged into the weights, BatchNorm folded into convs.

At inference nothing trains, so

* each :class:`~sac.models.lora.LoRAQKV` (base Linear + low-rank updates added with two ``index_add`` per call)
  becomes one plain ``nn.Linear`` with ``W + (alpha / r) * B A`` written into its Q and V rows;
* each TinyViT ``Conv2d_BN`` (conv then BatchNorm in eval mode) becomes one conv (TinyViT's own ``fuse()``).

Same maths up to float rounding (tested against ``SAC.encode``). Measured on LiteMedSAM (docs/segment.md): the
LoRA wrappers cost ~20% of the encoder time and BatchNorm ~7%. The copy is deep, so the model a caller passes in
(e.g. one being trained) is never modified.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from sac.models.lora import LoRAQKV


@torch.no_grad()
def merged_linear(wrapper: LoRAQKV) -> nn.Linear:
    """One Linear computing exactly ``wrapper(x)``: base weight plus scaled ``B @ A`` on the Q and V rows."""
    base = wrapper.base
    out = nn.Linear(base.in_features, base.out_features, bias=base.bias is not None,
                    device=base.weight.device, dtype=base.weight.dtype)
    weight = base.weight.detach().clone()
    weight.index_add_(0, wrapper.q_idx, wrapper.lora_b_q @ wrapper.lora_a_q, alpha=wrapper.scaling)
    weight.index_add_(0, wrapper.v_idx, wrapper.lora_b_v @ wrapper.lora_a_v, alpha=wrapper.scaling)
    out.weight.copy_(weight)
    if base.bias is not None:
        out.bias.copy_(base.bias)
    return out.requires_grad_(False)


def _replace_children(module: nn.Module) -> tuple[int, int]:
    merged = fused = 0
    for name, child in list(module.named_children()):
        if isinstance(child, LoRAQKV):
            setattr(module, name, merged_linear(child))
            merged += 1
        elif type(child).__name__ == "Conv2d_BN" and callable(getattr(child, "fuse", None)):
            setattr(module, name, child.fuse().requires_grad_(False))
            fused += 1
        else:
            m, f = _replace_children(child)
            merged, fused = merged + m, fused + f
    return merged, fused


def inference_encoder(image_encoder: nn.Module, channels_last: bool = True) -> nn.Module:
    """Deep copy of ``image_encoder`` (eval mode, no grad) with LoRA merged and conv+BN fused.

    Input/output as the original: normalised ``float32 [B, 3, S, S]`` -> ``[B, 256, h, w]``.
    """
    enc = copy.deepcopy(image_encoder).eval()
    enc.sac_merged_lora, enc.sac_fused_bn = _replace_children(enc)
    for p in enc.parameters():
        p.requires_grad_(False)
    if channels_last:
        enc = enc.to(memory_format=torch.channels_last)
    return enc.eval()
