"""The Lightning module: one SAC model, four variants, Focal+Dice on the SAM mask + BCE on the prompt UNet.

Variants (``TrainConfig.variant``) differ only in which parameters train and where prompts come from:

=============  =========================  ==============================  =====================================
variant        trainable                  prompts during training         loss
=============  =========================  ==============================  =====================================
sac            LoRA(Q,V), decoder, UNet   UNet -> select_points (paper)   FocalDice(mask) + BCE(UNet) + IoU
sam-ft         decoder                    0..3 GT "expert" clicks/crop    FocalDice(mask) + IoU
lora-noprompt  LoRA(Q,V), decoder         none (SAM's no-point token)     FocalDice(mask) + IoU
unet           UNet                       -- (no SAM forward at all)      BCE + Dice (UNet)
=============  =========================  ==============================  =====================================

FocalDice = 20 * Focal + Dice (SAM's ratio); IoU = MSE of the decoder's IoU head vs the mask's real IoU (SAM's
recipe; :class:`sac.models.losses.SACLoss`). "Expert" clicks: k ~ U{0..3} nuclei (positive) + k background points.
Switches beyond the paper: ``distance_head`` adds BCE of the UNet's distance channel against
:func:`sac.data.targets.distance_target`; ``freeze_sam`` (sac) trains the UNet only, with the ``unet`` step;
``vary_points`` (sac) draws each step's number of points.

Validation (deterministic): the fixed grid crops of ``CropDataset(grid=True, per_image=...)``;
prompts come from the UNet exactly as at inference (0 expert points). Per image, TP/FP/FN are summed over its
crops (padding excluded); ``val/dice`` and ``val/iou`` are means over images within each validation source,
then averaged over sources (so 6 MoNuSeg images weigh as much as 67 DSB images); ``val/f1`` is the pixel F1
pooled over all validation pixels. ``val/prompt_dice`` is the same Dice for the UNet's own mask. ``val/aji``: AJI
of each crop's watershed instances (:func:`crop_instances`, :func:`sac.evaluation.validation.crop_aji`), averaged
crops -> image -> source like ``val/dice`` (:mod:`sac.evaluation.validation`).
"""

from __future__ import annotations

from collections import defaultdict

import lightning as L
import numpy as np
import torch
from torch import nn

from sac.evaluation.validation import crop_aji, summarise, summarise_aji
from sac.models.config import LoraConfig, PromptConfig, SACConfig, UNetConfig
from sac.models.sac import SACOutput
from sac.postprocess.instances import watershed_instances
from sac.training.config import TrainConfig
from sac.training.encoder_split import SplitEncoder
from sac.training.hooks import RunHooks


def sac_config(cfg: TrainConfig) -> SACConfig:
    """The model architecture implied by a training config (variant -> LoRA / prompts switches)."""
    lora_on = cfg.variant in ("sac", "lora-noprompt")
    return SACConfig(
        backbone=cfg.backbone,
        lora=LoraConfig(enabled=lora_on, rank=cfg.lora_rank, alpha=float(cfg.lora_rank),
                        last_n_layers=cfg.lora_last_n_layers),
        prompts=PromptConfig(enabled=cfg.variant in ("sac", "unet"), n_points=cfg.n_points, select=cfg.select,
                             mask_prompt=cfg.mask_prompt and cfg.variant == "sac"),
        unet=UNetConfig(distance_head=cfg.distance_head and cfg.variant in ("sac", "unet")),
        # freeze_sam keeps train_decoder: the decoder of the --init-from model is part of the saved model
        train_decoder=cfg.variant != "unet",
    )


def configure_trainable(model: nn.Module, variant: str, freeze_sam: bool = False) -> None:
    """Set ``requires_grad`` for ``variant`` (the SAC constructor already froze encoder + prompt encoder);
    ``freeze_sam``: only the prompt generator trains."""
    if variant == "unet" or freeze_sam:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in model.prompt_generator.parameters():
            p.requires_grad_(True)


def expert_points_from_labels(labels: torch.Tensor, max_points: int, rng: np.random.Generator
                              ) -> tuple[np.ndarray, np.ndarray]:
    """Simulated expert clicks for ``sam-ft`` training, like the evaluation's simulated expert: per crop
    ``k ~ U{0..max_points}``; ``k`` random nuclei, each clicked at its pixel nearest the nucleus centroid (always
    inside it), plus ``k`` random background pixels at least 3 px from any nucleus. ``labels int32 [B,S,S]``
    -> ``coords float32 [B,2M,2]`` (x, y), ``labels int64 [B,2M]`` (1 / 0, padded -1), ``M = max_points``."""
    from scipy import ndimage

    lab = labels.cpu().numpy()
    b, m = lab.shape[0], max(max_points, 1)
    coords = np.zeros((b, 2 * m, 2), np.float32)
    plabels = np.full((b, 2 * m), -1, np.int64)
    for i in range(b):
        ids = np.unique(lab[i])
        ids = ids[ids > 0]
        k = min(int(rng.integers(max_points + 1)), len(ids))
        j = 0
        for nid in rng.choice(ids, size=k, replace=False) if k else []:
            ys, xs = np.nonzero(lab[i] == nid)
            c = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
            coords[i, j], plabels[i, j] = (xs[c], ys[c]), 1
            j += 1
        far = ~ndimage.binary_dilation(lab[i] > 0, iterations=3)
        ys, xs = np.nonzero(far)
        for c in rng.choice(len(ys), size=min(k, len(ys)), replace=False) if k and len(ys) else []:
            coords[i, j], plabels[i, j] = (xs[c], ys[c]), 0
            j += 1
    return coords, plabels


class SACLitModule(RunHooks, L.LightningModule):
    """Wraps a :class:`~sac.models.sac.SAC`; see the module docstring for variants and metrics."""

    def __init__(self, cfg: TrainConfig, model: nn.Module):
        super().__init__()
        self.cfg, self.model = cfg, model
        configure_trainable(model, cfg.variant, cfg.freeze_sam)
        from sac.models.losses import SACLoss

        self.loss = SACLoss(prompt_weight=cfg.prompt_loss_weight)  # FocalDice(mask) + BCE(UNet) + IoU-head MSE
        self.bce = nn.BCEWithLogitsLoss()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(sigmoid=True, batch=True)
        self.strict_loading = False  # checkpoints hold only trained tensors (see on_save_checkpoint)
        # One cache for validation crops (always fixed) and, in pool mode, training crops. With every encoder
        # unit frozen (sam-ft) the cached "prefix" is the whole embedding: the SAM-FT embedding cache.
        self.encoder = SplitEncoder(model, cfg.channels_last, cfg.frozen_prefix_no_grad,
                                    cfg.cache_val_prefix or cfg.crop_pool)
        self.rng = np.random.default_rng(cfg.seed)
        self._val: dict = {}

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        groups = []
        unet = [p for p in (self.model.prompt_generator.parameters() if self.model.prompt_generator else [])
                if p.requires_grad]
        ids = {id(p) for p in unet}
        rest = [p for p in self.model.parameters() if p.requires_grad and id(p) not in ids]
        if rest:
            groups.append({"params": rest, "lr": self.cfg.lr})
        if unet:
            groups.append({"params": unet, "lr": self.cfg.lr_prompt})
        return torch.optim.AdamW(groups, weight_decay=self.cfg.weight_decay)

    def kept_keys(self) -> set[str]:
        """The trained tensors and every parameter that trains (what a resume needs)."""
        return super().kept_keys() | {f"model.{n}" for n, p in self.model.named_parameters() if p.requires_grad}

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        self.model.prompt_rng = np.random.default_rng([self.cfg.seed, self.current_epoch, 1])

    # ------------------------------------------------------------------ steps
    def _embed(self, images: torch.Tensor, keys: list | None = None) -> torch.Tensor:
        return self.encoder.encode(images, keys)

    def _train_keys(self, batch: dict) -> list | None:
        """Cache keys of a training batch: only in pool mode, where crop ``i`` is the same every epoch."""
        if not self.cfg.crop_pool or "index" not in batch:
            return None
        return [("train", int(i)) for i in batch["index"]]

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        images, target = batch["image"], batch["mask"]
        v = self.cfg.variant
        zero = images.new_zeros(())
        keys = self._train_keys(batch)
        dist_logits = None
        if v == "unet" or self.cfg.freeze_sam:
            logits, dist_logits = self.model.prompt_maps(images)
            prompt_loss = self.bce(logits, target) + self.dice(logits, target)
            losses = {"loss": prompt_loss, "mask_loss": zero, "prompt_loss": prompt_loss, "iou_loss": zero}
        else:
            if v == "sam-ft":
                emb = self._embed(images, keys)  # frozen encoder: no autograd; pool mode caches embeddings
                ec, el = expert_points_from_labels(batch["labels"], self.cfg.max_expert_points, self.rng)
                coords, labels = self.model.select_prompts(None, ec, el, batch_size=len(images))
                prompt_logits = None
            elif v == "lora-noprompt":
                emb = self._embed(images, keys)
                coords, labels = self.model.select_prompts(None, batch_size=len(images))
                prompt_logits = None
            else:  # sac
                emb = self._embed(images, keys)
                prompt_logits, dist_logits = self.model.prompt_maps(images)
                coords, labels = self.model.select_prompts(prompt_logits, batch_size=len(images),
                                                           n_points=self._draw_points())
            mask_logits, iou = self.model.decode(emb, coords, labels, prompt_logits)
            losses = self.loss(SACOutput(mask_logits, prompt_logits, coords, labels, iou), target)
        if dist_logits is not None:
            from sac.data.targets import distance_targets

            dist_loss = self.bce(dist_logits, distance_targets(batch["labels"]))
            losses = {**losses, "loss": losses["loss"] + self.cfg.distance_loss_weight * dist_loss,
                      "distance_loss": dist_loss}
        for k, val in losses.items() if self._trainer is not None else ():
            self.log(f"train/{k}", val.detach(), on_step=True, on_epoch=True, prog_bar=k == "loss",
                     batch_size=len(images))
        return losses["loss"]

    def _draw_points(self) -> int | None:
        """Points per class of this training step: None (= the configured count) unless ``cfg.vary_points``."""
        if not self.cfg.vary_points:
            return None
        if self.rng.random() < 0.25:
            return 0
        return int(round(self.cfg.n_points ** self.rng.random()))

    @torch.no_grad()
    def predict_crops(self, images: torch.Tensor, keys: list | None = None
                      ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Inference on S x S crops as ``sac segment`` does it with 0 expert points:
        -> (SAM mask logits or None for ``unet``, UNet logits or None, distance logits or None)."""
        v = self.cfg.variant
        prompt_logits = dist_logits = None
        if self.model.prompt_generator is not None:
            prompt_logits, dist_logits = self.model.prompt_maps(images)
        if v == "unet":
            return None, prompt_logits, dist_logits
        emb = self._embed(images, keys)
        coords, labels = self.model.select_prompts(prompt_logits if v == "sac" else None, batch_size=len(images))
        mask_logits, _ = self.model.decode(emb, coords, labels, prompt_logits if v == "sac" else None)
        return mask_logits, prompt_logits, dist_logits

    def on_validation_epoch_start(self) -> None:
        self._val = {}  # crop index -> (image key, {"aji": float, "mask"/"prompt": (tp, fp, fn)})
        self.model.prompt_rng = np.random.default_rng(12345)  # random selection: same points every epoch

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        keys = [("val", int(i)) for i in batch["index"]] if self.cfg.cache_val_prefix else None
        mask_logits, prompt_logits, dist_logits = self.predict_crops(batch["image"], keys)
        target, valid = batch["mask"] > 0.5, batch["valid"] > 0.5
        main = mask_logits if mask_logits is not None else prompt_logits
        ajis = crop_aji(batch["labels"].cpu().numpy(), crop_instances(main, dist_logits, valid),
                        valid[:, 0].cpu().numpy())
        records = [{"aji": aji} for aji in ajis]
        for name, logits in (("mask", mask_logits), ("prompt", prompt_logits)):
            if logits is None:
                continue
            pred = logits > 0
            tp = (pred & target & valid).flatten(1).sum(1)
            fp = (pred & ~target & valid).flatten(1).sum(1)
            fn = (~pred & target & valid).flatten(1).sum(1)
            for rec, a, b, c in zip(records, tp.tolist(), fp.tolist(), fn.tolist(), strict=True):
                rec[name] = (a, b, c)
        for index, key, rec in zip(batch["index"], batch["key"], records, strict=True):
            self._val[int(index)] = (key, rec)

    def _gather_val(self) -> dict:
        """Per-image counts/AJIs of the validation crops, each crop counted once: under DDP every rank saw part of
        them, and Lightning's DistributedSampler pads the last ranks by *repeating* crops, so the ranks' per-crop
        records are merged by crop index (a repeat is dropped) before they are summed per image.
        -> ``{"mask"|"prompt": {key: float64 [3] (tp, fp, fn)}, "aji": {key: [aji per crop]}}``."""
        crops = self._val
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts: list = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(parts, crops)
            crops = {}
            for part in parts:
                for index, record in part.items():
                    crops.setdefault(index, record)
        merged: dict = {"mask": defaultdict(lambda: np.zeros(3)), "prompt": defaultdict(lambda: np.zeros(3)),
                        "aji": defaultdict(list)}
        for index in sorted(crops):  # crop order: the AJI lists of one process and of DDP are the same
            key, rec = crops[index]
            merged["aji"][key].append(rec["aji"])
            for name in ("mask", "prompt"):
                if name in rec:
                    merged[name][key] += rec[name]
        return {name: dict(values) for name, values in merged.items()}

    def on_validation_epoch_end(self) -> None:
        gathered = self._gather_val()
        ajis = gathered.pop("aji", {})
        scores = {name: summarise(counts) for name, counts in gathered.items() if counts}
        main = scores.get("mask") or scores.get("prompt")
        if main is None:
            return
        for k in ("dice", "iou", "f1"):
            self.log(f"val/{k}", main[k], prog_bar=k == "dice")
        if ajis:
            self.log("val/aji", summarise_aji(ajis), prog_bar=self.cfg.monitor == "aji")
        for src, d in main["per_source"].items():
            self.log(f"val/{src}/dice", d)
        if "prompt" in scores:
            self.log("val/prompt_dice", scores["prompt"]["dice"])



def crop_instances(logits: torch.Tensor, dist_logits: torch.Tensor | None, valid: torch.Tensor) -> list[np.ndarray]:
    """Instances of each validation crop as ``sac segment`` makes them: watershed of the probability map
    (``logits [B,1,S,S]``), guided by the distance head when there is one (``dist_logits [B,1,S,S]`` or None),
    padding (``valid bool [B,1,S,S]`` False) excluded -> B ``int32 [S,S]`` label maps."""
    prob = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
    dist = None if dist_logits is None else torch.sigmoid(dist_logits.float())[:, 0].cpu().numpy()
    ok = valid[:, 0].cpu().numpy()
    return [watershed_instances((prob[i] > 0.5) & ok[i], prob=prob[i], distance=None if dist is None else dist[i])
            for i in range(len(prob))]
