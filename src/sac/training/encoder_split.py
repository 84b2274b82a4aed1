"""CPU-practical image-encoder forward for training: frozen prefix under ``no_grad`` (+ optional cache).

With LoRA only in some attention layers (``LoraConfig.last_n_layers``, or LiteMedSAM's conv stage 0 which has
no attention at all), every encoder unit *before* the first LoRA layer is frozen. Running it under
``torch.no_grad()`` keeps autograd from recording activations it will never use, and its output for a fixed
input (a validation crop) never changes, so it can be cached. The result equals ``SAC.encode`` exactly
(tested); only the bookkeeping differs.

The encoder is cut into a list of "units" replicating the backbone's own ``forward``:

* ``tinyvit`` (LiteMedSAM ``TinyViT.forward_features``): patch_embed, layers[0] (conv stage), then every block
  and downsample of layers[1:], then reshape to 64x64 + neck.
* ``vit`` (segment-anything ``ImageEncoderViT.forward``): patch_embed (+pos_embed), each block, neck.
Any other encoder falls back to ``SAC.encode`` (no split).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

Unit = Callable[[torch.Tensor], torch.Tensor]


def _units(model: nn.Module) -> list[tuple[nn.Module | None, Unit]] | None:
    enc = model.image_encoder
    if model.layout == "tinyvit" and hasattr(enc, "layers") and hasattr(enc, "neck"):
        units: list[tuple[nn.Module | None, Unit]] = [
            (enc.patch_embed, enc.patch_embed), (enc.layers[0], enc.layers[0])]
        for layer in enc.layers[1:]:
            units += [(b, b) for b in layer.blocks]
            if layer.downsample is not None:
                units.append((layer.downsample, layer.downsample))

        def tail(x: torch.Tensor) -> torch.Tensor:
            b, _, c = x.shape
            side = int(round((x.shape[1]) ** 0.5))
            return enc.neck(x.view(b, side, side, c).permute(0, 3, 1, 2))

        units.append((enc.neck, tail))
        return units
    if model.layout == "vit" and hasattr(enc, "blocks") and hasattr(enc, "neck"):
        def embed(x: torch.Tensor) -> torch.Tensor:
            x = enc.patch_embed(x)
            return x + enc.pos_embed if enc.pos_embed is not None else x

        units = [(enc.patch_embed, embed)] + [(b, b) for b in enc.blocks]
        units.append((enc.neck, lambda x: enc.neck(x.permute(0, 3, 1, 2))))
        return units
    return None


class SplitEncoder:
    """``encode(images, keys=None)`` = ``model.encode(images)``, frozen prefix without autograd.

    ``keys`` (one hashable per batch row, e.g. validation crop indices) enable the prefix cache: a row whose
    key was seen before skips the prefix entirely (stored as fp16: half the memory, ~1e-3 relative error on
    the prefix features; the uncached path is exact). Only use keys for inputs that never change (no random
    augmentation), and only while the prefix stays frozen (it always does: LoRA and BN stats are fixed there).
    """

    def __init__(self, model: nn.Module, channels_last: bool = True, no_grad_prefix: bool = True,
                 cache: bool = True, cache_dtype: torch.dtype = torch.float16):
        self.model, self.channels_last, self.cache_on, self.cache_dtype = model, channels_last, cache, cache_dtype
        units = _units(model)
        self.units = units
        self.cache: dict = {}
        if units is None or not no_grad_prefix:
            self.n_prefix = 0
        else:
            trainable = [any(p.requires_grad for p in (m.parameters() if m is not None else [])) for m, _ in units]
            self.n_prefix = trainable.index(True) if any(trainable) else len(units)
        if channels_last and units is not None:
            model.image_encoder.to(memory_format=torch.channels_last)

    @property
    def prefix_fraction(self) -> str:
        return f"{self.n_prefix}/{len(self.units) if self.units else 0} units frozen-prefix"

    def _prefix(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            for _, f in self.units[: self.n_prefix]:
                x = f(x)
        return x

    def encode(self, images: torch.Tensor, keys: list | None = None) -> torch.Tensor:
        """``images float32 [B,3,S,S]`` in [0,1] -> embedding ``[B,256,h,w]`` (grad only through LoRA)."""
        m = self.model
        if self.units is None:
            return m.encode(images)
        m._check_images(images)
        x = m.normalise(images)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.n_prefix and keys is not None and self.cache_on:
            missing = [i for i, k in enumerate(keys) if k not in self.cache]
            if missing:
                feats = self._prefix(x[missing])
                for j, i in enumerate(missing):
                    self.cache[keys[i]] = feats[j].to(self.cache_dtype)
            x = torch.stack([self.cache[k] for k in keys]).to(images.dtype)
        elif self.n_prefix:
            x = self._prefix(x)
        grad = torch.is_grad_enabled() and m.encoder_trainable
        with torch.set_grad_enabled(grad):
            for _, f in self.units[self.n_prefix:]:
                x = f(x)
        return x
