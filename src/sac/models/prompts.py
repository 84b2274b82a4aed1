"""Point-prompt selection from the prompt generator's probability map (paper eq. 5).

All functions here work on **numpy** arrays (selection is not differentiable and runs on the CPU):
``prob`` is ``float [H, W]`` in ``[0, 1]`` (``sigmoid`` of the UNet logits). Points are ``(x, y)`` =
``(column, row)`` in pixel units, labels ``1`` positive, ``0`` negative, ``-1`` padding.

* ``"centroid"`` (P_O): connected regions of ``prob >= threshold`` (positive) and ``prob <= 1 - threshold``
  (negative), 8-connected, regions smaller than ``min_area`` dropped; the ``n_points`` largest regions per class
  (ties: raster order of the region's first pixel) each give the point at its centroid. A centroid that falls
  outside its own region (a ring, a C shape, the background around nuclei) is moved to the region pixel farthest
  from the region's border (maximum of the distance transform), so every point lies inside its region.
* ``"random"`` (P_R): ``n_points`` pixels drawn uniformly without replacement among ``prob > tau`` (positive)
  and ``prob < 1 - tau`` (negative) with a seeded ``numpy.random.Generator``.

Empty or all-foreground maps just give fewer points. :func:`select_batch` pads a batch to ``[B, N, 2]`` /
``[B, N]`` with label ``-1``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sac.models.config import SELECT_METHODS, PromptConfig

_EIGHT = np.ones((3, 3), dtype=bool)


def _region_points(mask: np.ndarray, n: int, min_area: int) -> np.ndarray:
    """Up to ``n`` points ``float32 [k, 2]`` (x, y), one inside each of the largest regions of ``mask``."""
    if n <= 0 or not mask.any():
        return np.zeros((0, 2), np.float32)
    lab, count = ndimage.label(mask, structure=_EIGHT)
    flat = lab.ravel()
    area = np.bincount(flat, minlength=count + 1)[1:]
    ids = np.nonzero(area >= max(min_area, 1))[0] + 1
    if ids.size == 0:
        return np.zeros((0, 2), np.float32)
    # Largest first; the stable sort keeps label order (= raster order of the first pixel) among equal areas.
    ids = ids[np.argsort(-area[ids - 1], kind="stable")][:n]
    rows, cols = np.indices(mask.shape)
    cy = np.bincount(flat, weights=rows.ravel(), minlength=count + 1)[ids] / area[ids - 1]
    cx = np.bincount(flat, weights=cols.ravel(), minlength=count + 1)[ids] / area[ids - 1]
    pts = np.stack([cx, cy], axis=1)
    ri = np.clip(np.rint(cy).astype(int), 0, mask.shape[0] - 1)
    ci = np.clip(np.rint(cx).astype(int), 0, mask.shape[1] - 1)
    outside = np.nonzero(lab[ri, ci] != ids)[0]
    if outside.size:
        boxes = ndimage.find_objects(lab)
        for j in outside:
            sl = boxes[ids[j] - 1]
            region = np.pad(lab[sl] == ids[j], 1)  # pad: the crop border is not a region border
            dist = ndimage.distance_transform_edt(region)[1:-1, 1:-1]
            r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
            pts[j] = (sl[1].start + c, sl[0].start + r)
    return pts.astype(np.float32)


def _random_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` (or fewer) distinct pixels of ``mask`` drawn uniformly: ``float32 [k, 2]`` (x, y)."""
    idx = np.flatnonzero(mask)
    if n <= 0 or idx.size == 0:
        return np.zeros((0, 2), np.float32)
    pick = rng.choice(idx.size, size=min(n, idx.size), replace=False)
    r, c = np.unravel_index(idx[np.sort(pick)], mask.shape)
    return np.stack([c, r], axis=1).astype(np.float32)


def select_points(
    prob: np.ndarray, cfg: PromptConfig, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Automatic prompts of one image.

    Args:
        prob: ``float [H, W]`` in ``[0, 1]``, P_pos of eq. (4).
        cfg: method, ``n_points`` per class, thresholds.
        rng: used by ``"random"`` only; ``None`` = ``default_rng(0)`` (deterministic).
    Returns:
        ``coords float32 [N, 2]`` (x, y) and ``labels int64 [N]`` (positives first, then negatives),
        ``N <= 2 * cfg.n_points``.
    """
    prob = np.asarray(prob, dtype=np.float32)
    if prob.ndim != 2:
        raise ValueError(f"prob must be [H, W], got shape {prob.shape}")
    if cfg.select == "centroid":
        pos = _region_points(prob >= cfg.threshold, cfg.n_points, cfg.min_area)
        neg = _region_points(prob <= 1.0 - cfg.threshold, cfg.n_points, cfg.min_area)
    elif cfg.select == "random":
        rng = np.random.default_rng(0) if rng is None else rng
        pos = _random_points(prob > cfg.tau, cfg.n_points, rng)
        neg = _random_points(prob < 1.0 - cfg.tau, cfg.n_points, rng)
    else:
        raise ValueError(f"unknown prompt selection {cfg.select!r} (valid: {', '.join(SELECT_METHODS)})")
    coords = np.concatenate([pos, neg]).astype(np.float32)
    labels = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
    return coords, labels


def merge_expert_points(
    coords: np.ndarray, labels: np.ndarray, expert_coords: np.ndarray | None, expert_labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Expert points (``[M, 2]`` x,y + ``[M]`` labels; ``-1`` rows dropped) first, then the automatic ones."""
    if expert_coords is None or len(expert_coords) == 0:
        return coords, labels
    if expert_labels is None:
        raise ValueError("expert points need labels (1 positive, 0 negative, -1 padding)")
    ec = np.asarray(expert_coords, np.float32).reshape(-1, 2)
    el = np.asarray(expert_labels, np.int64).reshape(-1)
    if len(ec) != len(el):
        raise ValueError(f"expert points: {len(ec)} coordinates but {len(el)} labels")
    keep = el >= 0
    return np.concatenate([ec[keep], coords]), np.concatenate([el[keep], labels])


def pad_points(points: list[tuple[np.ndarray, np.ndarray]], min_n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Stack per-image ``(coords [N_i, 2], labels [N_i])`` into ``[B, N, 2]`` / ``[B, N]``, padding label -1.

    ``N = max(max_i N_i, min_n)``: SAM's prompt encoder needs at least one (padding) point.
    """
    n = max([len(c) for c, _ in points] + [min_n])
    coords = np.zeros((len(points), n, 2), np.float32)
    labels = np.full((len(points), n), -1, np.int64)
    for i, (c, lab) in enumerate(points):
        coords[i, : len(c)] = c
        labels[i, : len(lab)] = lab
    return coords, labels


def select_batch(
    prob: np.ndarray | None,
    cfg: PromptConfig,
    expert_coords: np.ndarray | None = None,
    expert_labels: np.ndarray | None = None,
    rng: np.random.Generator | None = None,
    batch_size: int | None = None,
    active: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Prompts of a batch: ``prob [B, H, W]`` (or None = no automatic points) + optional expert points
    ``[B, M, 2]`` / ``[B, M]`` -> padded ``coords float32 [B, N, 2]``, ``labels int64 [B, N]`` (N >= 1).
    ``active bool [B]``: only those items get automatic points (None: all)."""
    if expert_coords is not None and expert_labels is None:
        raise ValueError("expert points need labels (1 positive, 0 negative, -1 padding)")
    if prob is None and batch_size is None:
        if expert_coords is None:
            raise ValueError("select_batch needs prob, expert points or batch_size")
        batch_size = len(expert_coords)
    b = len(prob) if prob is not None else batch_size
    rng = np.random.default_rng(0) if rng is None else rng
    empty = (np.zeros((0, 2), np.float32), np.zeros(0, np.int64))
    out = []
    for i in range(b):
        auto = prob is not None and cfg.enabled and (active is None or active[i])
        pts = select_points(prob[i], cfg, rng) if auto else empty
        if expert_coords is not None:
            pts = merge_expert_points(*pts, expert_coords[i], expert_labels[i])
        out.append(pts)
    return pad_points(out)
