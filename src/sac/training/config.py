"""Typed configuration of one training run (``sac train``), saved as ``RUN_DIR/config.json``.

The model architecture lives in :class:`sac.models.config.SACConfig`; this file holds everything about
*how* it is trained: data, variant, optimisation, time budget and the CPU-practical switches.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sac.devices import DEVICE_CHOICES
from sac.models.config import SELECT_METHODS

VARIANTS = ("sac", "sam-ft", "lora-noprompt", "unet", "interactive", "refiner")
"""``sac``: LoRA(Q,V) + mask decoder + UNet prompt generator (the paper's method).
``sam-ft``: mask decoder only (no LoRA), prompts = 0-3 expert-style points from the ground truth.
``lora-noprompt``: LoRA + decoder, no automatic prompts (SAM's "no prompt" embedding).
``unet``: the prompt generator alone (BCE + Dice): the "UNet alone" baseline and the warm-up stage of ``sac``.
``interactive``: the single-nucleus head (``SAC.object_decoder``) alone, on top of an ``--init-from`` model whose
other tensors stay frozen (:mod:`sac.training.interactive`); monitored on ``click_iou``.
``refiner``: the click refiner (``SAC.refiner``) alone, on top of an ``--init-from`` model with an interactive head,
everything else frozen (:mod:`sac.training.refiner`); monitored on ``click_iou``."""
MONITORS = ("dice", "aji", "click_iou")  # validation scores --monitor can select on (val/dice, val/aji, ...)


@dataclass
class DataSource:
    """One dataset in the standard layout ``<root>/<split>/{images,labels}`` (each gives an equal share of crops)."""

    root: str
    split: str = "train"


@dataclass
class TrainConfig:
    """Everything that defines a training run. Defaults are the CPU-practical recipe (docs/training.md)."""

    # --- data -------------------------------------------------------------------------------------
    data: list[DataSource] = field(default_factory=list)
    val_split: str = "val"  # each data root that has this split is validated on it
    val_from_train: int = 0  # roots without val_split: hold out this many train images (seeded)
    val_seed: int = 0
    val_crops_per_image: int = 4  # fixed grid crops per validation image (deterministic, see datamodule)
    val_max_images: int | None = None  # per validation source; None = all (DSB val: 67)
    scale_min: float = 0.8  # mild scale augmentation: crops are resized by a factor in [min, max]
    scale_max: float = 1.25
    # --- model ------------------------------------------------------------------------------------
    variant: str = "sac"
    backbone: str = "litemedsam"
    sam_checkpoint: str | None = None
    lora_rank: int = 4
    lora_last_n_layers: int | None = None  # None = every attention layer (paper)
    n_points: int = 16
    select: str = "centroid"
    # sac: each training step draws its points per class instead of always n_points: 0 with probability 1/4, else
    # round(n_points ** u), u ~ U(0, 1) (log-uniform in 1..n_points), so the model also works with few or no points.
    vary_points: bool = False
    mask_prompt: bool = False  # sac: UNet logits also go to SAM as its dense mask prompt (beyond the paper)
    init_from: str | None = None  # a model folder (or a unet-variant run) to start from
    # UNet second channel: per-nucleus normalised distance to the border (beyond the paper; splits touching
    # nuclei in `sac segment`). From --init-from a model without it, channel 1 starts as a copy of channel 0.
    distance_head: bool = False
    distance_loss_weight: float = 1.0
    # sac: train only the prompt generator (UNet and distance head); LoRA and decoder stay as initialised.
    # No SAM forward in training steps (points and mask prompt are detached, so it gives the UNet no gradient).
    freeze_sam: bool = False
    # interactive: per training crop, this many ground-truth nuclei each get one prompt set (a click biased to the
    # interior, with probability object_box_prob also a jittered box); with probability object_refine_prob the
    # step adds 1..object_refine_rounds corrective rounds (uniform; SAM-style, each at the previous round's largest
    # error). Validation: object_val_per_crop nuclei per crop (seeded).
    objects_per_crop: int = 4
    object_box_prob: float = 0.25
    object_refine_prob: float = 0.5
    object_refine_rounds: int = 1
    object_no_mask_prob: float = 0.15  # first rounds without the UNet logits as mask input (works without them)
    object_val_per_crop: int = 3
    # --- optimisation -----------------------------------------------------------------------------
    epochs: int = 30  # max epochs; the paper runs >= 30 with early stopping
    min_epochs: int = 0
    patience: int = 10  # early stopping on the monitored validation score (epochs without improvement)
    monitor: str = "dice"  # dice | aji: the validation score that picks best/ and drives early stopping
    crops_per_epoch: int = 64  # an "epoch" is this many random crops (CPU-practical; the paper uses full passes)
    # Fixed crop pool (CPU recipe): every epoch revisits the same `crops_per_epoch` augmented crops (shuffled),
    # so the frozen encoder prefix of each crop is computed once and cached (fp16) -- epochs >= 2 cost only
    # the LoRA suffix, decoder and UNet. False = fresh random crops every epoch (no training cache).
    crop_pool: bool = False
    batch_size: int = 4
    lr: float = 3e-4  # LoRA + mask decoder (AdamW)
    lr_prompt: float = 1e-3  # prompt-generator UNet
    weight_decay: float = 1e-4
    prompt_loss_weight: float = 1.0  # weight of the UNet BCE term in the sac variant
    max_expert_points: int = 3  # sam-ft: training prompts are 0..this many GT points
    seed: int = 0
    max_time: float | None = None  # minutes of wall time (Lightning max_time); None = no limit
    warmup_minutes: float = 0.0  # sac: train the UNet alone this long first (a `unet` stage in RUN_DIR/warmup)
    # --- hardware / CPU switches --------------------------------------------------------------------
    device: str = "auto"  # cpu | cuda | auto
    devices: int = 1
    num_threads: int | None = None  # torch.set_num_threads; None = leave torch's default
    channels_last: bool = True  # encoder input in channels_last memory format (1.3x on this CPU)
    frozen_prefix_no_grad: bool = True  # run the encoder blocks before the first LoRA layer under no_grad
    cache_val_prefix: bool = True  # validation crops are fixed: cache their frozen-prefix features
    cache_embeddings: bool = True  # sam-ft (frozen encoder): cache image embeddings of a fixed crop pool
    num_workers: int = 0
    log_every_n_steps: int = 5
    progress_bar: bool = True
    # stop after this many optimizer steps (tests / simulated kills); None = no limit
    max_steps: int | None = None

    def validate(self) -> None:
        """Raise :class:`~sac.errors.SACError` for values a user can fix."""
        from sac.errors import SACError

        if self.variant not in VARIANTS:
            raise SACError(f"unknown --variant {self.variant!r} (valid: {', '.join(VARIANTS)})")
        if not self.data:
            raise SACError("no training data: give at least one --data ROOT[:SPLIT]")
        if self.select not in SELECT_METHODS:
            raise SACError(f"unknown --select {self.select!r} (valid: {', '.join(SELECT_METHODS)})")
        for name in ("epochs", "crops_per_epoch", "batch_size", "devices", "val_crops_per_image"):
            if getattr(self, name) < 1:
                raise SACError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if self.patience < 0 or self.n_points < 0 or self.val_from_train < 0 or self.lora_rank < 1:
            raise SACError("--patience, --points and --val-from-train must be >= 0 and --lora-rank >= 1")
        if not 0 < self.scale_min <= self.scale_max:
            raise SACError(f"bad scale range {self.scale_min}..{self.scale_max} (need 0 < min <= max)")
        if self.monitor not in MONITORS:
            raise SACError(f"unknown --monitor {self.monitor!r} (valid: {', '.join(MONITORS)})")
        clicks = self.variant in ("interactive", "refiner")
        if clicks != (self.monitor == "click_iou"):
            raise SACError("--variant interactive / refiner are monitored with --monitor click_iou (and only they)")
        if clicks and not self.init_from:
            raise SACError(f"--variant {self.variant} trains on top of a model: give --init-from MODEL")
        if self.objects_per_crop < 1 or self.object_val_per_crop < 1:
            raise SACError("--objects-per-crop and the validation objects per crop must be >= 1")
        if self.object_refine_rounds < 1:
            raise SACError(f"--refine-rounds must be >= 1 (got {self.object_refine_rounds})")
        if self.freeze_sam and self.variant != "sac":
            raise SACError("--freeze-sam applies to --variant sac only")
        if self.device not in DEVICE_CHOICES:
            raise SACError(f"unknown --device {self.device!r} (valid: {', '.join(DEVICE_CHOICES)})")
        if self.max_time is not None and self.max_time <= 0:
            raise SACError(f"--max-time must be > 0 minutes (got {self.max_time})")


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def from_dict(data: dict[str, Any]) -> TrainConfig:
    """Inverse of :func:`to_dict`; unknown keys raise ``ValueError`` naming them."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown TrainConfig keys: {', '.join(unknown)}")
    data = dict(data)
    data["data"] = [DataSource(**d) for d in data.get("data", [])]
    return TrainConfig(**data)
