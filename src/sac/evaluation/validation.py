"""Scores of the training validation (``val/*`` in the logs): per-image pixel counts and per-crop AJIs summed or
averaged crops -> image -> source, so that every validation source weighs the same whatever its image count.

Keys are ``"<source>/<image id>"`` (:attr:`sac.data.dataset.CropDataset` ``key``). Pure numpy; the instances a
crop's AJI is taken of are made by the caller (``sac.training.module`` uses :mod:`sac.postprocess.instances`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np

from sac.evaluation.instance import aji, overlaps
from sac.evaluation.pixel import PixelCounts, scores_from_counts


def _source(key: str) -> str:
    return key.split("/", 1)[0]


def summarise(counts: Mapping[str, np.ndarray]) -> dict:
    """Per-image pixel counts ``(tp, fp, fn)`` keyed ``"<source>/<id>"`` -> ``{"dice", "iou"}`` (mean over sources
    of the mean over a source's images of the per-image score), ``"f1"`` (pixel F1 of the counts pooled over all
    images) and ``"per_source"`` (source -> mean Dice). Per-image conventions are
    :func:`~sac.evaluation.pixel.scores_from_counts`' (an image with no nucleus and no prediction scores 1)."""
    per_src: dict[str, list[tuple[float, float]]] = defaultdict(list)
    total = PixelCounts(0, 0, 0)
    for key, (tp, fp, fn) in counts.items():
        c = PixelCounts(int(tp), int(fp), int(fn))
        total += c
        s = scores_from_counts(c)
        per_src[_source(key)].append((s["dice"], s["iou"]))
    src_dice = {s: float(np.mean([d for d, _ in v])) for s, v in per_src.items()}
    src_iou = {s: float(np.mean([i for _, i in v])) for s, v in per_src.items()}
    nothing = total.tp + total.fp + total.fn == 0  # no pixel at all: F1 0 (nothing was validated)
    return {
        "dice": float(np.mean(list(src_dice.values()))),
        "iou": float(np.mean(list(src_iou.values()))),
        "f1": 0.0 if nothing else scores_from_counts(total)["dice"],  # pooled F1 = pooled Dice for binary masks
        "per_source": src_dice,
    }


def crop_aji(true: np.ndarray, pred: Iterable[np.ndarray], valid: np.ndarray) -> list[float]:
    """AJI of each validation crop: ``true int [B, S, S]`` ground-truth labels, ``pred`` B predicted label maps
    ``int [S, S]``, ``valid bool [B, S, S]`` (False on padding, where the truth is ignored) -> B floats in [0, 1]."""
    return [float(aji(overlaps(np.where(ok, t, 0), p))) for t, p, ok in zip(true, pred, valid, strict=True)]


def summarise_aji(per_image: Mapping[str, list[float]]) -> float:
    """Crop AJIs keyed ``"<source>/<id>"`` -> mean over sources of the mean over images of the mean over crops
    (the weighting of :func:`summarise`)."""
    per_src: dict[str, list[float]] = defaultdict(list)
    for key, values in per_image.items():
        per_src[_source(key)].append(float(np.mean(values)))
    return float(np.mean([np.mean(v) for v in per_src.values()]))
