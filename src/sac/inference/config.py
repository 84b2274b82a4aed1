"""Typed settings of whole-image inference (`sac segment`, `sac evaluate --model`, the Python API).

One dataclass so that the CLI, :func:`sac.inference.evaluate.evaluate_model` and
:class:`sac.inference.segmenter.Segmenter` share exactly the same defaults: what is measured is what users get.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from sac.devices import DEVICE_CHOICES  # noqa: F401 -- re-exported: every inference choice list is importable here
from sac.errors import SACError
from sac.models.config import SELECT_METHODS as SELECT_CHOICES

INSTANCE_CHOICES = ("watershed", "components", "none")
# Inference engines (sac.inference.engine): auto = the fastest installed one that matches torch on a real tile.
ENGINE_CHOICES = ("auto", "openvino", "onnxruntime", "torch")
# Where whole-image segmentation runs the SAM encoder + decoder (InferenceConfig.sam, docs/segment.md).
SAM_CHOICES = ("prompts", "uncertain", "all")
# Flip test-time augmentation (InferenceConfig.tta): mirror images per tile -> the dims of [b, c, S, S] flipped
# (() = the tile itself). 2, the tile and its left-right mirror, scored within 0.002 Dice / 0.005 AJI of all 4 at
# half the UNet's time (docs/segment.md).
TTA_FLIPS = {1: ((),), 2: ((), (-1,)), 4: ((), (-1,), (-2,), (-2, -1))}
TTA_CHOICES = tuple(TTA_FLIPS)
# --scale: "auto" (estimate each image's nucleus size, sac.inference.scale) or a factor in (0, MAX_SCALE].
SCALE_AUTO = "auto"
MAX_SCALE = 8.0


def scale_arg(text: str) -> float | str:
    """argparse type of ``--scale``: ``auto`` or a number in (0, MAX_SCALE] (else a one-line error, exit 2)."""
    if text.strip().lower() == SCALE_AUTO:
        return SCALE_AUTO
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number in (0, {MAX_SCALE:g}], got {text!r}") from None
    if not 0 < value <= MAX_SCALE:
        raise argparse.ArgumentTypeError(f"must be in (0, {MAX_SCALE:g}] or 'auto', got {text}")
    return value


def diameter_arg(text: str) -> float:
    """argparse type of ``--nucleus-diameter``: a number of pixels > 0 (else a one-line error, exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of pixels > 0, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of pixels > 0, got {text}")
    return value


@dataclass
class InferenceConfig:
    """How a whole image is cut into tiles, prompted and turned into nuclei.

    ``tile``: side of the square window fed to the model, in *model-space* pixels (after ``scale``);
    ``None`` = the backbone's input size (256 for litemedsam, 1024 for the ViTs).
    ``overlap``: minimum overlap between neighbouring tiles (pixels, model space). Tiles are then spread
    evenly, so the actual overlap can be larger but never smaller. ``None`` = ``tile // 8``.
    ``scale``: the image is resampled by this factor before segmentation and the outputs back to the
    original size (e.g. 0.5 for a 40x H&E on a model trained at 20x); ``"auto"`` (default): per image, the factor
    that brings its nuclei to the model's training size (``SACConfig.nucleus_diameter``), estimated by the model's
    prompt UNet (:mod:`sac.inference.scale`; 1 for sizes within 0.8..1.25 of the training size, docs/scale.md).
    ``nucleus_diameter``: with ``scale="auto"``, the images' typical nucleus diameter in pixels, given instead of
    estimated.
    ``n_points`` / ``select``: automatic prompts per tile (``None`` = what the model was trained with;
    ``0`` = no automatic prompts).
    ``instances``: ``watershed`` (seeded watershed inside the mask, separates touching nuclei),
    ``components`` (connected components of the mask) or ``none`` (semantic mask only, labels = components).
    ``use_distance``: with a model that has a distance head, the watershed follows its map (False: the mask's
    distance transform weighted by the probability, as for models without one).
    ``split_h``: marker height of the watershed on a distance head's map (fraction of a nucleus's peak distance);
    lower splits more. ``None`` = ``sac.postprocess.instances.DISTANCE_H`` (0.15); on the validation sets 0.1 suited
    dense H&E (MoNuSeg) best and 0.2 DSB's larger nuclei (docs/segment.md).
    ``tta``: flip test-time augmentation: the prompt UNet's maps (nucleus logits, distance) are averaged over this
    many mirror images of each tile (:data:`TTA_FLIPS`: 1 = off, 2 = the tile and its left-right mirror, 4 = also
    up-down and both) before prompts are selected. With ``sam="prompts"`` the UNet's map is the automatic result:
    2 flips lift DSB val AJI by 0.016 over 1, 4 by a further 0.004 at twice the UNet's time (docs/segment.md).
    ``min_area``: objects smaller than this (original-image pixels) are dropped from the instances.
    ``threshold``: probability above which a pixel is nucleus.
    ``batch``: tiles per forward pass (1 is fastest on CPU for LiteMedSAM, see docs/segment.md).
    ``seed``: seeds the random prompt selection so runs are reproducible.
    ``sam``: where the SAM encoder + decoder run (the UNet runs on every window). ``prompts`` (default): only on
    windows holding expert points; elsewhere the UNet's probability is the automatic result (measured as accurate as
    SAM on every window, at a quarter of the time: docs/segment.md); clicks and expert points are SAM's work
    (:class:`~sac.inference.editor.Editor`). ``uncertain``: also on windows whose UNet map holds a nucleus (a pixel
    above ``threshold``) and has at least a fraction ``sam_uncertain`` of its pixels uncertain (0.1 < p < 0.9).
    ``all``: every window (the paper's method). Models without a prompt UNet always run SAM everywhere.
    ``engine``: what runs the model on the CPU (one of ``ENGINE_CHOICES``; docs/engines.md); cuda always runs torch.
    """

    tile: int | None = None
    overlap: int | None = None
    scale: float | str = SCALE_AUTO
    nucleus_diameter: float | None = None
    n_points: int | None = None
    select: str | None = None
    instances: str = "watershed"
    use_distance: bool = True
    split_h: float | None = None
    tta: int = 2
    min_area: int = 10
    threshold: float = 0.5
    batch: int = 1
    seed: int = 0
    sam: str = "prompts"
    sam_uncertain: float = 0.2
    engine: str = "auto"

    def validate(self) -> InferenceConfig:
        """Raise :class:`SACError` naming the first bad value; return ``self`` for chaining."""
        if self.tile is not None and self.tile < 16:
            raise SACError(f"--tile must be >= 16 pixels, got {self.tile}")
        if self.overlap is not None and self.overlap < 0:
            raise SACError(f"--overlap must be >= 0, got {self.overlap}")
        if self.tile is not None and self.overlap is not None and self.overlap >= self.tile:
            raise SACError(f"--overlap ({self.overlap}) must be smaller than --tile ({self.tile})")
        if self.scale != SCALE_AUTO and not (isinstance(self.scale, int | float) and 0 < self.scale <= MAX_SCALE):
            raise SACError(f"--scale must be 'auto' or a number in (0, {MAX_SCALE:g}], got {self.scale!r}")
        if self.nucleus_diameter is not None:
            if not (isinstance(self.nucleus_diameter, int | float) and 0 < self.nucleus_diameter < math.inf):
                raise SACError(f"--nucleus-diameter must be a number of pixels > 0, got {self.nucleus_diameter!r}")
            if self.scale != SCALE_AUTO:
                raise SACError("give --scale or --nucleus-diameter, not both (the diameter sets the scale)")
        if self.n_points is not None and self.n_points < 0:
            raise SACError(f"--points must be >= 0, got {self.n_points}")
        if self.select is not None and self.select not in SELECT_CHOICES:
            raise SACError(f"--select must be one of {', '.join(SELECT_CHOICES)}, got {self.select!r}")
        if self.instances not in INSTANCE_CHOICES:
            raise SACError(f"instances must be one of {', '.join(INSTANCE_CHOICES)}, got {self.instances!r}")
        if self.split_h is not None and not (0 < self.split_h < 1):
            raise SACError(f"--split-h must be in (0, 1), got {self.split_h}")
        if not (0 < self.threshold < 1):
            raise SACError(f"threshold must be in (0, 1), got {self.threshold}")
        if self.sam not in SAM_CHOICES:
            raise SACError(f"--sam must be one of {', '.join(SAM_CHOICES)}, got {self.sam!r}")
        if not (0 <= self.sam_uncertain <= 1):
            raise SACError(f"sam_uncertain must be in [0, 1], got {self.sam_uncertain}")
        if self.engine not in ENGINE_CHOICES:
            raise SACError(f"--engine must be one of {', '.join(ENGINE_CHOICES)}, got {self.engine!r}")
        if isinstance(self.tta, bool) or self.tta not in TTA_FLIPS:
            choices = ", ".join(map(str, TTA_CHOICES))
            raise SACError(f"--tta must be one of {choices} (mirror images per tile; 1 = off), got {self.tta!r}")
        if self.batch < 1:
            raise SACError(f"batch must be >= 1, got {self.batch}")
        return self
