"""Interactive correction of a segmentation: :class:`Editor` (clicks, boxes, delete / merge / split, undo / redo).

``Editor(model, image)`` runs the automatic segmentation once (the same :class:`Segmenter` and settings as
`sac segment`), embeds its windows (:mod:`sac.inference.windows`) and keeps them. Every prompt then costs one pass
of the single-nucleus decoder (``engine.decode_object``), not of the image encoder:

* ``add(x, y)``: positive click, the nucleus under it becomes one new instance; instances it overlapped lose those
  pixels (fragments smaller than ``cfg.min_area`` are dropped). The UNet's logits of the window are the mask prompt.
* ``remove(x, y)``: negative click, the instance under it is removed (on background: a no-op that says so).
* ``refine(id, points)``: SAM-style iterative correction (mask prompt + all clicks); the result replaces the instance.
  Every decoded mask obeys its clicks (:func:`~sac.inference.windows.honour_clicks`). With a click refiner in the
  model (``SAC.refiner``), the head's mask of a click or a correction goes through it first (not a box's first); a
  correction then thresholds the mean of those logits and the UNet's.
* ``box(x0, y0, x1, y1)``: the nucleus in a box (box + a positive click at its centre, as the decoder was trained;
  later refines keep the box); ``delete(id)``, ``merge(ids)``, ``split(id, points)``.
* ``undo()`` / ``redo()`` restore the label image exactly (each edit stores the before/after labels of its bbox).

Coordinates are image pixels, x = column, y = row. Ids stay stable while editing (new instances get fresh ids,
never reused); :meth:`Editor.result` renumbers them 1..N for the output writers. Bad input (outside the image,
NaN, non-numeric, empty point list, unknown id, zero-area box) raises :class:`SACError` and changes nothing. Expert
points (``--expert-points``, ``model.segment(points=...)``) go through it (``experts.apply_points``).
"""

from __future__ import annotations

import dataclasses
import numbers
import os
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np
import torch
from scipy import ndimage as ndi

from sac.errors import SACError
from sac.inference.history import Edit, LabelHistory
from sac.inference.reader import ArraySource, open_image
from sac.inference.segmenter import SegmentationResult, Segmenter
from sac.inference.windows import WindowCache, box_mask, honour_clicks, pick_component, refine_logits

__all__ = ["Edit", "Editor"]

NEAR = 6  # model pixels: a decoded nucleus this close to a click that missed it still counts as clicked
MASK_EPS = 1e-3  # a binary mask as SAM mask prompt: logit(1 - eps) = +6.9 inside, -6.9 outside (as micro-sam does)
_NO_POINTS = np.zeros((0, 3), np.float32)
MEMO = 64  # instances whose last prompts and mask logits are kept for refine (128 KiB each for LiteMedSAM)


def _number(v, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(float(v)):
        raise SACError(f"{what}: {v!r} is not a finite number")
    return float(v)


class Editor:
    """Edit the instances of one image with a SAC model (``SACModel`` from :func:`sac.load_model`, or a ``SAC``).

    ``image``: a path or an array ``[H, W(, C)]``; ``cfg``: :class:`InferenceConfig` of the automatic run;
    ``on_tile(n)``: progress callback of the automatic run; ``embed``: embed every window now, so no click waits
    for the image encoder (False: on a window's first click, as for a few ``--expert-points``). ``labels``: the
    current ``int32 [H, W]`` label image (read-only view; 0 = background). Calls are serialised by a lock.
    """

    def __init__(self, model, image, cfg=None, *, on_tile=None, embed: bool = True):
        module, device = getattr(model, "runnable", model), getattr(model, "device", "cpu")
        if embed and hasattr(module, "build"):  # clicks run the torch interactive head: build it now, not at a click
            module.build()
        self._start(Segmenter(module, cfg, device=device), image, on_tile, embed)

    @classmethod
    def from_segmenter(cls, segmenter: Segmenter, image, *, on_tile=None, embed: bool = True) -> Editor:
        """An editor reusing an existing :class:`Segmenter` (its engine and settings), e.g. one per CLI run."""
        (editor := cls.__new__(cls))._start(segmenter, image, on_tile, embed)
        return editor

    def _start(self, segmenter: Segmenter, image, on_tile, embed: bool) -> None:
        opened = isinstance(image, str | os.PathLike)
        source = open_image(image) if opened else image if hasattr(image, "read") else ArraySource(image)
        try:
            scale = segmenter.scale_for(source)
            auto = segmenter.segment(source, on_tile=on_tile, keep_embeddings=True, embed_all=embed)
        finally:
            if opened:
                source.close()
        self.segmenter, self.engine = segmenter, segmenter.engine
        self.image, (self.H, self.W) = auto.image, auto.image.shape[:2]
        self.windows = WindowCache(segmenter, ArraySource(self.image), scale, auto.embeddings or {})
        auto.embeddings = None  # the window cache holds them (float16)
        self._auto = auto
        self._h = LabelHistory(auto.labels, segmenter.cfg.min_area)
        self._labels = self._h.labels  # the same array, edited in place by the history
        self.min_area, self._edit_seconds = self._h.min_area, 0.0
        self._memo: OrderedDict[int, tuple] = OrderedDict()  # id -> (tile, clicks, logits, area, box, clip box)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ state
    @property
    def labels(self) -> np.ndarray:
        view = self._labels.view()
        view.flags.writeable = False
        return view

    @property
    def n_nuclei(self) -> int:
        return self._h.n_nuclei

    def instance_at(self, x, y) -> int:
        """Id of the instance under pixel ``(x, y)`` (0 = background); SACError outside the image."""
        x, y = self._xy(x, y, "instance_at")
        return int(self._labels[round(y), round(x)])

    def result(self, clicks=None) -> SegmentationResult:
        """The current state as a :class:`SegmentationResult` (ids renumbered 1..N; ``prob`` / ``prompt_prob`` /
        ``distance`` are the automatic run's maps; ``prompts`` = automatic prompts + ``clicks`` ``float [k, 3]``,
        by default the clicks of the applied edits)."""
        from skimage.segmentation import relabel_sequential

        with self._lock:
            labels = relabel_sequential(self._labels)[0].astype(np.int32, copy=False)
            clicks = self._h.points() if clicks is None else [np.asarray(clicks, np.float32).reshape(-1, 3)]
            prompts = np.concatenate([self._auto.prompts.reshape(-1, 3), *clicks]).astype(np.float32)
            return dataclasses.replace(
                self._auto, labels=labels, mask=labels > 0, prompts=prompts,
                seconds=self._auto.seconds + self._edit_seconds,
                settings={**self._auto.settings, "edits": len(self._h.undo_stack)},
            )

    # ------------------------------------------------------------------ clicks
    def add(self, x, y) -> Edit:
        """Positive click: the nucleus under ``(x, y)`` becomes one new instance (see module docstring)."""
        with self._lock, self._timed():
            x, y = self._xy(x, y, "add")
            point = np.array([[x, y, 1]], np.float32)
            tile, emb = self.windows.window_for(x, y)
            unet = self._unet_input(tile)
            lg = self._decode(tile, emb, point, mask_input=unet)
            mask = pick_component(self._obeyed(tile, self._sharpened(tile, lg, point, unet), point),
                                  [(x - tile.x0, y - tile.y0)], NEAR / self.windows.f)
            if mask is None:
                return self._h.noop(f"add ({x:g}, {y:g}): the model found no nucleus there")
            new = self._h.fresh_id()
            edit = self._h.place((tile.y0, tile.x0), mask, new, None, f"added nucleus {new} at ({x:g}, {y:g})", point)
            ys, xs = np.nonzero(mask)  # its corrections stay in this first mask's box (box_mask)
            first = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32) + [tile.x0, tile.y0] * 2
            return self._remember(edit, new, tile, point, lg, clip=first)

    def remove(self, x, y) -> Edit:
        """Negative click: the instance under ``(x, y)`` is removed; on background nothing changes."""
        with self._lock, self._timed():
            x, y = self._xy(x, y, "remove")
            i = int(self._labels[round(y), round(x)])
            if i == 0:
                return self._h.noop(f"remove ({x:g}, {y:g}): background, no nucleus to remove")
            return self._h.erase([i], f"removed nucleus {i} at ({x:g}, {y:g})", np.array([[x, y, 0]], np.float32))

    def refine(self, instance, points) -> Edit:
        """More points ``[[x, y, label], ...]`` (label 1 nucleus / 0 not) on one instance, SAM-style: for an
        instance this editor decoded and nothing changed since, its earlier clicks + these, its last mask logits as
        the mask prompt, in the same window; otherwise a positive anchor at its innermost pixel + these, its mask as
        the mask prompt. The result replaces the instance (same id)."""
        with self._lock, self._timed():
            i = self._id(instance, "refine")
            pts = self._points(points, "refine", labelled=True)
            memo = self._memo.get(i)
            if memo is not None and memo[3] == self._h.areas[i] and all(
                    self.windows.clearance(memo[0], x, y, x, y) >= 0 for x, y, _ in pts):
                tile, emb, allp = memo[0], self.windows.embedding(memo[0]), np.concatenate([memo[1], pts])
                return self._refined(i, tile, emb, allp, memo[2].astype(np.float32), pts, memo[4], memo[5])
            y0, x0, y1, x1 = self._h.bbox(i)
            inside = self._labels[y0:y1, x0:x1] == i
            dist = ndi.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
            ay, ax = np.unravel_index(int(np.argmax(dist)), dist.shape)
            anchor = np.array([[ax + x0, ay + y0, 1]], np.float32)
            allp = np.concatenate([anchor, pts])
            lo = np.minimum(allp[:, :2].min(0), [x0, y0])
            hi = np.maximum(allp[:, :2].max(0), [x1 - 1, y1 - 1])
            tile, emb = self.windows.window_for(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))
            self._check_fits(tile, lo, hi, f"refine: nucleus {i} and its points")
            return self._refined(i, tile, emb, allp, self._mask_logits(tile, i), pts)

    def _refined(self, i: int, tile, emb, allp: np.ndarray, mask_input: np.ndarray, pts: np.ndarray,
                 box: np.ndarray | None = None, clip: np.ndarray | None = None) -> Edit:
        lg = self._decode(tile, emb, allp, box=box, mask_input=mask_input)
        unet = self._unet_input(tile)
        z = self._sharpened(tile, lg, allp, unet)
        # A correction thresholds the mean with the UNet's logits, with or without the click refiner: it kept box
        # corrections from making the mask worse and raised click ones (docs/results.md, "Corrections: the mean ...").
        z = z if unet is None else (z + unet) / 2
        seeds = [(px - tile.x0, py - tile.y0) for px, py, lab in allp if lab == 1]
        mask = self._obeyed(tile, z, allp)
        if clip is not None:
            mask &= self._inside(tile, clip, allp)
        mask = pick_component(mask, seeds, NEAR / self.windows.f)
        if mask is None:
            return self._h.noop(f"refine {i}: the model found no nucleus; use delete to remove it")
        edit = self._h.place((tile.y0, tile.x0), mask, i, i, f"refined nucleus {i} with {len(pts)} point(s)", pts)
        return self._remember(edit, i, tile, allp, lg, box, clip)

    def _remember(self, edit: Edit, i: int, tile, clicks: np.ndarray, logits: np.ndarray, box=None, clip=None
                  ) -> Edit:
        """Keep instance ``i``'s prompts (clicks, box corners or None), mask logits ``[S, S]`` (float16) and the box
        ``(x0, y0, x1, y1)`` its corrections stay in (or None) for the next refine of it."""
        if edit.changed and i in self._h.areas:
            self._memo[i] = (tile, clicks, logits.astype(np.float16), self._h.areas[i], box, clip)
            self._memo.move_to_end(i)
            while len(self._memo) > MEMO:
                self._memo.popitem(last=False)
        return edit

    def box(self, x0, y0, x1, y1) -> Edit:
        """The nucleus inside the box ``(x0, y0)``-``(x1, y1)`` (image pixels, any corner order) as a new instance:
        the box and a positive click at its centre prompt (the decoder never saw a box without a click inside in
        training; benchmarks/clicks_single.py, rows ``head-box*``), and the mask is kept inside the box."""
        with self._lock, self._timed():
            ax, ay = self._xy(x0, y0, "box")
            bx, by = self._xy(x1, y1, "box")
            (ax, bx), (ay, by) = sorted((ax, bx)), sorted((ay, by))
            if bx - ax < 1 or by - ay < 1:
                raise SACError(f"box: ({ax:g}, {ay:g})-({bx:g}, {by:g}) has zero area")
            tile, emb = self.windows.window_for(ax, ay, bx, by)
            self._check_fits(tile, (ax, ay), (bx, by), "box")
            corners = np.array([[ax, ay], [bx, by]], np.float32)
            centre = np.array([[(ax + bx) / 2, (ay + by) / 2, 1]], np.float32)
            lg = self._decode(tile, emb, centre, box=corners, mask_input=self._unet_input(tile))
            mask = pick_component(self._obeyed(tile, lg, centre) & self._inside(tile, corners.ravel(), centre),
                                  [tuple(centre[0, :2] - [tile.x0, tile.y0])], NEAR / self.windows.f)
            if mask is None:
                return self._h.noop(f"box ({ax:g}, {ay:g})-({bx:g}, {by:g}): the model found no nucleus in it")
            new = self._h.fresh_id()
            pts = np.array([[ax, ay, 1], [bx, by, 1]], np.float32)
            edit = self._h.place((tile.y0, tile.x0), mask, new, None, f"added nucleus {new} from a box", pts)
            return self._remember(edit, new, tile, centre, lg, corners, corners.ravel())

    # ------------------------------------------------------------------ instance operations
    def delete(self, instance) -> Edit:
        with self._lock, self._timed():
            i = self._id(instance, "delete")
            return self._h.erase([i], f"deleted nucleus {i}", _NO_POINTS)

    def merge(self, ids) -> Edit:
        """All pixels of ``ids`` (>= 1 known instance) become the smallest of them."""
        with self._lock, self._timed():
            if isinstance(ids, str) or not hasattr(ids, "__iter__"):
                raise SACError(f"merge: expected a list of instance ids, got {ids!r}")
            ids = sorted({self._id(i, "merge") for i in ids})
            if not ids:
                raise SACError("merge: the list of instance ids is empty")
            if len(ids) == 1:
                return self._h.noop(f"merge: only nucleus {ids[0]} given, nothing to merge")
            y0, x0, y1, x1 = self._h.bbox_union(ids)
            patch = self._labels[y0:y1, x0:x1].copy()
            patch[np.isin(patch, ids[1:])] = ids[0]
            msg = f"merged nuclei {', '.join(map(str, ids))} into {ids[0]}"
            return self._h.commit((y0, x0, y1, x1), patch, msg, [ids[0]], _NO_POINTS)

    def split(self, instance, points) -> Edit:
        """Split an instance with one point ``[x, y]`` (or ``[x, y, 1]``) per part, each inside it: a watershed of
        its pixels seeded by the points (each pixel goes to the nearest point); each part gets a new id."""
        with self._lock, self._timed():
            i = self._id(instance, "split")
            pts = self._points(points, "split", labelled=False)
            if len(pts) < 2:
                raise SACError("split: give at least 2 points, one inside each part")
            y0, x0, y1, x1 = self._h.bbox(i)
            patch = self._labels[y0:y1, x0:x1].copy()
            inside = patch == i
            markers = np.zeros(patch.shape, np.int32)
            for k, (x, y, _) in enumerate(pts, start=1):
                r, c = round(y) - y0, round(x) - x0
                if not (0 <= r < patch.shape[0] and 0 <= c < patch.shape[1] and inside[r, c]):
                    raise SACError(f"split: point ({x:g}, {y:g}) is not inside nucleus {i}")
                markers[r, c] = k
            from skimage.segmentation import watershed

            # Flooded from the points over their distance: each pixel joins the point it is (geodesically) nearest.
            # Not the instance's distance transform (a point off its deepest core would get a sliver) nor the
            # distance head's map (where a split is asked for, it had no valley between the nuclei).
            parts = watershed(ndi.distance_transform_edt(markers == 0), markers, mask=inside)
            new_ids = []
            patch[inside] = 0
            for k in range(1, len(pts) + 1):
                part = parts == k
                if part.sum() >= self.min_area:
                    new_ids.append(self._h.fresh_id())
                    patch[part] = new_ids[-1]
            if len(new_ids) < 2:
                return self._h.noop(f"split {i}: the points do not give two parts of >= {self.min_area} px")
            msg = f"split nucleus {i} into {', '.join(map(str, new_ids))}"
            return self._h.commit((y0, x0, y1, x1), patch, msg, new_ids, pts)

    def undo(self) -> Edit:
        """Undo the last edit (labels restored exactly); a no-op Edit when there is none."""
        with self._lock:
            return self._h.undo()

    def redo(self) -> Edit:
        """Redo the last undone edit; a no-op Edit when there is none (a new edit clears the redo stack)."""
        with self._lock:
            return self._h.redo()

    # ------------------------------------------------------------------ checks
    def _xy(self, x, y, what: str) -> tuple[float, float]:
        x, y = _number(x, what), _number(y, what)
        if not (0 <= x <= self.W - 1 and 0 <= y <= self.H - 1):
            raise SACError(f"{what}: ({x:g}, {y:g}) is outside the {self.W}x{self.H} image "
                           f"(0 <= x <= {self.W - 1}, 0 <= y <= {self.H - 1})")
        return x, y

    def _id(self, value, what: str) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise SACError(f"{what}: instance id {value!r} is not an integer")
        if int(value) not in self._h.areas:
            raise SACError(f"{what}: no instance with id {value}")
        return int(value)

    def _points(self, points, what: str, labelled: bool) -> np.ndarray:
        """``[[x, y, label], ...]`` (``labelled``) or ``[[x, y], ...]`` -> ``float32 [N, 3]``, checked."""
        if isinstance(points, str) or not hasattr(points, "__len__"):
            raise SACError(f"{what}: expected a list of points [[x, y{', label' if labelled else ''}], ...]")
        if len(points) == 0:
            raise SACError(f"{what}: the point list is empty")
        out = []
        for p in points:
            if isinstance(p, str) or not hasattr(p, "__len__") or len(p) not in ((3,) if labelled else (2, 3)):
                form = "[x, y, label]" if labelled else "[x, y]"
                raise SACError(f"{what}: point {p!r} is not {form}")
            x, y = self._xy(p[0], p[1], what)
            label = _number(p[2], what) if len(p) == 3 else 1.0
            if label not in ((0.0, 1.0) if labelled else (1.0,)):
                raise SACError(f"{what}: point {list(p)!r} has label {label:g}; use 1 (nucleus)"
                               + (" or 0 (not nucleus)" if labelled else ""))
            out.append((x, y, label))
        return np.asarray(out, np.float32)

    def _check_fits(self, tile, lo, hi, what: str) -> None:
        if lo[0] < tile.x0 or lo[1] < tile.y0 or hi[0] > tile.x1 - 1 or hi[1] > tile.y1 - 1:
            raise SACError(f"{what}: spans more than one model window ({tile.size} px)")

    @contextmanager
    def _timed(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._edit_seconds += time.perf_counter() - t0

    # ------------------------------------------------------------------ model
    def _unet_input(self, tile) -> np.ndarray | None:
        """The UNet's logits of ``tile`` ``float32 [S, S]`` (the first-click mask prompt; None without a UNet)."""
        prob = self._auto.prompt_prob
        if prob is None:
            return None
        p = np.clip(self.windows.model_map(tile, prob).astype(np.float64), 1e-9, 1 - 1e-9)
        return np.clip(np.log(p) - np.log1p(-p), -20, 20).astype(np.float32)

    def _obeyed(self, tile, logits: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Decoded ``logits [S, S]`` -> window mask ``bool [h, w]`` obeying ``points [N, 3]`` (image pixels)."""
        p = self._auto.prompt_prob
        return honour_clicks(self.windows.from_model(tile, logits) > 0, points - [tile.x0, tile.y0, 0],
                             None if p is None else p[tile.y0 : tile.y1, tile.x0 : tile.x1])

    def _inside(self, tile, box: np.ndarray, points: np.ndarray) -> np.ndarray:
        """:func:`box_mask` on ``tile``'s pixels of ``box [4]`` ``(x0, y0, x1, y1)`` and ``points [N, 3]`` (image
        pixels)."""
        return box_mask((tile.y1 - tile.y0, tile.x1 - tile.x0), box - [tile.x0, tile.y0] * 2,
                        points - [tile.x0, tile.y0, 0])

    def _mask_logits(self, tile, i: int) -> np.ndarray:
        """Instance ``i``'s current mask on ``tile``'s model grid as logits ``float32 [S, S]`` (+-6.9)."""
        p = np.clip(self.windows.model_map(tile, (self._labels == i).astype(np.float32)), MASK_EPS, 1 - MASK_EPS)
        return (np.log(p) - np.log1p(-p)).astype(np.float32)

    def _sharpened(self, tile, logits: np.ndarray, points: np.ndarray, unet: np.ndarray | None) -> np.ndarray:
        """The head's ``logits [S, S]`` after the click refiner (:func:`~sac.inference.windows.refine_logits`);
        ``unet``: :meth:`_unet_input` of ``tile``."""
        if not self.engine.has_refiner:
            return logits
        return refine_logits(self.windows, self.engine, tile, logits, unet, points)

    @torch.inference_mode()
    def _decode(self, tile, emb, points: np.ndarray, box: np.ndarray | None = None,
                mask_input: np.ndarray | None = None) -> np.ndarray:
        """One ``decode_object`` pass -> mask logits on the model grid ``float32 [S, S]``.
        ``points float [N, 3]`` and ``box float [2, 2]`` (corners) in image pixels."""
        device = self.segmenter.device
        coords = labels = None  # no points: the box alone prompts
        if len(points):
            coords = torch.from_numpy(self.windows.to_model(tile, points[:, :2]))[None].to(device)
            labels = torch.from_numpy(points[:, 2].astype(np.int64))[None].to(device)
        boxes = None if box is None else torch.from_numpy(self.windows.to_model(tile, box).reshape(1, 4)).to(device)
        masks = None if mask_input is None else torch.from_numpy(mask_input)[None, None].to(device)
        logits, _ = self.engine.decode_object(emb[None].to(device, torch.float32), coords, labels, boxes=boxes,
                                              mask_input=masks)
        return logits[0, 0].float().cpu().numpy()
