"""One block of a slide: a pure function (job, block index) -> the nuclei that block owns, in a result file.

The analysis image (a slide's ROI at its analysis level, or a flat image) is cut into ``block x block`` cores
(:func:`sac.postprocess.blockwise.block_grid`). A block segments its *window* (core + ``halo`` px) and keeps the
nuclei it owns:

* **Same maps as one pass.** The model runs on the tiles of the *whole image's* tile grid
  (``Segmenter.tiles_for(H, W)``) that intersect the window, and they are blended with the same weights in the same
  order as :class:`sac.inference.tiling.Stitcher` does, so the probability and distance maps inside the window are
  bit-identical to those of ``sac segment`` on the whole image (with the default ``batch`` 1 and ``centroid``
  prompts; ``select random`` draws per window instead).
* **Ownership (exactly once).** Nuclei are taken per 8-connected mask *component*, as in
  :mod:`sac.postprocess.blockwise`: a component belongs to the block whose core holds its *first pixel* (the
  topmost row, leftmost pixel in it): one block, and always a block that sees the component. If the component's
  box plus ``MARGIN`` lies inside the window (or reaches the image border), the window's watershed of it equals
  the single pass's (blockwise's argument) and its nuclei are kept whole.
* **Components leaving the window** (longer than the halo allows) are followed: the block segments a crop of the
  component's box plus the halo, and again larger, until the component fits; it keeps it if its true first pixel
  is the one it saw. A component whose crop would exceed ``max_crop`` pixels is a failed prediction, not a
  nucleus (e.g. a whole region above threshold): it is dropped and counted (``giant`` in the result).

The function is pure: the result depends on (job, index) only, never on which worker ran it or when, so a retried,
resumed or re-ordered task writes the same file. The file is written atomically (:mod:`sac.atomic`); a worker
keeps the model and the open image in a per-process cache (:func:`_cached`), so each worker loads them once.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from sac.inference.measure import COLUMNS
from sac.postprocess.blockwise import EIGHT, MARGIN, block_grid

_CACHE: dict = {}  # per worker process: {key: Segmenter | source | tiles}


@dataclass(frozen=True)
class Job:
    """Everything a worker needs for any block of one image; small and picklable (sent with every task).

    ``kind``: ``slide`` (:class:`~sac.inference.slide.SlideSource`) or ``flat`` (:func:`sac.inference.reader.
    open_image`); ``shape``: analysis pixels (H, W); ``origin`` / ``downsample``: analysis pixel ``(x, y)`` of the
    ROI's corner and level-0 pixels per analysis pixel (outputs are in level-0 pixels); ``cfg``: the
    :class:`~sac.inference.config.InferenceConfig` fields with the scale resolved; ``blocks_dir``: where result
    files go (shared by all workers).
    """

    path: str
    kind: str
    model: str
    sam_checkpoint: str | None
    device: str
    cfg: dict
    shape: tuple[int, int]
    block: int
    halo: int
    blocks_dir: str
    origin: tuple[int, int] = (0, 0)
    downsample: float = 1.0
    model_mpp: float | None = None
    mpp: float | None = None
    roi: tuple[int, int, int, int] | None = None
    threads: int = 1
    max_crop: int | None = None
    skip: tuple[int, ...] = field(default=())  # block indices without tissue: not computed

    def key(self) -> str:
        """A string identifying the job's results (cache key; recorded for --resume): every field but ``threads``,
        so a run may be resumed with another number of workers."""
        fields = dataclasses.asdict(self)
        del fields["threads"]
        return json.dumps(fields, sort_keys=True)

    def cores(self) -> list[tuple[int, int, int, int]]:
        return block_grid(self.shape[0], self.shape[1], self.block)

    def result_path(self, index: int) -> Path:
        return Path(self.blocks_dir) / f"block-{index:06d}.npz"


def _cached(key, make):
    if key not in _CACHE:
        _CACHE[key] = make()
    return _CACHE[key]


def open_source(job: Job):
    """The job's region source (slide or flat image); SACError if the file no longer has the job's size."""
    from sac.errors import SACError

    if job.kind == "slide":
        from sac.inference.slide import SlideSource

        src = SlideSource(job.path, model_mpp=job.model_mpp, mpp=job.mpp, roi=job.roi)
    else:
        from sac.inference.reader import open_image

        src = open_image(job.path)
    if tuple(src.shape) != tuple(job.shape):
        src.close()
        raise SACError(f"{job.path}: size changed since the job started ({src.shape} != {job.shape})")
    return src


def segmenter_for(job: Job):
    """This process's Segmenter for the job's model and settings (loaded once per worker)."""

    def make():
        import torch

        from sac.inference.api import load_model
        from sac.inference.config import InferenceConfig

        if job.threads > 0:  # 0: a remote worker keeps torch's default for its machine
            torch.set_num_threads(job.threads)
        model = load_model(job.model, device=job.device, sam_checkpoint=job.sam_checkpoint)
        return model.segmenter(InferenceConfig(**job.cfg))

    return _cached(segmenter_key(job), make)


def segmenter_key(job: Job) -> tuple:
    """Cache key of a job's Segmenter: the same model and settings share one per process."""
    return ("segmenter", job.model, job.sam_checkpoint, job.device, json.dumps(job.cfg, sort_keys=True))


class _Prefetched:
    """A source whose pixels in ``box`` (y0, y1, x0, x1; clipped to the image) were read once: the model's
    overlapping tiles then cost no repeated decoding."""

    def __init__(self, source, box):
        H, W = source.shape
        y0, y1, x0, x1 = max(0, box[0]), min(H, box[1]), max(0, box[2]), min(W, box[3])
        self.shape, self.name, self.box = source.shape, getattr(source, "name", "image"), (y0, y1, x0, x1)
        self.image = source.read(y0, y1, x0, x1)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        H, W = self.shape
        by0, _, bx0, _ = self.box
        y0, y1, x0, x1 = max(0, y0), min(H, y1), max(0, x0), min(W, x1)
        return self.image[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]


def window_maps(seg, source, tiles, win) -> tuple[np.ndarray, int, _Prefetched]:
    """Maps ``float32 [c, h, w]`` of window ``win`` (y0, y1, x0, x1) from the whole-image ``tiles`` that intersect
    it, blended exactly as :class:`sac.inference.tiling.Stitcher` (channel 0 SAC probability, then the UNet's
    maps); also the number of tiles run and the prefetched pixels."""
    from sac.inference.tiling import weight_window

    y0, y1, x0, x1 = win
    sel = [t for t in tiles if t.y0 < y1 and t.y1 > y0 and t.x0 < x1 and t.x1 > x0]
    src = _Prefetched(source, (min(t.y0 for t in sel), max(t.y1 for t in sel),
                               min(t.x0 for t in sel), max(t.x1 for t in sel)))
    size, overlap = seg.window()
    wnd = weight_window(size, overlap)
    n_maps = 1 + (1 + int(seg.has_distance) if seg.has_unet else 0)
    sums = np.zeros((n_maps, y1 - y0, x1 - x0), np.float32)
    weight = np.zeros((y1 - y0, x1 - x0), np.float32)
    rng = np.random.default_rng(seg.cfg.seed)
    no_experts = [(np.zeros((0, 2), np.float32), np.zeros(0, np.int64))]
    for t in sel:
        sac_prob, unet_maps = seg.run_batch(seg.window_input(src, t)[None], no_experts, rng)[:2]
        maps = sac_prob[0][None] if unet_maps is None else np.concatenate([sac_prob[0][None], unet_maps[0]])
        maps = seg.to_window(maps, size)
        ay0, ay1, ax0, ax1 = max(t.y0, y0), min(t.y1, y1), max(t.x0, x0), min(t.x1, x1)
        ts = (slice(ay0 - t.y0, ay1 - t.y0), slice(ax0 - t.x0, ax1 - t.x0))
        ws = (slice(ay0 - y0, ay1 - y0), slice(ax0 - x0, ax1 - x0))
        sums[(slice(None), *ws)] += maps[(slice(None), *ts)] * wnd[ts]
        weight[ws] += wnd[ts]
    np.divide(sums, np.maximum(weight, 1e-12), out=sums)
    return sums, len(sel), src


@dataclass
class _Window:
    win: tuple[int, int, int, int]
    comps: np.ndarray  # int32 [h, w] 8-connected mask components
    labels: np.ndarray  # int32 [h, w] nuclei (the segmenter's instances of the window)
    boxes: list  # find_objects(comps)
    source: _Prefetched


def _segment_window(seg, source, tiles, win) -> tuple[_Window, int]:
    maps, n_tiles, src = window_maps(seg, source, tiles, win)
    prob = maps[0]
    mask = prob > seg.cfg.threshold
    distance = maps[2] if seg.has_distance else None
    labels = seg.instances(mask, prob, distance)
    comps, _ = ndi.label(mask, structure=EIGHT, output=np.int32)
    return _Window(win, comps, labels, ndi.find_objects(comps), src), n_tiles


def _first_pixel(comps: np.ndarray, c: int, box) -> tuple[int, int]:
    """(row, col) within the window of component ``c``'s first pixel in raster order."""
    r0 = box[0].start
    return r0, box[1].start + int(np.argmax(comps[r0, box[1]] == c))


def _fits(box, win, shape) -> bool:
    """Component box (window-relative slices) plus MARGIN inside ``win`` (no margin needed on an image border)."""
    (rs, cs), (y0, y1, x0, x1) = box, win
    h, w = y1 - y0, x1 - x0
    return ((y0 == 0 or rs.start >= MARGIN) and (y1 == shape[0] or rs.stop + MARGIN <= h)
            and (x0 == 0 or cs.start >= MARGIN) and (x1 == shape[1] or cs.stop + MARGIN <= w))


def _expand(box, pad: int, shape) -> tuple[int, int, int, int]:
    y0, y1, x0, x1 = box
    return max(0, y0 - pad), min(shape[0], y1 + pad), max(0, x0 - pad), min(shape[1], x1 + pad)


def _piece(w: _Window, owned: list[int]):
    """The nuclei of components ``owned`` in window ``w`` -> (box y0, y1, x0, x1 of them, int32 labels 1..k)."""
    sel = np.isin(w.comps, owned) & (w.labels > 0)
    if not sel.any():
        return None
    ids, inverse = np.unique(w.labels[sel], return_inverse=True)
    local = np.zeros(w.labels.shape, np.int32)
    local[sel] = np.arange(1, len(ids) + 1, dtype=np.int32)[inverse.ravel()]
    rows, cols = np.flatnonzero(sel.any(axis=1)), np.flatnonzero(sel.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    y0, _, x0, _ = w.win
    return (y0 + r0, y0 + r1, x0 + c0, x0 + c1), local[r0:r1, c0:c1], w


def segment_block(job: Job, index: int) -> dict:
    """Segment block ``index`` of ``job`` and write its result file; returns a small summary
    ``{"index", "nuclei", "tiles", "giant", "cached", "cpu_seconds", "seconds"}`` (the block's own work, model
    loading excluded). A block whose file exists (e.g. a retried task) is not recomputed."""
    path = job.result_path(index)
    if path.is_file():
        with np.load(path) as f:
            return {"index": index, "nuclei": int(f["n"]), "tiles": 0, "giant": int(f["giant"]), "cached": True,
                    "cpu_seconds": 0.0, "seconds": 0.0}
    seg = segmenter_for(job)
    source = _cached(("source", job.key()), lambda: open_source(job))
    H, W = job.shape
    tiles = _cached(("tiles", job.key()), lambda: seg.tiles_for(H, W))
    cpu0, wall0 = time.process_time(), time.perf_counter()  # after the (once per process) model load
    max_crop = job.max_crop or 4 * (job.block + 2 * job.halo) ** 2
    cy0, cy1, cx0, cx1 = job.cores()[index]
    main, n_tiles = _segment_window(seg, source, tiles, _expand((cy0, cy1, cx0, cx1), job.halo, (H, W)))
    owned, pending = [], []
    for c, box in enumerate(main.boxes, start=1):
        if box is None:
            continue
        r, q = _first_pixel(main.comps, c, box)
        gy, gx = r + main.win[0], q + main.win[2]
        if not (cy0 <= gy < cy1 and cx0 <= gx < cx1):
            continue  # another block's component (it sees the first pixel in its core)
        if _fits(box, main.win, (H, W)):
            owned.append(c)
        else:
            pending.append((gy, gx, (box[0].start + main.win[0], box[0].stop + main.win[0],
                                     box[1].start + main.win[2], box[1].stop + main.win[2])))
    pieces = [p for p in [_piece(main, owned)] if p is not None]
    crops: list[_Window] = []
    taken: dict[int, list[int]] = {}  # crop number -> owned components in it
    giant = 0
    for gy, gx, gbox in pending:
        found = None
        while found is None:
            for k, w in enumerate(crops):
                y0, y1, x0, x1 = w.win
                if y0 <= gy < y1 and x0 <= gx < x1:
                    c = int(w.comps[gy - y0, gx - x0])
                    if _fits(w.boxes[c - 1], w.win, (H, W)):
                        found = (k, c)
                        break
            if found is not None:
                break
            crop = _expand(gbox, job.halo, (H, W))
            if (crop[1] - crop[0]) * (crop[3] - crop[2]) > max_crop:
                giant += 1
                break
            w, n = _segment_window(seg, source, tiles, crop)
            n_tiles += n
            crops.append(w)
            box = w.boxes[int(w.comps[gy - crop[0], gx - crop[2]]) - 1]
            gbox = (box[0].start + crop[0], box[0].stop + crop[0], box[1].start + crop[2], box[1].stop + crop[2])
        if found is not None:
            k, c = found
            w = crops[k]
            if _first_pixel(w.comps, c, w.boxes[c - 1]) == (gy - w.win[0], gx - w.win[2]):
                taken.setdefault(k, []).append(c)
    pieces += [p for k, cs in sorted(taken.items()) if (p := _piece(crops[k], cs)) is not None]
    result = _write_result(job, index, pieces, n_tiles, giant)
    # CPU time of this process (all torch threads; with one Dask thread per worker, only this block's work).
    return {**result, "cpu_seconds": time.process_time() - cpu0, "seconds": time.perf_counter() - wall0}


def _write_result(job: Job, index: int, pieces, n_tiles: int, giant: int) -> dict:
    """Tables, GeoJSON features (level-0 coordinates, block-local ids 1..n) and labels of ``pieces`` -> one
    atomically written ``.npz``."""
    from sac.atomic import atomic_path
    from sac.inference.measure import nuclei_table
    from sac.inference.writers import geojson_dict

    arrays: dict[str, np.ndarray] = {}
    tables, features = [], []
    offset = 0
    ds, (ox, oy) = job.downsample, job.origin
    for k, (box, labels, w) in enumerate(pieces):
        y0, y1, x0, x1 = box
        image = w.source.read(y0, y1, x0, x1)
        t = nuclei_table(labels, image)
        feats = geojson_dict(labels, t)["features"]
        labels = np.where(labels > 0, labels + offset, 0).astype(np.int32)
        t["id"] += offset
        for col, shift in (("centroid_x", x0 + ox + 0.5), ("centroid_y", y0 + oy + 0.5)):
            t[col] = (t[col] + shift) * ds - 0.5  # pixel centres: level-L centre c -> level-0 (c + 0.5) ds - 0.5
        for col, shift in (("bbox_x0", x0 + ox), ("bbox_x1", x0 + ox), ("bbox_y0", y0 + oy), ("bbox_y1", y0 + oy)):
            t[col] = (t[col] + shift) * ds
        t["area"] = t["area"] * ds * ds
        t["perimeter"] = t["perimeter"] * ds
        rows = t.set_index("id")[["area", "centroid_x", "centroid_y"]].to_dict("index")
        for f in feats:
            f["geometry"]["coordinates"] = _shift(f["geometry"]["coordinates"], x0 + ox, y0 + oy, ds)
            f["properties"]["nucleus_id"] += offset
            if "measurements" in f["properties"]:
                f["properties"]["measurements"] = {k: float(v) for k, v in rows[f["properties"]["nucleus_id"]].items()}
        arrays[f"box_{k}"] = np.asarray(box, np.int64)
        arrays[f"labels_{k}"] = labels
        tables.append(t[list(COLUMNS)].to_numpy(np.float64))
        features.extend(feats)
        offset = max(offset, int(labels.max(initial=0)))  # ids are already shifted by offset
    table = np.concatenate(tables) if tables else np.zeros((0, len(COLUMNS)))
    with atomic_path(job.result_path(index)) as tmp:
        np.savez_compressed(tmp, n=offset, giant=giant, pieces=len(pieces), tiles=n_tiles, table=table,
                            features=np.array(json.dumps(features, separators=(",", ":"))), **arrays)
    return {"index": index, "nuclei": offset, "tiles": n_tiles, "giant": giant, "cached": False}


def _shift(coords, dx: float, dy: float, ds: float):
    """Nested GeoJSON coordinate lists (Polygon or MultiPolygon) moved by (dx, dy) analysis pixels, scaled by ds."""
    if coords and isinstance(coords[0], int | float):
        return [round((coords[0] + dx) * ds, 2), round((coords[1] + dy) * ds, 2)]
    return [_shift(c, dx, dy, ds) for c in coords]
