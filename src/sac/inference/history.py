"""The editable label image behind :class:`sac.inference.editor.Editor`: edits as bbox diffs, exact undo / redo.

An edit replaces the labels of one rectangle (``bbox = (y0, x0, y1, x1)``, ends exclusive) by a new patch; the
history keeps the patch before and after (a few KiB per click, not a copy of the image), so ``undo`` / ``redo``
restore the label image exactly. Instance areas are kept up to date from the patches, so the nucleus count and
"is this id known" cost nothing per click.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

_EIGHT = np.ones((3, 3), dtype=bool)
MAX_HISTORY = 1000  # undo steps kept (oldest dropped first)


@dataclass
class Edit:
    """What one editor call did. ``bbox`` = ``(y0, x0, y1, x1)`` (ends exclusive) of the changed labels or None;
    ``ids``: the instances created / changed / removed; ``n_nuclei``: instances after the call."""

    changed: bool
    message: str
    ids: list[int]
    bbox: tuple[int, int, int, int] | None
    n_nuclei: int


@dataclass
class Change:
    bbox: tuple[int, int, int, int]
    before: np.ndarray  # int32 [y1 - y0, x1 - x0]
    after: np.ndarray
    message: str
    ids: list[int]
    points: np.ndarray  # float32 [k, 3] (x, y, label): the prompts of this edit, for the overlay


class LabelHistory:
    """``labels int32 [H, W]`` (0 background) with areas per id, fresh ids and the undo / redo stacks.

    ``min_area``: instance fragments smaller than this are dropped by :meth:`clean`.
    """

    def __init__(self, labels: np.ndarray, min_area: int):
        self.labels = np.array(labels, dtype=np.int32)
        self.min_area = max(int(min_area), 1)
        ids, counts = np.unique(self.labels, return_counts=True)
        self.areas = {int(i): int(c) for i, c in zip(ids, counts, strict=True) if i > 0}
        self.next_id = int(ids.max()) + 1 if ids.size else 1
        self.undo_stack: list[Change] = []
        self.redo_stack: list[Change] = []

    @property
    def n_nuclei(self) -> int:
        return len(self.areas)

    def fresh_id(self) -> int:
        """A new id, never used before in this history (ids of undone edits are not reused either)."""
        self.next_id += 1
        return self.next_id - 1

    def bbox(self, i: int) -> tuple[int, int, int, int]:
        """``(y0, x0, y1, x1)`` of instance ``i`` (must exist)."""
        m = self.labels == i
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1

    def bbox_union(self, ids, extra: tuple[int, int, int, int] | None = None) -> tuple[int, int, int, int]:
        boxes = [self.bbox(i) for i in ids] + ([extra] if extra is not None else [])
        b = np.array(boxes)
        return int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max())

    def clean(self, patch: np.ndarray, i: int) -> list[int]:
        """In place: instance ``i`` of ``patch`` keeps its largest 8-connected piece; pieces smaller than
        ``min_area`` become background, other pieces become new instances (their ids are returned)."""
        lab, n = ndi.label(patch == i, structure=_EIGHT)
        if n == 0:
            return []
        areas = np.bincount(lab.ravel())[1:]
        keep = int(np.argmax(areas)) + 1
        new = []
        for k in range(1, n + 1):
            if k == keep and areas[k - 1] >= self.min_area:
                continue
            piece = lab == k
            if areas[k - 1] < self.min_area:
                patch[piece] = 0
            else:
                new.append(self.fresh_id())
                patch[piece] = new[-1]
        return new

    def noop(self, message: str) -> Edit:
        return Edit(False, message, [], None, self.n_nuclei)

    def place(self, origin: tuple[int, int], mask: np.ndarray, new_id: int, clear_id: int | None, message: str,
              points) -> Edit:
        """``mask bool [h, w]`` with its top-left pixel at ``origin`` ``(y, x)`` becomes instance ``new_id`` (after
        instance ``clear_id`` is cleared); the instances it overlapped lose those pixels and their small fragments."""
        if mask.sum() < self.min_area:
            return self.noop(f"{message}: the nucleus found is smaller than {self.min_area} px, not added")
        oy, ox = origin
        ys, xs = np.nonzero(mask)
        box = (oy + int(ys.min()), ox + int(xs.min()), oy + int(ys.max()) + 1, ox + int(xs.max()) + 1)
        sub = self.labels[box[0] : box[2], box[1] : box[3]]
        inner = mask[box[0] - oy : box[2] - oy, box[1] - ox : box[3] - ox]
        touched = {int(i) for i in np.unique(sub[inner])} - {0, new_id}
        if clear_id is not None:
            touched.add(clear_id)
        y0, x0, y1, x1 = self.bbox_union(sorted(touched), extra=box)
        patch = self.labels[y0:y1, x0:x1].copy()
        if clear_id is not None:
            patch[patch == clear_id] = 0
        placed = np.zeros(patch.shape, bool)
        ty0, tx0 = oy - y0, ox - x0  # mask origin in patch coordinates (may be negative)
        r0, c0 = max(ty0, 0), max(tx0, 0)
        r1, c1 = min(ty0 + mask.shape[0], y1 - y0), min(tx0 + mask.shape[1], x1 - x0)
        placed[r0:r1, c0:c1] = mask[r0 - ty0 : r1 - ty0, c0 - tx0 : c1 - tx0]
        patch[placed] = new_id
        extra = [j for t in sorted(touched - {new_id}) for j in self.clean(patch, t)]
        return self.commit((y0, x0, y1, x1), patch, message, [new_id, *extra], points)

    def erase(self, ids: list[int], message: str, points) -> Edit:
        """Instances ``ids`` become background."""
        y0, x0, y1, x1 = self.bbox_union(ids)
        patch = self.labels[y0:y1, x0:x1].copy()
        patch[np.isin(patch, ids)] = 0
        return self.commit((y0, x0, y1, x1), patch, message, list(ids), points)

    def commit(self, bbox, patch: np.ndarray, message: str, ids: list[int], points: np.ndarray) -> Edit:
        """Replace the labels of ``bbox`` by ``patch``; a no-op Edit if nothing changes."""
        y0, x0, y1, x1 = bbox
        before = self.labels[y0:y1, x0:x1].copy()
        if np.array_equal(before, patch):
            return self.noop(f"{message}: no change")
        change = Change((y0, x0, y1, x1), before, patch.astype(np.int32, copy=True), message, list(ids),
                        np.asarray(points, np.float32).reshape(-1, 3))
        self.apply(change.bbox, change.after)
        self.undo_stack.append(change)
        del self.undo_stack[:-MAX_HISTORY]
        self.redo_stack.clear()
        return Edit(True, message, list(ids), change.bbox, self.n_nuclei)

    def apply(self, bbox, patch: np.ndarray) -> None:
        """Write ``patch`` into ``bbox`` and update the areas from the difference."""
        y0, x0, y1, x1 = bbox
        old = self.labels[y0:y1, x0:x1]
        touched = set()
        for arr, sign in ((old, -1), (patch, 1)):
            ids, counts = np.unique(arr, return_counts=True)
            for i, c in zip(ids.tolist(), counts.tolist(), strict=True):
                if i:
                    self.areas[i] = self.areas.get(i, 0) + sign * c
                    touched.add(i)
        for i in touched:
            if self.areas[i] <= 0:
                del self.areas[i]
        self.labels[y0:y1, x0:x1] = patch

    def undo(self) -> Edit:
        if not self.undo_stack:
            return self.noop("nothing to undo")
        c = self.undo_stack.pop()
        self.apply(c.bbox, c.before)
        self.redo_stack.append(c)
        return Edit(True, f"undone: {c.message}", list(c.ids), c.bbox, self.n_nuclei)

    def redo(self) -> Edit:
        if not self.redo_stack:
            return self.noop("nothing to redo")
        c = self.redo_stack.pop()
        self.apply(c.bbox, c.after)
        self.undo_stack.append(c)
        return Edit(True, f"redone: {c.message}", list(c.ids), c.bbox, self.n_nuclei)

    def points(self) -> list[np.ndarray]:
        """The prompts of the applied edits, oldest first."""
        return [c.points for c in self.undo_stack]
