"""Typed configuration of a SAC model. Plain dataclasses: JSON round-trip via :func:`to_dict` / :func:`from_dict`.

The resolved config is saved next to every checkpoint (see :mod:`sac.modelfile`), so a saved model
describes itself completely.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SELECT_METHODS = ("centroid", "random")  # prompt selection rules: connected-component centroids (O), random (R)


@dataclass
class LoraConfig:
    """LoRA on the Q and V slices of every fused ``qkv`` projection of the image encoder (paper eq. 1).

    ``h = W x + (alpha / rank) * B A x`` on Q and V; K untouched; B starts at zero.
    """

    enabled: bool = True
    rank: int = 4
    alpha: float = 4.0
    # None = every attention layer (the paper). N = only the last N attention layers: a documented CPU
    # option, since backpropagating into early layers is what makes LoRA training expensive.
    last_n_layers: int | None = None


@dataclass
class PromptConfig:
    """How point prompts are chosen from the prompt generator's probability map (paper eq. 5)."""

    enabled: bool = True  # False = no automatic prompts (the "LoRA without auto-prompts" variant)
    n_points: int = 16  # per class: n_points positive + n_points negative (paper Fig. 5 convention)
    select: str = "centroid"  # "centroid" (O: connected-component centroids) | "random" (R: thresholded sampling)
    threshold: float = 0.5  # prob >= threshold -> positive region; prob <= 1 - threshold -> negative region
    tau: float = 0.5  # random selection: sample positives where prob > tau, negatives where prob < 1 - tau
    min_area: int = 4  # centroid selection ignores connected regions smaller than this (pixels)
    # Beyond the paper: also hand the UNet's logits to SAM's (frozen) prompt encoder as its dense mask prompt,
    # the input SAM uses for iterative refinement, so the decoder sees the whole map, not only points from it.
    mask_prompt: bool = False


@dataclass
class UNetConfig:
    """The auto-prompt generator: MONAI ``UNet``, 4 levels (paper: "a 4-layer UNet")."""

    channels: tuple[int, ...] = (32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 2
    # Beyond the paper: a second output channel predicting each nucleus's distance to its own border,
    # normalised to 1 at its centre (Naylor et al.'s DIST target). The watershed then splits touching nuclei
    # along the learned valleys instead of the mask's geometric distance transform.
    distance_head: bool = False

    @property
    def out_channels(self) -> int:
        """UNet output channels: the nucleus logit, and the distance with ``distance_head``."""
        return 2 if self.distance_head else 1


@dataclass
class SACConfig:
    """Everything needed to rebuild a SAC model's architecture (weights are stored separately)."""

    backbone: str = "litemedsam"
    lora: LoraConfig = field(default_factory=LoraConfig)
    prompts: PromptConfig = field(default_factory=PromptConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    train_decoder: bool = True  # SAM mask decoder trainable (paper); prompt encoder is always frozen
    # Microns per pixel of the training images (e.g. 0.25 for 40x H&E). Slides are read at the pyramid level and
    # scale that match it (sac.inference.slide); None = unknown (old model files load with None).
    mpp: float | None = None
    # Median equivalent diameter (pixels) of the training nuclei, as training sampled them: the size `--scale auto`
    # rescales images to (sac.inference.scale; benchmarks/nucleus_size.py for the default's). None = unknown: auto
    # then keeps scale 1 (old model files load with None).
    nucleus_diameter: float | None = None
    # Beyond the paper: a second SAM mask decoder (``SAC.object_decoder``, same architecture, initialised from the
    # backbone's pretrained decoder) for "one nucleus from clicks" (``SAC.decode_object``). The automatic path
    # (``mask_decoder``) is untouched by it. Old model files without this key load with False.
    interactive: bool = False
    # Beyond the paper: ``SAC.refiner`` (sac.models.refiner), a small full-resolution UNet that corrects the
    # interactive head's mask around the clicks. Needs ``interactive`` and a UNet. Old model files load with False.
    refiner: bool = False

    @property
    def prompt_channels(self) -> int:
        """Output channels of the prompt UNet of a model with this config (0: no UNet, prompts disabled)."""
        return self.unet.out_channels if self.prompts.enabled else 0


def to_dict(cfg: Any) -> dict:
    """Dataclass -> JSON-ready dict (tuples become lists)."""
    return dataclasses.asdict(cfg)


def from_dict(cls: type, data: dict) -> Any:
    """Dict -> dataclass ``cls``, recursing into nested dataclass fields.

    Unknown keys, or a non-object where a nested config belongs, raise ``ValueError`` naming them, so a typo in
    a config file is never silently ignored.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__} must be a JSON object, got {data!r}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {', '.join(unknown)} (valid: {', '.join(names)})")
    kwargs = {}
    for key, value in data.items():
        ftype = names[key].type
        sub = _DATACLASSES.get(ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        if sub is not None and not isinstance(value, sub):
            value = from_dict(sub, value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


_DATACLASSES = {c.__name__: c for c in (LoraConfig, PromptConfig, UNetConfig, SACConfig)}
