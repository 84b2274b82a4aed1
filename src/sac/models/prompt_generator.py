"""The auto-prompt generator (paper eq. 2): a MONAI UNet giving one nucleus logit per pixel."""

from __future__ import annotations

import torch
from torch import nn

from sac.models.config import UNetConfig


class PromptGenerator(nn.Module):
    """``images float32 [B, 3, S, S]`` (already normalised by the caller) -> ``logits float32 [B, C, S, S]``.

    Channel 0: ``sigmoid`` is P_pos of eq. (4) and ``1 - sigmoid`` is P_neg; trained with BCE against the binary
    nucleus mask (eq. 3). With ``cfg.distance_head`` (C = 2), channel 1's ``sigmoid`` estimates each nucleus's
    normalised distance to its border (1 at its centre, 0 on background; :func:`sac.data.targets.distance_target`).
    ``S`` must be divisible by ``prod(cfg.strides)``.
    """

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        from monai.networks.nets import UNet

        if len(cfg.channels) != len(cfg.strides) + 1:
            raise ValueError(f"unet: need len(channels) == len(strides) + 1, got {cfg.channels} / {cfg.strides}")
        self.cfg = cfg
        self.out_channels = cfg.out_channels
        self.unet = UNet(
            spatial_dims=2,
            in_channels=3,
            out_channels=self.out_channels,
            channels=tuple(cfg.channels),
            strides=tuple(cfg.strides),
            num_res_units=cfg.num_res_units,
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.unet(images)
