"""Nucleus outlines for the page, and what changed after an edit.

The page draws one closed polygon per nucleus. The geometry is :func:`sac.inference.writers.nucleus_polygons`, the
function behind the QuPath GeoJSON export, so the outlines on screen are the exported ones. After each edit only
the nuclei whose pixels changed are sent again (the page keeps the rest): one ``!=`` over the label image (about
10 ms at 4000 x 4000) finds them, and their polygons are recomputed on the smallest crop that holds them.
"""

from __future__ import annotations

import numpy as np

from sac.inference.writers import nucleus_polygons


def _polygons(labels: np.ndarray, ids: np.ndarray | None, y0: int = 0, x0: int = 0) -> dict[int, dict]:
    """``{id: {"ring": [x0, y0, x1, y1, ...], "area": pixels, "bbox": [y0, x0, y1, x1]}}`` of the ``ids`` present in
    ``labels`` (all when None), in image coordinates (``labels`` is the crop starting at row ``y0``, column ``x0``)."""
    if ids is not None:
        labels = np.where(np.isin(labels, ids), labels, 0)
    present, dense = np.unique(labels, return_inverse=True)
    dense = dense.reshape(labels.shape).astype(np.int32)  # 0 stays 0: present[0] == 0 whenever background exists
    if present[0] != 0:  # no background pixel at all: shift so every id is >= 1
        present, dense = np.concatenate([[0], present]), dense + 1
    areas = np.bincount(dense.ravel(), minlength=len(present))
    out = {}
    for k, ring in nucleus_polygons(dense):
        pts = np.asarray(ring, dtype=np.float64) + [x0, y0]
        (xa, ya), (xb, yb) = pts.min(0), pts.max(0)
        out[int(present[k])] = {
            "ring": np.round(pts, 2).ravel().tolist(),
            "area": int(areas[k]),
            "bbox": [int(np.floor(ya)), int(np.floor(xa)), int(np.ceil(yb)), int(np.ceil(xb))],
        }
    return out


class Contours:
    """The outlines the client holds: a copy of the label image they were drawn from, and their boxes.

    ``labels int32 [H, W]``. Memory: one int32 label copy (counted in the session's budget, :attr:`nbytes`).
    """

    def __init__(self, labels: np.ndarray):
        self.shown = np.array(labels, dtype=np.int32, copy=True)
        self.polygons = _polygons(self.shown, None)
        self.version = 0

    @property
    def nbytes(self) -> int:
        return int(self.shown.nbytes)

    def payload(self) -> dict:
        """Everything, for a page that (re)loads: ``{"version", "nuclei": {id: polygon}}``."""
        return {"version": self.version, "nuclei": {str(k): v for k, v in self.polygons.items()}}

    def update(self, labels: np.ndarray) -> dict:
        """Bring the outlines to ``labels``; returns ``{"version", "removed": [ids], "nuclei": {id: polygon}}`` with
        the polygons of every nucleus that is new or changed (the client replaces those and drops ``removed``)."""
        diff = self.shown != labels
        if not diff.any():
            return {"version": self.version, "removed": [], "nuclei": {}}
        rows, cols = np.flatnonzero(diff.any(1)), np.flatnonzero(diff.any(0))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        touched = np.union1d(self.shown[diff], labels[diff])
        touched = touched[touched > 0]
        # A changed nucleus now lies within its old box plus the changed pixels; a new one within the latter.
        for t in touched:
            box = self.polygons.get(int(t), {}).get("bbox")
            if box is not None:
                y0, x0, y1, x1 = min(y0, box[0]), min(x0, box[1]), max(y1, box[2]), max(x1, box[3])
        H, W = labels.shape
        y0, x0, y1, x1 = max(0, y0), max(0, x0), min(H, y1), min(W, x1)
        fresh = _polygons(labels[y0:y1, x0:x1], touched, y0, x0)
        removed = [int(t) for t in touched if int(t) not in fresh]
        for t in removed:
            self.polygons.pop(t, None)
        self.polygons.update(fresh)
        self.shown[y0:y1, x0:x1] = labels[y0:y1, x0:x1]
        self.version += 1
        return {"version": self.version, "removed": removed, "nuclei": {str(k): v for k, v in fresh.items()}}
