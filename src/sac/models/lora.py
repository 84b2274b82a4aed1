"""LoRA on the Q and V projections of every fused ``qkv`` Linear of a SAM image encoder (paper eq. 1).

``h = W x + (alpha / r) * B A x`` is added to the Q and V output columns only; K is untouched, the base
weight ``W`` stays frozen and ``B`` starts at zero, so a freshly wrapped encoder computes exactly what the
base encoder computes. The base model is never edited: each ``attn.qkv`` Linear is replaced by a
:class:`LoRAQKV` that holds the original Linear as ``base`` (micro-sam ``peft_sam`` / SAMed ``_LoRA_qkv``).

Which output columns are Q and V depends on how the attention splits the fused output:

* ``"vit"`` (segment-anything ``ImageEncoderViT``): ``qkv(x).reshape(B, N, 3, heads, hd)`` -- Q is the first
  third of the columns, K the middle third, V the last third.
* ``"tinyvit"`` (LiteMedSAM's TinyViT): ``qkv(x).view(B, N, heads, -1).split([key_dim, key_dim, d])`` -- the
  columns are ``[q|k|v]`` interleaved head by head, so head ``h`` owns columns
  ``h*(2*key_dim+d) + [0, key_dim)`` (Q), ``+ [key_dim, 2*key_dim)`` (K), ``+ [2*key_dim, 2*key_dim+d)`` (V).

Hand-written rather than taken from ``peft``: peft's LoRA adapts a whole Linear and cannot address an
interleaved column subset, which the TinyViT layout needs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sac.models.config import LoraConfig

LAYOUTS = ("vit", "tinyvit")


def qkv_column_indices(attn: nn.Module, layout: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Output-column indices (int64, 1-D) of Q, K and V in ``attn.qkv`` for the given attention layout."""
    out = attn.qkv.out_features
    if layout == "vit":
        if out % 3:
            raise ValueError(f"vit qkv has {out} output features, not a multiple of 3")
        third = out // 3
        cols = torch.arange(out)
        return cols[:third], cols[third : 2 * third], cols[2 * third :]
    if layout == "tinyvit":
        heads, key_dim, d = attn.num_heads, attn.key_dim, attn.d
        per_head = 2 * key_dim + d
        if heads * per_head != out:
            raise ValueError(f"tinyvit qkv: {heads} heads x {per_head} != {out} output features")
        base = torch.arange(heads)[:, None] * per_head
        q = (base + torch.arange(key_dim)).reshape(-1)
        k = (base + key_dim + torch.arange(key_dim)).reshape(-1)
        v = (base + 2 * key_dim + torch.arange(d)).reshape(-1)
        return q, k, v
    raise ValueError(f"unknown attention layout {layout!r} (valid: {', '.join(LAYOUTS)})")


class LoRAQKV(nn.Module):
    """A frozen fused ``qkv`` Linear plus rank-``r`` updates on its Q and V output columns.

    Input ``x`` float ``[..., in_features]``; output ``[..., 3-way out_features]`` exactly like ``base``.
    Trainable parameters: ``lora_a_q`` / ``lora_a_v`` (``[r, in]``, Kaiming-uniform) and ``lora_b_q`` /
    ``lora_b_v`` (``[|Q|, r]`` / ``[|V|, r]``, zero), i.e. ``2 * r * (in + |Q|)`` when ``|Q| == |V|``.
    """

    def __init__(self, base: nn.Linear, q_idx: torch.Tensor, v_idx: torch.Tensor, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        self.rank = rank
        self.scaling = alpha / rank
        dev = base.weight.device
        # Index buffers are non-persistent: they are derived from the architecture, not learned.
        self.register_buffer("q_idx", q_idx.to(dev), persistent=False)
        self.register_buffer("v_idx", v_idx.to(dev), persistent=False)
        dtype = base.weight.dtype
        self.lora_a_q = nn.Parameter(torch.empty(rank, base.in_features, device=dev, dtype=dtype))
        self.lora_b_q = nn.Parameter(torch.zeros(len(q_idx), rank, device=dev, dtype=dtype))
        self.lora_a_v = nn.Parameter(torch.empty(rank, base.in_features, device=dev, dtype=dtype))
        self.lora_b_v = nn.Parameter(torch.zeros(len(v_idx), rank, device=dev, dtype=dtype))
        if dev.type != "meta":
            # Same init as the LoRA paper / peft: A ~ Kaiming-uniform, B = 0 -> delta starts at exactly 0.
            nn.init.kaiming_uniform_(self.lora_a_q, a=math.sqrt(5))
            nn.init.kaiming_uniform_(self.lora_a_v, a=math.sqrt(5))

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        dq = (x @ self.lora_a_q.t()) @ self.lora_b_q.t()
        dv = (x @ self.lora_a_v.t()) @ self.lora_b_v.t()
        # index_add (out-of-place) adds the deltas to exactly the Q and V columns, whatever the layout.
        out = out.index_add(-1, self.q_idx, dq, alpha=self.scaling)
        return out.index_add(-1, self.v_idx, dv, alpha=self.scaling)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, scaling={self.scaling:g}, q={len(self.q_idx)}, v={len(self.v_idx)}"


def attention_modules(encoder: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every module of ``encoder`` owning a fused ``qkv`` Linear (or an already wrapped one), in order."""
    return [
        (name, m)
        for name, m in encoder.named_modules()
        if isinstance(getattr(m, "qkv", None), (nn.Linear, LoRAQKV))
    ]


def apply_lora(encoder: nn.Module, cfg: LoraConfig, layout: str) -> list[LoRAQKV]:
    """Freeze ``encoder`` and wrap the ``qkv`` of its attention layers with :class:`LoRAQKV` (in place).

    ``cfg.last_n_layers`` limits the wrap to the last N attention layers (None = all, the paper).
    Returns the wrappers in encoder order. All base parameters get ``requires_grad=False``.
    """
    for p in encoder.parameters():
        p.requires_grad_(False)
    layers = attention_modules(encoder)
    if not layers:
        raise ValueError("the image encoder has no attention layer with a fused `qkv` Linear")
    if any(isinstance(m.qkv, LoRAQKV) for _, m in layers):
        raise ValueError("LoRA is already applied to this encoder")
    if cfg.last_n_layers is not None:
        if cfg.last_n_layers < 1:
            raise ValueError(f"lora.last_n_layers must be >= 1 or None, got {cfg.last_n_layers}")
        layers = layers[-cfg.last_n_layers :]
    wrappers = []
    for _, attn in layers:
        q_idx, _, v_idx = qkv_column_indices(attn, layout)
        wrapper = LoRAQKV(attn.qkv, q_idx, v_idx, cfg.rank, cfg.alpha)
        attn.qkv = wrapper
        wrappers.append(wrapper)
    return wrappers


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The LoRA parameters (A and B of Q and V) of every :class:`LoRAQKV` under ``module``."""
    return [p for m in module.modules() if isinstance(m, LoRAQKV) for n, p in m.named_parameters(recurse=False)]
