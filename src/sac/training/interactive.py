"""``sac train --variant interactive``: teach the object decoder "one nucleus from clicks" (issue 11).

Everything of the ``--init-from`` model stays frozen (LoRA, automatic mask decoder, UNet), so its automatic outputs
are unchanged; only ``SAC.object_decoder`` (a copy of the backbone's pretrained SAM decoder) trains. With the
whole encoder frozen, :class:`~sac.training.encoder_split.SplitEncoder`'s cached "prefix" is the whole embedding:
with ``--crop-pool`` each crop is embedded once (fp16 cache), and its UNet logits are cached beside it.

Per training crop, ``objects_per_crop`` ground-truth nuclei (area >= ``MIN_AREA`` px, preferably not cut by the
crop border) each become one prompt set, target = that nucleus alone:

1. first round: one positive click drawn inside it with probability ~ distance-to-rim squared; with probability
   ``object_box_prob`` (per step) also a jittered box; mask input = the UNet's logits of the crop (the UNet knows
   where nuclei are, the click says which), or none with probability ``object_no_mask_prob``;
2. with probability ``object_refine_prob`` (per step) 1 .. ``object_refine_rounds`` corrective rounds (uniform):
   each adds to the previous clicks one at the most interior pixel of the previous round's largest error region
   (positive if missed, negative if extra), mask input = the previous round's logits (detached), as SAM's
   iterative training does.

Loss per round: ``20 * Focal + Dice`` (per prompt set) + MSE of the IoU head against the real IoU (SAM's recipe,
as :class:`sac.models.losses.SACLoss`); rounds are averaged. Validation ``val/click_iou``: on the fixed validation
crops, ``object_val_per_crop`` seeded nuclei per crop, one click at each one's most interior pixel with the UNet
logits as mask input; IoU of ``logits > 0`` with the nucleus, averaged per source, then over sources.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import nn

from sac.errors import SACError
from sac.evaluation.clicks import correction_click, interior_point, jittered_box, mask_iou
from sac.models.config import SACConfig, from_dict
from sac.training.config import TrainConfig
from sac.training.encoder_split import SplitEncoder
from sac.training.hooks import RunHooks

MIN_AREA = 10  # px: smaller ground-truth objects are annotation specks, not nuclei anyone clicks


def init_folder(init_from: str | Path) -> Path:
    """The model folder of ``--init-from`` (``default``, a model folder or a run folder with ``best/``)."""
    from sac.modelfile import default_model_dir

    folder = default_model_dir() if str(init_from) == "default" else Path(init_from)
    return folder / "best" if (folder / "best" / "config.json").is_file() else folder


def carry_init_facts(mcfg: SACConfig, init_from: str | Path) -> SACConfig:
    """``mcfg`` with what an ``--init-from`` model knows beyond the variant's architecture: its interactive head and
    click refiner (kept, frozen: the automatic variants never use them, so they are saved unchanged) and the
    resolution facts of its training data (``mpp``, ``nucleus_diameter``), e.g. when the default model is
    fine-tuned on corrections from ``sac serve``."""
    from sac.modelfile import read_model_config

    meta = read_model_config(init_folder(init_from)).get("config", {})
    return dataclasses.replace(mcfg, interactive=bool(meta.get("interactive", mcfg.interactive)),
                               refiner=bool(meta.get("refiner", mcfg.refiner)) and mcfg.prompts.enabled,
                               mpp=meta.get("mpp", mcfg.mpp),
                               nucleus_diameter=meta.get("nucleus_diameter", mcfg.nucleus_diameter))


def interactive_config(cfg: TrainConfig, refiner: bool = False) -> SACConfig:
    """The architecture of the ``--init-from`` model with ``interactive=True`` (its backbone overrides
    ``cfg.backbone``, which is set to it so the run's config.json says what was trained). ``refiner=False``
    (``--variant interactive``): no click refiner, since it corrects the masks of the head it was trained on, not
    those of the head trained here. ``refiner=True`` (``--variant refiner``): with one, on the model's own trained
    head (an ``--init-from`` model without one is an error)."""
    from sac.modelfile import read_model_config

    meta = read_model_config(init_folder(cfg.init_from))
    try:
        mcfg = from_dict(SACConfig, meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SACError(f"--init-from {cfg.init_from}: invalid model config: {exc}") from None
    if refiner and not (mcfg.interactive and mcfg.prompts.enabled):
        raise SACError(f"--variant refiner: --init-from {cfg.init_from} has no trained interactive head and UNet "
                       "(train one with --variant interactive first)")
    cfg.backbone = mcfg.backbone
    return dataclasses.replace(mcfg, interactive=True, refiner=refiner)


def correction_round(logits: torch.Tensor, masks: list, coords: torch.Tensor, labels: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """One corrective round's clicks appended to ``coords float [P,N,2]`` / ``labels long [P,N]``: for each prompt
    set, the most interior pixel of the largest error of ``logits [P,1,S,S] > 0`` against its nucleus ``masks[p]``
    (label 1 missed / 0 extra; -1 padding when the mask is already perfect) -> ``[P,N+1,2]``, ``[P,N+1]``."""
    pred = (logits.detach() > 0)[:, 0].cpu().numpy()
    extra = np.zeros((len(masks), 1, 2), np.float32)
    extra_l = np.full((len(masks), 1), -1, np.int64)
    for p, m in enumerate(masks):
        click = correction_click(pred[p], m)
        if click is not None:
            extra[p, 0], extra_l[p, 0] = click[:2], click[2]
    dev = coords.device
    return (torch.cat([coords, torch.from_numpy(extra).to(dev)], 1),
            torch.cat([labels, torch.from_numpy(extra_l).to(dev)], 1))


def pick_objects(labels: np.ndarray, k: int, rng: np.random.Generator | None, valid: np.ndarray | None = None
                 ) -> list[int]:
    """Up to ``k`` instance ids of ``labels int [S,S]`` with area >= MIN_AREA (inside ``valid`` when given):
    those not touching the crop border first. ``rng`` None = the first ``k`` by id (validation: the caller
    seeds a generator instead when it wants a spread)."""
    ids, areas = np.unique(labels, return_counts=True)
    keep = (ids > 0) & (areas >= MIN_AREA)
    if valid is not None:
        outside = np.unique(labels[~valid])
        keep &= ~np.isin(ids, outside)
    ids = ids[keep]
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    inner, cut = ids[~np.isin(ids, border)], ids[np.isin(ids, border)]
    if rng is not None:
        inner, cut = rng.permutation(inner), rng.permutation(cut)
    return [int(i) for i in np.concatenate([inner, cut])[:k]]


class InteractiveLitModule(RunHooks, L.LightningModule):
    """Trains ``model.object_decoder`` only; see the module docstring."""

    def __init__(self, cfg: TrainConfig, model: nn.Module):
        super().__init__()
        if getattr(model, "object_decoder", None) is None:
            raise SACError("--variant interactive needs a model built with interactive=True")
        self.cfg, self.model = cfg, model
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.object_decoder.parameters():
            p.requires_grad_(True)
        from monai.losses import DiceLoss, FocalLoss

        self.focal = FocalLoss(gamma=2.0, use_softmax=False)
        self.dice = DiceLoss(sigmoid=True, squared_pred=True, batch=False)  # per nucleus: small ones count too
        self.strict_loading = False
        # every encoder unit is frozen: the cached "prefix" is the whole embedding (train crops in pool mode, val)
        self.encoder = SplitEncoder(model, cfg.channels_last, True, True)
        self._unet: dict = {}
        self.rng = np.random.default_rng(cfg.seed)
        self._val: dict = defaultdict(list)

    # ------------------------------------------------------------------ plumbing
    def configure_optimizers(self):
        params = list(self.model.object_decoder.parameters())
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    @torch.no_grad()
    def _inputs(self, images: torch.Tensor, keys: list | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embeddings ``[B,256,h,w]`` and UNet logits ``[B,1,S,S]`` (None without a UNet), cached per key."""
        emb = self.encoder.encode(images, keys)
        gen = self.model.prompt_generator
        if gen is None:
            return emb, None
        gen.eval()  # frozen: no norm-statistics drift, same logits as at inference
        missing = [i for i, k in enumerate(keys or [None] * len(images)) if k is None or k not in self._unet]
        if missing:
            logits = self.model.prompt_logits(images[missing])
            if keys is None:
                return emb, logits
            for j, i in enumerate(missing):
                self._unet[keys[i]] = logits[j].half()
        return emb, torch.stack([self._unet[k] for k in keys]).float()

    def _decode(self, emb, rows, coords, labels, boxes, mask_input):
        """``decode_object`` with prompt set ``p`` on image ``rows[p]`` (any number of sets per image)."""
        return self.model.decode_object(emb[rows], coords, labels, boxes, mask_input)

    def _first_prompts(self, lab: np.ndarray, rng: np.random.Generator, dev) -> tuple:
        """A training batch's first-round prompts: per crop of ``lab int [B,S,S]`` ``objects_per_crop`` nuclei, each
        a click drawn inside it (probability ~ distance-to-rim squared) and, on a step drawn with probability
        ``object_box_prob``, a jittered box -> ``rows`` (crop of each prompt set), ``masks`` (``bool [S,S]`` each),
        ``coords float [P,1,2]``, ``labels long [P,1]`` (ones), ``boxes float [P,4]`` or None (empty lists: none)."""
        rows, masks, clicks, boxes = [], [], [], []
        use_box = rng.random() < self.cfg.object_box_prob
        for i in range(len(lab)):
            for nid in pick_objects(lab[i], self.cfg.objects_per_crop, rng):
                m = lab[i] == nid
                rows.append(i)
                masks.append(m)
                clicks.append(interior_point(m, rng))
                if use_box:
                    boxes.append(jittered_box(m, rng))
        if not rows:
            return [], [], None, None, None
        coords = torch.tensor(clicks, dtype=torch.float32, device=dev)[:, None]
        box_t = torch.tensor(boxes, dtype=torch.float32, device=dev) if use_box else None
        return rows, masks, coords, torch.ones(len(rows), 1, dtype=torch.long, device=dev), box_t

    def _loss(self, logits: torch.Tensor, iou_pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        mask_loss = 20.0 * self.focal(logits, target) + self.dice(logits, target)
        with torch.no_grad():
            pred = logits > 0
            tgt = target > 0.5
            inter = (pred & tgt).flatten(1).sum(1).float()
            union = (pred | tgt).flatten(1).sum(1).float()
            iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
        iou_loss = nn.functional.mse_loss(iou_pred[:, 0], iou)
        return {"loss": mask_loss + iou_loss, "mask_loss": mask_loss, "iou_loss": iou_loss, "iou": iou.mean()}

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict, batch_idx: int):
        cfg, rng = self.cfg, self.rng
        images, lab = batch["image"], batch["labels"].cpu().numpy()
        keys = [("train", int(i)) for i in batch["index"]] if cfg.crop_pool and "index" in batch else None
        emb, unet = self._inputs(images, keys)
        rows, masks, coords, plabels, box_t = self._first_prompts(lab, rng, images.device)
        if not rows:
            return None  # no nucleus in any crop of this batch: nothing to learn (Lightning skips the step)
        target = torch.from_numpy(np.stack(masks)[:, None].astype(np.float32)).to(images.device)
        mask_in = unet[rows] if unet is not None and rng.random() >= cfg.object_no_mask_prob else None
        logits, iou_pred = self._decode(emb, rows, coords, plabels, box_t, mask_in)
        rounds = [self._loss(logits, iou_pred, target)]
        n_refine = int(rng.integers(1, cfg.object_refine_rounds + 1)) if rng.random() < cfg.object_refine_prob else 0
        for _ in range(n_refine):
            coords, plabels = correction_round(logits, masks, coords, plabels)
            logits, iou_pred = self._decode(emb, rows, coords, plabels, box_t, logits.detach())
            rounds.append(self._loss(logits, iou_pred, target))
        losses = {k: torch.stack([r[k] for r in rounds]).mean() for k in rounds[0]}
        if self._trainer is not None:
            for k, v in losses.items():
                self.log(f"train/{k}", v.detach(), on_step=True, on_epoch=True, prog_bar=k == "loss",
                         batch_size=len(rows))
        return losses["loss"]

    def on_validation_epoch_start(self) -> None:
        self._val = defaultdict(list)

    @torch.no_grad()
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self._val_logits(batch)
        if out is None:
            return
        rows, masks, _, logits, _ = out
        pred = (logits > 0)[:, 0].cpu().numpy()
        for p, (i, m) in enumerate(zip(rows, masks, strict=True)):
            self._val[batch["key"][i].split("/", 1)[0]].append(mask_iou(pred[p], m))

    def _val_logits(self, batch: dict) -> tuple | None:
        """The head's first-click logits ``[P,1,S,S]`` on a validation batch's prompt sets (UNet logits as mask
        input) -> ``(rows, masks, clicks, logits, unet logits [B,1,S,S] or None)``; None without a nucleus."""
        images, lab = batch["image"], batch["labels"].cpu().numpy()
        emb, unet = self._inputs(images, [("val", int(i)) for i in batch["index"]])
        valid = (batch["valid"][:, 0] > 0.5).cpu().numpy()
        rows, masks, clicks = [], [], []
        for i, index in enumerate(batch["index"].tolist()):
            rng = np.random.default_rng([self.cfg.seed, 7, index])  # same nuclei of the same crop every epoch
            for nid in pick_objects(lab[i], self.cfg.object_val_per_crop, rng, valid[i]):
                rows.append(i)
                masks.append(lab[i] == nid)
                clicks.append(interior_point(masks[-1]))
        if not rows:
            return None
        coords = torch.tensor(clicks, dtype=torch.float32, device=images.device)[:, None]
        plabels = torch.ones(len(rows), 1, dtype=torch.long, device=images.device)
        logits, _ = self._decode(emb, rows, coords, plabels, None, None if unet is None else unet[rows])
        return rows, masks, clicks, logits, unet

    def on_validation_epoch_end(self) -> None:
        per_src = {s: float(np.mean(v)) for s, v in self._val.items() if v}
        score = float(np.mean(list(per_src.values()))) if per_src else 0.0
        self.log("val/click_iou", score, prog_bar=True)
        for src, v in per_src.items():
            self.log(f"val/click_iou_{src}", v)


__all__ = ["InteractiveLitModule", "interactive_config", "pick_objects", "correction_round", "init_folder", "MIN_AREA"]
