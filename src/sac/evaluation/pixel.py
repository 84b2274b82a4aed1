"""Pixel-level (semantic) scores of binary nucleus masks: Dice, IoU, F1, precision, recall.

All functions take boolean masks of equal shape (``labels > 0`` for instance maps). Counts are exact
integers, so per-image scores and dataset-pooled scores (from summed counts) are both available:
:func:`pixel_scores` on one image, :func:`scores_from_counts` on any summed :class:`PixelCounts`.

Conventions (docs/metrics.md):
- Both masks empty: every score is 1.0 (nothing to find, nothing found).
- precision with no predicted pixel: 1.0 if the truth is empty too, else 0.0; recall symmetrically.
- F1 = 2PR/(P+R) (0 when P+R = 0). For binary masks this equals Dice = 2TP/(2TP+FP+FN) exactly, under
  these conventions too; papers that report different "F1" and "Dice" differ only in how they average.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PixelCounts:
    """Confusion counts of one image (or summed over many)."""

    tp: int
    fp: int
    fn: int

    def __add__(self, other: PixelCounts) -> PixelCounts:
        return PixelCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def pixel_counts(true: np.ndarray, pred: np.ndarray) -> PixelCounts:
    """TP/FP/FN pixel counts of bool masks ``true``, ``pred`` (same shape; non-bool is taken as ``> 0``)."""
    true, pred = np.asarray(true) > 0, np.asarray(pred) > 0
    if true.shape != pred.shape:
        raise ValueError(f"shape mismatch: true {true.shape} vs pred {pred.shape}")
    tp = int(np.count_nonzero(true & pred))
    return PixelCounts(tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(true)) - tp)


def _ratio(num: float, den: float, empty: float) -> float:
    return float(num / den) if den > 0 else empty


def scores_from_counts(c: PixelCounts) -> dict[str, float]:
    """``dice, iou, f1, precision, recall`` in [0, 1] from counts (conventions in the module docstring)."""
    nothing = c.tp + c.fp + c.fn == 0
    precision = _ratio(c.tp, c.tp + c.fp, 1.0 if c.fn == 0 else 0.0)
    recall = _ratio(c.tp, c.tp + c.fn, 1.0 if c.fp == 0 else 0.0)
    return {
        "dice": 1.0 if nothing else 2 * c.tp / (2 * c.tp + c.fp + c.fn),
        "iou": 1.0 if nothing else c.tp / (c.tp + c.fp + c.fn),
        "f1": _ratio(2 * precision * recall, precision + recall, 0.0),
        "precision": precision,
        "recall": recall,
    }


def pixel_scores(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Per-image ``dice, iou, f1, precision, recall`` of two masks (bool or label maps, ``> 0`` = nucleus)."""
    return scores_from_counts(pixel_counts(true, pred))
