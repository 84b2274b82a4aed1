"""``sac train --variant refiner``: teach the click refiner (``SAC.refiner``) to correct the interactive head.

Everything of the ``--init-from`` model stays frozen, its interactive head (``SAC.object_decoder``) included; only
the refiner (:mod:`sac.models.refiner`) trains. Crops, their cached embeddings and UNet logits, and the choice of
nuclei are those of :class:`~sac.training.interactive.InteractiveLitModule`. Per step, for each chosen nucleus the
head is run as the editor runs it (no gradient):

1. first round: a positive click drawn inside the nucleus (probability ~ distance-to-rim squared), the UNet's
   logits as mask input; with probability ``object_box_prob`` (per step) a jittered box too;
2. then ``object_refine_rounds`` corrective rounds, each adding a click at the most interior pixel of the previous
   round's largest error (``logits > 0`` against the nucleus), the previous logits as mask input.

Every round gives one training sample (the first round of a box does not: the editor keeps the head's mask of a
box, see :class:`~sac.inference.editor.Editor`): a ``TRAIN_CROP`` px crop holding the first click (its position in
the crop drawn at random, at most ``TRAIN_CROP / 4`` px from the centre), the 8 flips / rotations at random. Loss:
BCE + Dice (per sample) of the refined logits against the nucleus. ``val/click_iou``: as the interactive variant's
(one click at each validation nucleus's most interior pixel, UNet logits as mask input), scored on the refined
logits of the crop :func:`~sac.models.refiner.refine_crop` gives around the click (``val/click_iou_head``: the
head's own, for comparison).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sac.errors import SACError
from sac.evaluation.clicks import mask_iou
from sac.models.refiner import MIN_CROP, refine_crop, refiner_inputs
from sac.training.interactive import InteractiveLitModule, correction_round

TRAIN_CROP = MIN_CROP  # px: refiner training crops (at inference: refine_crop, 64-128 px)


class RefinerLitModule(InteractiveLitModule):
    """Trains ``model.refiner`` only; see the module docstring."""

    def __init__(self, cfg, model):
        super().__init__(cfg, model)
        if getattr(model, "refiner", None) is None:
            raise SACError("--variant refiner needs a model built with refiner=True")
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.refiner.parameters():
            p.requires_grad_(True)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.model.refiner.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    # ------------------------------------------------------------------ samples
    @torch.no_grad()
    def _samples(self, images, lab, emb, unet, rng) -> tuple[torch.Tensor, ...] | None:
        """The head's rounds on the chosen nuclei -> ``x [N,7,c,c]``, head logits ``z [N,1,c,c]``, target
        ``y [N,1,c,c]`` (``c = TRAIN_CROP``), or None when no crop of the batch holds a nucleus."""
        cfg = self.cfg
        rows, masks, coords, plabels, box_t = self._first_prompts(lab, rng, images.device)
        if not rows:
            return None
        s, c, half = lab.shape[-1], TRAIN_CROP, TRAIN_CROP // 2
        mask_in = None if unet is None else unet[rows]
        jitter = rng.integers(-c // 4, c // 4 + 1, (len(rows), 2))
        origins = [tuple(int(v) for v in np.clip(np.array(xy) - half + j, 0, s - c))
                   for xy, j in zip(coords[:, 0].round().long().tolist(), jitter, strict=True)]
        xs, zs, ys, logits = [], [], [], None
        for r in range(1 + cfg.object_refine_rounds):
            if logits is not None:
                coords, plabels = correction_round(logits, masks, coords, plabels)
                mask_in = logits
            logits, _ = self._decode(emb, rows, coords, plabels, box_t, mask_in)
            if r == 0 and box_t is not None:
                continue
            pts = torch.cat([coords, plabels[..., None].float()], 2).cpu()
            for p, (i, (x0, y0)) in enumerate(zip(rows, origins, strict=True)):
                sl = np.s_[y0 : y0 + c, x0 : x0 + c]
                u = torch.zeros(c, c) if unet is None else unet[i, 0][sl].cpu()
                xs.append(refiner_inputs(images[i][(slice(None), *sl)].cpu(), logits[p, 0][sl].cpu(), u,
                                         pts[p] - torch.tensor([x0, y0, 0.0])))
                zs.append(logits[p, 0][sl].cpu())
                ys.append(torch.from_numpy(masks[p][sl]))
        x, z, y = torch.stack(xs), torch.stack(zs)[:, None], torch.stack(ys)[:, None].float()
        k = int(rng.integers(4))
        x, z, y = (torch.rot90(a, k, (2, 3)) for a in (x, z, y))
        if rng.random() < 0.5:
            x, z, y = (a.flip(3) for a in (x, z, y))
        dev = images.device
        return x.to(dev), z.clamp(-20, 20).to(dev), y.to(dev)

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict, batch_idx: int):
        images, lab = batch["image"], batch["labels"].cpu().numpy()
        keys = [("train", int(i)) for i in batch["index"]] if self.cfg.crop_pool and "index" in batch else None
        emb, unet = self._inputs(images, keys)
        samples = self._samples(images, lab, emb, unet, self.rng)
        if samples is None:
            return None  # no nucleus in any crop of this batch (Lightning skips the step)
        x, z, y = samples
        out = self.model.refiner(x, z)
        p = torch.sigmoid(out)
        dice = 1 - (2 * (p * y).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
        bce = F.binary_cross_entropy_with_logits(out, y)
        loss = bce + dice.mean()
        if self._trainer is not None:
            self.log("train/loss", loss.detach(), on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x))
            self.log("train/bce", bce.detach(), on_step=True, on_epoch=True, batch_size=len(x))
        return loss

    @torch.no_grad()
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self._val_logits(batch)
        if out is None:
            return
        rows, masks, clicks, logits, unet = out
        images = batch["image"]
        for p, (i, m, (x, y)) in enumerate(zip(rows, masks, clicks, strict=True)):
            z = logits[p, 0]
            x0, y0, size = refine_crop((z > 0).cpu().numpy(), np.array([[x, y]], np.float64))
            sl = np.s_[y0 : y0 + size, x0 : x0 + size]
            refined = z.clone()
            refined[sl] = self.model.refiner.refine(images[i][(slice(None), *sl)], z[sl],
                                                    None if unet is None else unet[i, 0][sl],
                                                    torch.tensor([[x - x0, y - y0, 1.0]]))
            source = batch["key"][i].split("/", 1)[0]
            self._val[source].append(mask_iou((refined > 0).cpu().numpy(), m))
            self._val["head/" + source].append(mask_iou((z > 0).cpu().numpy(), m))

    def on_validation_epoch_end(self) -> None:
        per_src = {s: float(np.mean(v)) for s, v in self._val.items() if v and not s.startswith("head/")}
        head = [float(np.mean(v)) for s, v in self._val.items() if v and s.startswith("head/")]
        self.log("val/click_iou", float(np.mean(list(per_src.values()))) if per_src else 0.0, prog_bar=True)
        self.log("val/click_iou_head", float(np.mean(head)) if head else 0.0)
        for src, v in per_src.items():
            self.log(f"val/click_iou_{src}", v)


__all__ = ["RefinerLitModule", "TRAIN_CROP"]
