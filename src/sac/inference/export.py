"""Export-friendly graphs of the three SAC inference stages, and the reference tile they are checked on.

Each graph is a plain ``nn.Module`` with tensor-only inputs and outputs, traceable by ``openvino.convert_model``
and ``torch.onnx.export``; the maths is that of :class:`sac.models.sac.SAC` (tested against it):

* :class:`EncoderGraph`: ``images float32 [b, 3, S, S]`` in [0, 1] -> embeddings ``float32 [b, 256, h, w]``
  (normalisation inside, LoRA merged and BatchNorm folded by :func:`sac.inference.encoder.inference_encoder`);
* :class:`UNetGraph`: ``images`` -> UNet logits ``float32 [b, c, S, S]`` (c = 2 with a distance head);
* :class:`DecoderGraph`: prompt encoder + single-mask decoder. ``emb [n, 256, h, w]`` (already one row per prompt
  set), ``coords float32 [n, N, 2]``, ``labels float32 [n, N]`` (1 / 0 / -1), and for models with a mask prompt
  ``mask float32 [n, 1, 4h, 4w]`` (logits, already clamped and resized) -> ``low_res [n, 1, 4h, 4w]``, ``iou [n, 1]``.

SAM's ``PromptEncoder._embed_points`` edits the point embeddings in place through boolean-mask indexing, which the
exporters turn into scatter ops with data-dependent shapes; :func:`embed_points` computes the same sums with
``torch.where`` and masks instead (same values, static shapes), so the number of points ``N`` stays a dynamic axis.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sac.inference.encoder import inference_encoder
from sac.models.sac import _predict_masks


class EncoderGraph(nn.Module):
    """Normalisation + inference image encoder (a deep copy: the model passed in is untouched)."""

    def __init__(self, model):
        super().__init__()
        self.encoder = inference_encoder(model.image_encoder, channels_last=False)
        self.register_buffer("mean", model.pixel_mean.detach().clone(), False)
        self.register_buffer("std", model.pixel_std.detach().clone(), False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder((images - self.mean) / self.std)


class UNetGraph(nn.Module):
    """Normalisation + the prompt UNet: both heads in one output ``[b, c, S, S]``."""

    def __init__(self, model):
        super().__init__()
        self.unet = model.prompt_generator
        self.register_buffer("mean", model.pixel_mean.detach().clone(), False)
        self.register_buffer("std", model.pixel_std.detach().clone(), False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.unet((images - self.mean) / self.std)


def embed_points(prompt_encoder: nn.Module, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``PromptEncoder._embed_points(coords, labels, pad=True)`` without in-place boolean indexing.

    ``coords [n, N, 2]`` (x, y) input pixels, ``labels [n, N]`` (float or int: 1, 0, -1) -> ``[n, N + 1, C]``.
    """
    n = coords.shape[0]
    pts = torch.cat([coords.float() + 0.5, torch.zeros_like(coords[:, :1]).float()], dim=1)
    lab = torch.cat([labels.float(), -torch.ones_like(labels[:, :1]).float()], dim=1)[..., None]
    pe = prompt_encoder.pe_layer.forward_with_coords(pts, prompt_encoder.input_image_size)
    not_a_point = prompt_encoder.not_a_point_embed.weight.view(1, 1, -1).expand(n, 1, -1)
    pe = torch.where(lab == -1, not_a_point, pe)
    pe = pe + (lab == 0).float() * prompt_encoder.point_embeddings[0].weight.view(1, 1, -1)
    return pe + (lab == 1).float() * prompt_encoder.point_embeddings[1].weight.view(1, 1, -1)


class DecoderGraph(nn.Module):
    """Prompt encoder + single-mask decoder (the automatic head, :meth:`SAC.decode` before the final upsampling)."""

    def __init__(self, model, mask_decoder: nn.Module | None = None, mask_prompt: bool | None = None):
        super().__init__()
        self.prompt_encoder = model.prompt_encoder
        self.mask_decoder = mask_decoder if mask_decoder is not None else model.mask_decoder
        self.mask_prompt = bool(model.cfg.prompts.mask_prompt if mask_prompt is None else mask_prompt)
        with torch.no_grad():
            self.register_buffer("image_pe", model.prompt_encoder.get_dense_pe().detach().clone(), False)

    def forward(self, emb: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        pe = self.prompt_encoder
        sparse = embed_points(pe, coords, labels)
        if self.mask_prompt:
            dense = pe.mask_downscaling(mask)
        else:
            dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(emb.shape[0], -1, emb.shape[2], emb.shape[3])
        return _predict_masks(self.mask_decoder, emb, self.image_pe, sparse, dense)


def prepare_mask_prompt(model, mask_prompt: torch.Tensor, k: int) -> torch.Tensor:
    """:meth:`SAC.decode`'s mask-prompt preparation: logits ``[b, 1, S, S]`` -> clamped, resized to the prompt
    encoder's mask input ``[b * k, 1, 4h, 4w]`` (each image's mask repeated for its ``k`` prompt sets)."""
    size = tuple(model.prompt_encoder.mask_input_size)
    masks = mask_prompt.detach().float().clamp(-20.0, 20.0)
    if tuple(masks.shape[-2:]) != size:
        masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
    return masks.repeat_interleave(k, dim=0) if k > 1 else masks


def reference_tile(size: int) -> torch.Tensor:
    """A real tissue tile for export checks: the top-left 256 x 256 of scikit-image's immunohistochemistry image
    (shipped with scikit-image, so no download and no data folder needed), resized to ``size`` ->
    ``float32 [1, 3, size, size]`` in [0, 1]."""
    import skimage.data

    crop = np.ascontiguousarray(skimage.data.immunohistochemistry()[:256, :256])
    t = torch.from_numpy(crop).permute(2, 0, 1)[None].float().div_(255.0)
    if size != 256:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t
