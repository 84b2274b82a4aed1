"""Training losses (paper sec. 4.1.3 and appendix A.2), built from MONAI's implementations.

* ``"focal_dice"`` (default, the paper's choice "as per SAM's methodology"): ``20 * Focal + 1 * Dice``. The
  20:1 ratio is SAM's (Kirillov et al. 2023, sec. 3). Focal: gamma 2, no alpha, on sigmoid probabilities.
  Dice: squared denominators as in the paper's eq. (7), computed over the whole batch (``batch=True``) so that
  a crop without nuclei does not produce a 0-or-1 dice term on its own.
* ``"dice_ce"``: MONAI ``DiceCELoss`` (Dice + BCE, weights 1:1), the paper's supplementary comparison.
* The prompt generator is trained with ``BCEWithLogits`` against the same binary mask (eq. 3).

Every loss takes ``logits float32 [B, 1, H, W]`` and ``target float32 [B, 1, H, W]`` in {0, 1}.
"""

from __future__ import annotations

import torch
from torch import nn

LOSSES = ("focal_dice", "dice_ce")


class FocalDiceLoss(nn.Module):
    """``focal_weight * Focal(logits, target) + dice_weight * Dice(sigmoid(logits), target)``."""

    def __init__(self, focal_weight: float = 20.0, dice_weight: float = 1.0, gamma: float = 2.0):
        super().__init__()
        from monai.losses import DiceLoss, FocalLoss

        self.focal_weight, self.dice_weight = focal_weight, dice_weight
        self.focal = FocalLoss(gamma=gamma, use_softmax=False)  # sigmoid focal loss on logits
        self.dice = DiceLoss(sigmoid=True, squared_pred=True, batch=True)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.focal_weight * self.focal(logits, target) + self.dice_weight * self.dice(logits, target)


def build_loss(name: str = "focal_dice") -> nn.Module:
    """Segmentation loss by name: ``"focal_dice"`` (default) or ``"dice_ce"``. Unknown names: ValueError."""
    if name == "focal_dice":
        return FocalDiceLoss()
    if name == "dice_ce":
        from monai.losses import DiceCELoss

        return DiceCELoss(sigmoid=True, batch=True)
    raise ValueError(f"unknown loss {name!r} (valid: {', '.join(LOSSES)})")


class SACLoss(nn.Module):
    """Total training loss of a :class:`~sac.models.sac.SACOutput`:
    ``seg(mask_logits) + prompt_weight * BCE(prompt_logits) + iou_weight * MSE(iou_pred, IoU)``.

    The IoU term is SAM's recipe: the decoder's IoU head regresses the (detached) IoU between the binary mask
    ``mask_logits > 0`` and the target, so its score is meaningful at inference. The BCE term is skipped when
    the model has no prompt generator. ``forward(out, target [B,1,S,S])`` returns scalar tensors
    ``{"loss", "mask_loss", "prompt_loss", "iou_loss"}`` (``prompt_loss`` is 0 without a prompt generator).
    """

    def __init__(self, seg: str = "focal_dice", prompt_weight: float = 1.0, iou_weight: float = 1.0):
        super().__init__()
        self.seg = build_loss(seg)
        self.bce = nn.BCEWithLogitsLoss()
        self.prompt_weight = prompt_weight
        self.iou_weight = iou_weight

    def forward(self, out, target: torch.Tensor) -> dict[str, torch.Tensor]:
        target = target.to(out.mask_logits.dtype)
        mask_loss = self.seg(out.mask_logits, target)
        if out.prompt_logits is not None:
            prompt_loss = self.bce(out.prompt_logits, target)
        else:
            prompt_loss = mask_loss.new_zeros(())
        with torch.no_grad():
            pred = (out.mask_logits > 0).to(target.dtype)
            inter = (pred * target).flatten(1).sum(1)
            union = ((pred + target) > 0).to(target.dtype).flatten(1).sum(1)
            iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        iou_loss = nn.functional.mse_loss(out.iou_pred[:, 0], iou)
        total = mask_loss + self.prompt_weight * prompt_loss + self.iou_weight * iou_loss
        return {"loss": total, "mask_loss": mask_loss, "prompt_loss": prompt_loss, "iou_loss": iou_loss}
