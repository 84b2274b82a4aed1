"""`sac evaluate --model`: segment whole images of a split with the same :class:`Segmenter` as `sac segment`, then
score them with :func:`sac.evaluation.report.score` (the same JSON keys as `sac evaluate --pred`).

Simulated experts (paper Tables 3-4): ``expert=M`` places, per image, M positive points on randomly chosen
ground-truth nuclei (each at the nucleus pixel farthest from its border) and M negative points on background at
least 3 px from any nucleus (:func:`sac.inference.experts.simulate_expert`). The draw is seeded by
``(seed, crc32(image id))``, so an image gets the same points whatever ``limit`` or order. The points are given in
image coordinates and, exactly like ``--expert-points`` of `sac segment`, merged into the prompts of every tile
that contains them (so each expert click guides the tile(s) it falls in; tiles without one use auto-prompts only).
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

import numpy as np

from sac.errors import SACError
from sac.inference.config import InferenceConfig


def evaluate_model(
    model: str,
    data: Path,
    split: str,
    *,
    points: int | None = None,
    expert: int = 0,
    select: str | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    scale: float | None = None,
    seed: int = 0,
    device: str = "cpu",
    sam_checkpoint: str | None = None,
    limit: int | None = None,
    instances: str = "watershed",
    split_h: float | None = None,
    tta: bool = False,
    progress: bool = True,
) -> dict:
    """Segment and score ``<data>/<split>`` with ``model`` ('default', 'sam', a model or run folder).

    Returns :func:`sac.evaluation.report.score`'s dict plus ``seconds_per_image`` (mean wall time of
    :meth:`Segmenter.segment` per image: tiling, model, stitching, instances) and ``settings`` (the effective
    :class:`InferenceConfig`, prompt settings, expert count, model description).
    """
    from tqdm import tqdm

    from sac.data.io import list_pairs, read_labels
    from sac.evaluation.report import score
    from sac.inference.api import load_model
    from sac.inference.experts import simulate_expert
    from sac.inference.reader import open_image

    if expert < 0:
        raise SACError(f"--expert must be >= 0, got {expert}")
    if limit is not None and limit < 1:
        raise SACError(f"--limit must be >= 1, got {limit}")
    cfg = InferenceConfig(tile=tile, overlap=overlap, scale=1.0 if scale is None else scale, n_points=points,
                          select=select, instances=instances, split_h=split_h, tta=tta, seed=seed).validate()
    items = list_pairs(data, split)[:limit]
    loaded = load_model(model, device=device, sam_checkpoint=sam_checkpoint)
    segmenter = loaded.segmenter(cfg)
    seconds: list[float] = []

    def pairs():
        for pid, img_path, lab_path in tqdm(items, desc=f"evaluate {split}", unit="img", disable=not progress):
            true = read_labels(lab_path)
            source = open_image(img_path)
            try:
                if source.shape != true.shape:
                    raise SACError(f"{img_path} is {source.shape} but its labels {lab_path} are {true.shape}")
                rng = np.random.default_rng([seed, zlib.crc32(pid.encode())])
                pts = simulate_expert(true, expert, rng) if expert else None
                res = segmenter.segment(source, expert_points=pts)
            finally:
                source.close()
            seconds.append(res.seconds)
            yield pid, true, res.labels

    t0 = time.perf_counter()
    result = score(pairs())
    result["seconds_per_image"] = float(np.mean(seconds))
    result["seconds_total"] = time.perf_counter() - t0
    result["settings"] = {**segmenter.settings(), "expert": expert, "model": loaded.info, "limit": limit}
    return result
