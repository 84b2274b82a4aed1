"""A simulated annotator correcting a whole segmentation with clicks (issue 11, "correcting the automatic result").

Each step looks at the current instances and the ground truth and fixes the worst error with the editor
(:class:`sac.inference.editor.Editor`, duck-typed here: ``add``, ``remove``, ``split``, ``labels``):

* **merge** -- a predicted instance that holds at least half of each of two or more ground-truth nuclei: a split
  with one click per nucleus (at the most interior pixel of its part of the instance); weight = the pixels of
  those nuclei except the largest (what the merge costs);
* **missed** -- a ground-truth nucleus no prediction matches (best IoU < 0.5) and no merge holds: a positive click
  at its most interior pixel (maximum of the distance transform); weight = its area;
* **false** -- a predicted instance of which less than half lies on any ground-truth nucleus: a negative click
  at its most interior pixel; weight = its pixels outside every nucleus;
* **pieces** -- a ground-truth nucleus cut into two or more predicted instances that each lie at least half on it
  (and hold no other nucleus): a merge of those instances, one click per instance; weight = the pixels of the pieces
  except the largest.

The error of largest weight is fixed first. An error whose edit changed nothing (the model found no nucleus
there) is not tried again. A split and a merge cost one click per part, the others one click.

:class:`PerfectEditor` applies each correction exactly (the ground-truth nuclei themselves): what any editor can at
best reach with this annotator, the ceiling of the benchmark (docs/results.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from sac.evaluation.clicks import interior_point
from sac.evaluation.instance import overlaps


@dataclass
class Correction:
    """One simulated correction: ``kind`` add | remove | split, ``points int [k, 2]`` (x, y) image pixels,
    ``instance`` (predicted id, 0 for add), ``target`` (true id, 0 unless add), ``weight`` (pixels at stake),
    ``truth`` (the true ids a split separates; the predicted ids a merge joins), ``key`` (identifies the error
    across steps)."""

    kind: str
    points: np.ndarray
    instance: int
    target: int
    weight: int
    key: tuple = ()
    truth: np.ndarray = field(default_factory=lambda: np.zeros(0, int))

    @property
    def clicks(self) -> int:
        return len(self.points)


def next_correction(pred: np.ndarray, true: np.ndarray, skip=frozenset()) -> Correction | None:
    """The worst error of ``pred`` against ``true`` (both ``int [H, W]`` label maps, 0 background) as a
    :class:`Correction`, ignoring those whose ``key`` is in ``skip``; None when nothing is left to fix."""
    ov = overlaps(true, pred)
    tids = np.unique(true)
    tids = tids[tids > 0]
    pids = np.unique(pred)
    pids = pids[pids > 0]
    nt, npd = len(tids), len(pids)
    best_t = np.zeros(nt)
    np.maximum.at(best_t, ov.ti, ov.iou)
    held = ov.inter >= 0.5 * ov.true_area[ov.ti]  # pair (t, p): p holds at least half of t
    holders = np.bincount(ov.pj[held], minlength=npd)
    on_truth = np.bincount(ov.pj, weights=ov.inter, minlength=npd)
    candidates: list[Correction] = []
    for j in np.flatnonzero(holders >= 2):
        ts = ov.ti[held & (ov.pj == j)]
        areas = ov.true_area[ts]
        candidates.append(Correction("split", np.zeros((0, 2), int), int(pids[j]), 0,
                                     int(areas.sum() - areas.max()), ("split", *sorted(tids[ts].tolist())), tids[ts]))
    merged_t = set(ov.ti[held & (holders[ov.pj] >= 2)].tolist())
    # pieces: predictions lying at least half on one nucleus (and holding no second one), two or more per nucleus
    piece = (ov.inter >= 0.5 * ov.pred_area[ov.pj]) & (holders[ov.pj] < 2)
    for t in np.flatnonzero(np.bincount(ov.ti[piece], minlength=nt) >= 2):
        js = ov.pj[piece & (ov.ti == t)]
        areas = ov.pred_area[js]
        candidates.append(Correction("merge", np.zeros((0, 2), int), 0, int(tids[t]), int(areas.sum() - areas.max()),
                                     ("merge", int(tids[t])), pids[js]))
    for t in np.flatnonzero(best_t < 0.5):
        if int(t) not in merged_t:
            candidates.append(Correction("add", np.zeros((0, 2), int), 0, int(tids[t]), int(ov.true_area[t]),
                                         ("add", int(tids[t]))))
    for j in np.flatnonzero(on_truth < 0.5 * ov.pred_area):
        candidates.append(Correction("remove", np.zeros((0, 2), int), int(pids[j]), 0,
                                     int(ov.pred_area[j] - on_truth[j]), ("remove", int(pids[j]))))
    candidates = [c for c in candidates if c.key not in skip and c.weight > 0]
    if not candidates:
        return None
    c = max(candidates, key=lambda c: (c.weight, c.kind))
    if c.kind == "add":
        c.points = np.array([interior_point(true == c.target)])
    elif c.kind == "remove":
        c.points = np.array([interior_point(pred == c.instance)])
    elif c.kind == "merge":
        c.points = np.array([interior_point(pred == j) for j in c.truth])
    else:
        inst = pred == c.instance
        c.points = np.array([interior_point(inst & (true == t)) for t in c.truth])
    return c


def annotate(editor, true: np.ndarray, max_clicks: int,
             on_click: Callable[[int, Correction | None], None] | None = None) -> int:
    """Correct ``editor`` towards ``true`` until ``max_clicks`` clicks are spent or nothing is left to fix.

    ``on_click(clicks_so_far, correction)`` is called after every correction (and once with ``(0, None)`` before
    the first). Returns the clicks spent.
    """
    tried: set[tuple] = set()
    clicks = 0
    if on_click is not None:
        on_click(0, None)
    while clicks < max_clicks:
        c = next_correction(editor.labels, true, tried)
        if c is None:
            break
        tried.add(c.key)
        if c.kind == "add":
            editor.add(*c.points[0].tolist())
        elif c.kind == "remove":
            editor.remove(*c.points[0].tolist())
        elif c.kind == "merge":
            editor.merge(c.truth.tolist())
        else:
            editor.split(c.instance, c.points.tolist())
        clicks += c.clicks
        if on_click is not None:
            on_click(clicks, c)
    return clicks


class PerfectEditor:
    """The annotator's corrections applied exactly: ``add`` pastes the ground-truth nucleus under the click (over
    whatever it covered), ``remove`` erases the instance under it, ``split`` replaces the instance by the nuclei
    under its clicks, ``merge`` replaces the instances by the nucleus they lie on. ``labels int [H, W]``, starting
    from ``pred`` (copied); ``true int [H, W]`` is the ground truth. Same interface as the editor where
    :func:`annotate` uses it."""

    def __init__(self, pred: np.ndarray, true: np.ndarray):
        self.labels = np.array(pred, dtype=np.int64)
        self.true = np.asarray(true)
        self._next = int(self.labels.max()) + 1

    def _paste(self, t: int) -> None:
        self.labels[self.true == t] = self._next
        self._next += 1

    def _truth_at(self, x, y) -> int:
        return int(self.true[round(y), round(x)])

    def add(self, x, y) -> None:
        if t := self._truth_at(x, y):
            self._paste(t)

    def remove(self, x, y) -> None:
        if i := int(self.labels[round(y), round(x)]):
            self.labels[self.labels == i] = 0

    def split(self, instance: int, points) -> None:
        ts = [self._truth_at(x, y) for x, y in points]
        self.labels[self.labels == instance] = 0
        for t in ts:
            if t:
                self._paste(t)

    def merge(self, ids) -> None:
        inside = np.isin(self.labels, ids)
        ts, counts = np.unique(self.true[inside], return_counts=True)
        self.labels[inside] = 0
        if (ts > 0).any():
            self._paste(int(ts[ts > 0][np.argmax(counts[ts > 0])]))
