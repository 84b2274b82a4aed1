"""Score a dataset split: in-memory pairs (:func:`score`), a folder of predictions (:func:`score_folder`),
and the printed table shared by ``sac evaluate --pred`` and ``sac evaluate --model`` (:func:`format_table`).

Result dict keys (also the ``--json`` output):
``dice, iou, f1, precision, recall`` (pixel, mean over images), the same with ``_pooled`` (pixel, from
TP/FP/FN summed over the whole split), ``aji, aji_plus, pq, dq, sq, object_precision, object_recall,
object_f1`` (instance, mean over images, like MoNuSeg and HoVer-Net), ``n_images``, ``n_true``,
``n_pred``, ``n_matched`` (totals), ``averaging`` (a sentence saying the above) and ``per_image``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

from sac.errors import SACError
from sac.evaluation.instance import instance_scores
from sac.evaluation.pixel import PixelCounts, pixel_counts, scores_from_counts

PIXEL_KEYS = ("dice", "iou", "f1", "precision", "recall")
INSTANCE_KEYS = ("aji", "aji_plus", "pq", "dq", "sq", "object_precision", "object_recall", "object_f1")
AVERAGING = (
    "pixel metrics (dice, iou, f1, precision, recall): mean over images; *_pooled: from pixel counts summed "
    "over all images; instance metrics (aji, aji_plus, pq, dq, sq, object_*): mean over images; "
    "object matches and PQ at IoU > 0.5"
)
# Prediction file names tried for a ground-truth id, in this order (sac segment writes the last two).
PRED_PATTERNS = ("{id}_labels", "{id}", "{id}_mask")
PRED_SUFFIXES = (".png", ".tif", ".tiff")


def as_instances(pred: np.ndarray) -> np.ndarray:
    """Instance map of a prediction: label maps pass through; a binary mask (bool, or a single nonzero
    value such as 0/1 or 0/255) becomes instances by 8-connected components (skimage.measure.label)."""
    pred = np.asarray(pred)
    if pred.dtype == bool or np.unique(pred[pred > 0]).size <= 1:
        from skimage.measure import label

        return label(pred > 0, connectivity=2).astype(np.int32)
    return pred.astype(np.int32, copy=False)


def score_one(true: np.ndarray, pred: np.ndarray) -> tuple[PixelCounts, dict]:
    """(pixel counts, per-image dict of pixel + instance scores) for one true/pred pair of label maps."""
    pred = as_instances(pred)
    counts = pixel_counts(true > 0, pred > 0)
    row = scores_from_counts(counts)
    row.update(instance_scores(true, pred).to_dict())
    return counts, row


class Scorer:
    """Accumulates scores image by image (nothing but per-image rows is kept) -> :meth:`result`, the dict of
    :func:`score`. Several scorers can follow one pass over a dataset (one per predicted map)."""

    def __init__(self) -> None:
        self.total = PixelCounts(0, 0, 0)
        self.rows: list[dict] = []

    def add(self, pid: str, true: np.ndarray, pred: np.ndarray) -> dict:
        """Score one image (``true`` integer labels [H, W], ``pred`` labels or binary mask of that shape) and
        return its row; SACError for a shape mismatch."""
        true, pred = np.asarray(true), np.asarray(pred)
        if true.shape != pred.shape:
            raise SACError(f"prediction for {pid} is {pred.shape[:2]} but ground truth is {true.shape[:2]}")
        counts, row = score_one(true, pred)
        self.total = self.total + counts
        self.rows.append({"id": str(pid), **row})
        return self.rows[-1]

    def result(self) -> dict:
        """The dict described in the module docstring; SACError if no image was added."""
        rows = self.rows
        if not rows:
            raise SACError("nothing to score: no images")
        out: dict = {k: float(np.mean([r[k] for r in rows])) for k in PIXEL_KEYS}
        out.update({f"{k}_pooled": v for k, v in scores_from_counts(self.total).items()})
        out.update({k: float(np.mean([r[k] for r in rows])) for k in INSTANCE_KEYS})
        out["n_images"] = len(rows)
        for k in ("n_true", "n_pred", "n_matched"):
            out[k] = int(sum(r[k] for r in rows))
        out["averaging"] = AVERAGING
        out["per_image"] = rows
        return out


def score(pairs: Iterable[tuple]) -> dict:
    """Score an iterable of ``(true_labels, pred)`` or ``(id, true_labels, pred)`` pairs.

    ``true_labels``: integer instance map [H, W]; ``pred``: instance map or binary mask of the same shape
    (see :func:`as_instances`). Consumed lazily, so a generator keeps only one image in memory.
    Returns the dict described in the module docstring. Raises SACError for a shape mismatch or no pairs.
    """
    scorer = Scorer()
    for k, pair in enumerate(pairs):
        pid, true, pred = pair if len(pair) == 3 else (str(k), *pair)
        scorer.add(pid, true, pred)
    return scorer.result()


def find_prediction(pred_dir: Path, pid: str) -> Path | None:
    """The prediction file for ground-truth id ``pid`` in ``pred_dir`` (see PRED_PATTERNS), or None."""
    for pattern in PRED_PATTERNS:
        for suffix in PRED_SUFFIXES:
            p = pred_dir / (pattern.format(id=pid) + suffix)
            if p.is_file():
                return p
    return None


def score_folder(pred_dir: str | Path, data: str | Path, split: str, progress=None) -> dict:
    """Score every ground-truth image of ``data/split`` against its prediction file in ``pred_dir``.

    Raises SACError naming the image when a prediction is missing, unreadable or of the wrong size.
    """
    from sac.data.io import list_pairs, read_labels

    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise SACError(f"prediction folder not found: {pred_dir}")
    items = list_pairs(data, split)
    found = []
    for pid, _, lab in items:
        p = find_prediction(pred_dir, pid)
        if p is None:
            raise SACError(f"no prediction for image {pid!r} in {pred_dir} (tried {pid}.png, {pid}_labels.tif, ...)")
        found.append((pid, lab, p))

    def pairs():
        for pid, lab, p in progress(found) if progress else found:
            true, pred = read_labels(lab), read_labels(p)
            if true.shape != pred.shape:
                raise SACError(f"prediction {p} is {pred.shape} but ground truth {lab} is {true.shape}")
            yield pid, true, pred

    return score(pairs())


def format_table(result: dict) -> str:
    """A plain-text table of the summary scores of a :func:`score` result (no per-image rows)."""
    lines = [f"{'metric':<18}{'value':>8}   averaging"]
    for k in PIXEL_KEYS:
        lines.append(f"{k:<18}{result[k]:>8.4f}   mean over images (pixel)")
    for k in ("dice", "iou", "f1"):
        lines.append(f"{k + '_pooled':<18}{result[k + '_pooled']:>8.4f}   pooled pixels")
    for k in INSTANCE_KEYS:
        kind = "instance" if k.startswith("aji") else "instance, match IoU > 0.5"
        lines.append(f"{k:<18}{result[k]:>8.4f}   mean over images ({kind})")
    lines.append(f"images {result['n_images']}, nuclei true {result['n_true']}, predicted {result['n_pred']}, "
                 f"matched {result['n_matched']}")
    if "seconds_per_image" in result:
        lines.append(f"seconds per image {result['seconds_per_image']:.3f}")
    return "\n".join(lines)
