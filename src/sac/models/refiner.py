"""The click refiner (``SAC.refiner``): a small full-resolution UNet that corrects the interactive head's mask.

The interactive head (``SAC.object_decoder``) decodes a nucleus from SAM's 64 x 64 token grid, 4 model pixels per
token; on MoNuSeg's 17 px nuclei its boundaries are what limits one click (docs/results.md, "How far one click can
go"). The refiner sees, on a crop of the model input around the first click: the image at full resolution, the
head's logits, the UNet's logits and the clicks, and adds a correction to the head's logits. Its last layer starts at
zero, so an untrained refiner returns the head's mask unchanged. 0.39M parameters; trained on the head's own masks of
training images (``benchmarks/click_refiner.py gen`` / ``train``; src/sac/weights/MODEL_CARD.md).

Hand-written rather than MONAI's ``BasicUNet``: the zero-initialised residual output on the head's logits and the
exact layout of the weights trained for the bundled default are what matter here, and it is 40 lines.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CROP = 128  # model pixels: the largest refined crop around the first click (the rest keeps the head's logits)
MIN_CROP = 64  # model pixels: the smallest, the refiner's training crop (sac.training.refiner.TRAIN_CROP)
CROP_MARGIN = 16  # model pixels kept around the head's mask and the clicks inside the crop
SIGMA = 2.5  # model pixels: clicks enter as Gaussian maps of this width
IN_CHANNELS = 7  # RGB, head logits, UNet logits, positive clicks, negative clicks
LOGIT_CLAMP = 20.0


def _block(i: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.GroupNorm(4, o), nn.ReLU(inplace=True),
                         nn.Conv2d(o, o, 3, padding=1), nn.GroupNorm(4, o), nn.ReLU(inplace=True))


class ClickRefiner(nn.Module):
    """``forward(x float32 [B, 7, h, w], z float32 [B, 1, h, w]) -> z + delta`` (logits, same shape). ``x`` from
    :func:`refiner_inputs`; ``z`` the head's logits, clamped to +-20. Any ``h, w`` (multiples of 8 are exact)."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 96)):
        super().__init__()
        self.enc = nn.ModuleList()
        c = IN_CHANNELS
        for o in channels:
            self.enc.append(_block(c, o))
            c = o
        self.dec = nn.ModuleList(_block(channels[i + 1] + channels[i], channels[i])
                                 for i in reversed(range(len(channels) - 1)))
        self.out = nn.Conv2d(channels[0], 1, 1)
        nn.init.zeros_(self.out.weight)  # starts as the identity on the head's logits
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, e in enumerate(self.enc):
            x = e(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for d in self.dec:
            s = skips.pop()
            x = d(torch.cat([F.interpolate(x, size=s.shape[-2:], mode="bilinear", align_corners=False), s], 1))
        return z + self.out(x)

    def refine(self, image: torch.Tensor, z: torch.Tensor, unet: torch.Tensor | None, clicks: torch.Tensor
               ) -> torch.Tensor:
        """One crop: ``image float [3, h, w]`` in ``[0, 1]``, head logits ``z [h, w]``, UNet logits ``unet [h, w]``
        (None: zeros), ``clicks float [N, 3]`` (x, y in crop pixels, label 1 / 0) -> refined logits ``[h, w]``."""
        u = torch.zeros_like(z) if unet is None else unet
        x = refiner_inputs(image, z, u, clicks)[None]
        return self(x, z.clamp(-LOGIT_CLAMP, LOGIT_CLAMP)[None, None])[0, 0]


def refiner_inputs(image: torch.Tensor, z: torch.Tensor, unet: torch.Tensor, clicks: torch.Tensor) -> torch.Tensor:
    """``image float [3, h, w]`` in ``[0, 1]``, head / UNet logits ``[h, w]``, ``clicks [N, 3]`` (x, y, label 1 / 0;
    -1 = padding) -> ``float32 [7, h, w]``: the image standardised per crop and channel (``(v - mean) / (std +
    0.05)``: a faint or dark crop is not blown up), ``tanh(logits / 4)`` of both (bounded, still graded near the
    boundary), and Gaussian maps (``SIGMA``) of the positive and the negative clicks (max over clicks)."""
    im = image.float()
    mean = im.mean((1, 2), keepdim=True)
    std = im.std((1, 2), keepdim=True, unbiased=False)
    h, w = z.shape
    yy = torch.arange(h, dtype=torch.float32)[:, None]
    xx = torch.arange(w, dtype=torch.float32)[None, :]
    maps = torch.zeros(2, h, w)
    for x, y, label in clicks.tolist():
        if label >= 0:
            g = torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * SIGMA**2))
            k = 0 if label == 1 else 1
            maps[k] = torch.maximum(maps[k], g)
    return torch.cat([(im - mean) / (std + 0.05), torch.tanh(z.float() / 4)[None],
                      torch.tanh(unet.float() / 4)[None], maps]).float()


def refine_crop(fg: np.ndarray, points: np.ndarray) -> tuple[int, int, int]:
    """The crop the refiner sees, ``(x0, y0, size)`` in the pixels of ``fg bool [h, w]`` (the head's ``logits > 0``
    on the model grid): centred on the first of ``points float [N, >= 2]`` (x, y), ``size`` the smallest multiple
    of 16 in ``[MIN_CROP, CROP]`` that holds every pixel of ``fg`` and every point with ``CROP_MARGIN`` px to spare.
    The refiner was trained on 64 px crops; at one click a fixed 128 px crop scored 0.004-0.011 lower on MoNuSeg's
    small nuclei (docs/results.md, "The refined crop"), and a larger nucleus still gets the room it needs."""
    pts = np.asarray(points, np.float64)
    cx, cy = float(pts[0, 0]), float(pts[0, 1])
    ys, xs = np.nonzero(fg)
    reach = max(np.abs(np.concatenate([xs, pts[:, 0]]) - cx).max(), np.abs(np.concatenate([ys, pts[:, 1]]) - cy).max())
    size = int(np.clip(16 * np.ceil((2 * reach + 2 * CROP_MARGIN) / 16), MIN_CROP, CROP))
    return (*crop_origin(cx, cy, size, *fg.shape), size)


def crop_origin(cx: float, cy: float, size: int, h: int, w: int) -> tuple[int, int]:
    """Top-left ``(x0, y0)`` of the ``size`` crop centred on ``(cx, cy)``, shifted to stay in ``h x w``."""
    return int(min(max(cx - size // 2, 0), max(w - size, 0))), int(min(max(cy - size // 2, 0), max(h - size, 0)))
