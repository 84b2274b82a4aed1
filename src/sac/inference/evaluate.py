"""The one place that runs a model over a dataset: `sac evaluate --model` and the benchmarks' whole-image rows.

Each image of ``<data>/<split>`` is segmented with the same :class:`~sac.inference.segmenter.Segmenter` as
`sac segment`, then scored with :func:`sac.evaluation.report.score` (the same JSON keys as `sac evaluate --pred`).
Besides the SAC mask (row ``"sac"``), one pass can score two more rows from the very same forward passes:

* ``"unet"``: the prompt generator alone (``prompt_prob > threshold`` -> the same instance step, following the
  UNet's own distance head when it has one): the "UNet alone" row of paper Table 1;
* ``"fused"``: the mean of the SAM and UNet probability maps, then the same threshold and instance step.

``save_maps`` keeps each image's stitched maps (``<id>.npz``: prob, prompt_prob, distance as float16).

Simulated experts (paper Tables 3-4): ``expert=M`` places, per image, M positive points on randomly chosen
ground-truth nuclei (each at the nucleus pixel farthest from its border) and M negative points on background at
least 3 px from any nucleus (:func:`sac.inference.experts.simulate_expert`). The draw is seeded by
``(cfg.seed, crc32(image id))``, so an image gets the same points whatever ``limit`` or order. With
``expert_mode="edit"`` (the default, `sac evaluate --expert`) they are clicks on the automatic result through the
editor, exactly like ``--expert-points`` of `sac segment` (:func:`sac.inference.experts.apply_points`); with
``"prompts"`` (the paper's protocol, ``benchmarks/table3_4.py``) they are merged into the prompts of every tile
that contains them.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sac.errors import SACError
from sac.inference.config import InferenceConfig

ROWS = ("sac", "unet", "fused")
EXPERT_MODES = ("edit", "prompts")


def evaluate_model(
    model,
    data: Path,
    split: str,
    cfg: InferenceConfig | None = None,
    *,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    expert: int = 0,
    expert_mode: str = "edit",
    rows: Sequence[str] = ("sac",),
    save_maps: Path | None = None,
    device: str = "cpu",
    sam_checkpoint: str | None = None,
    segmenter=None,
    progress: bool = True,
) -> dict:
    """Segment and score ``<data>/<split>`` (only ``ids`` if given, then the first ``limit``) with ``model``.

    ``model``: 'default', 'sam', a model or run folder (loaded on ``device``), or a loaded
    :class:`~sac.inference.api.SACModel`; ``segmenter``: a :class:`Segmenter` of that model to use instead of
    ``model.segmenter(cfg)`` (the benchmarks pass one with a memoised encoder). ``rows``: which of ``ROWS`` to
    score (``unet``/``fused`` need a prompt generator and are left out without one).

    Returns :func:`sac.evaluation.report.score`'s dict of the ``sac`` row at the top level (when asked for; its
    ``per_image`` rows also carry the ``scale`` each image was segmented at),
    one such dict under ``"unet"`` / ``"fused"`` for those rows, ``seconds_per_image`` (mean wall time of
    :meth:`Segmenter.segment`: tiling, model, stitching, instances), ``seconds_total`` and ``settings`` (the
    effective :class:`InferenceConfig`, expert count, model description, limit, scored ids).
    """
    from tqdm import tqdm

    from sac.data.io import list_pairs, read_labels
    from sac.evaluation.report import Scorer
    from sac.inference.api import load_model
    from sac.inference.experts import segment_with_points, simulate_expert
    from sac.inference.reader import open_image

    bad = [r for r in rows if r not in ROWS]
    if bad or not rows:
        raise ValueError(f"rows must be a non-empty subset of {ROWS}, got {list(rows)}")
    if expert_mode not in EXPERT_MODES:
        raise ValueError(f"expert_mode must be one of {EXPERT_MODES}, got {expert_mode!r}")
    if expert < 0:
        raise SACError(f"--expert must be >= 0, got {expert}")
    if limit is not None and limit < 1:
        raise SACError(f"--limit must be >= 1, got {limit}")
    cfg = (cfg or InferenceConfig()).validate()
    wanted = None if ids is None else set(ids)
    items = [p for p in list_pairs(data, split) if wanted is None or p[0] in wanted][:limit]
    if not items:
        raise SACError(f"nothing to score: no images in {data}/{split}" + (" with the given ids" if ids else ""))
    loaded = load_model(model, device=device, sam_checkpoint=sam_checkpoint) if isinstance(model, str) else model
    seg = segmenter if segmenter is not None else loaded.segmenter(cfg)
    scorers = {r: Scorer() for r in rows}  # one pass, one running score per row (one image in memory)
    seconds: list[float] = []
    t0 = time.perf_counter()
    for pid, img_path, lab_path in tqdm(items, desc=f"evaluate {split}", unit="img", disable=not progress):
        true = read_labels(lab_path)
        source = open_image(img_path)
        try:
            if source.shape != true.shape:
                raise SACError(f"{img_path} is {source.shape} but its labels {lab_path} are {true.shape}")
            rng = np.random.default_rng([cfg.seed, zlib.crc32(pid.encode())])
            pts = simulate_expert(true, expert, rng) if expert else None
            if pts is not None and len(pts) and expert_mode == "edit":
                res = segment_with_points(seg, source, pts)
            else:
                res = seg.segment(source, expert_points=pts)
        finally:
            source.close()
        seconds.append(res.seconds)
        if "sac" in scorers:
            # the factor each image was segmented at: with scale "auto" it differs per image (docs/scale.md)
            scorers["sac"].add(pid, true, res.labels)["scale"] = res.settings.get("scale")
        if res.prompt_prob is not None:
            if "unet" in scorers:
                # The UNet's own distance head splits its instances when it has one (as sac segment would).
                scorers["unet"].add(pid, true, seg.instances(res.prompt_prob > cfg.threshold, res.prompt_prob,
                                                             res.distance))
            if "fused" in scorers:
                fused = (res.prob + res.prompt_prob) / 2
                scorers["fused"].add(pid, true, seg.instances(fused > cfg.threshold, fused))
        if save_maps is not None:
            _save_maps(Path(save_maps), pid, res)
    result = scorers.pop("sac").result() if "sac" in scorers else {}
    result.update({name: sc.result() for name, sc in scorers.items() if sc.rows})
    result["seconds_per_image"] = float(np.mean(seconds))
    result["seconds_total"] = time.perf_counter() - t0
    result["settings"] = {**seg.settings(), "expert": expert, "expert_mode": expert_mode, "model": loaded.info,
                          "limit": limit, "ids": [p[0] for p in items]}
    return result


def _save_maps(folder: Path, pid: str, res) -> None:
    """``<folder>/<pid>.npz``: the stitched float16 maps of one image (prob; prompt_prob, distance if any)."""
    folder.mkdir(parents=True, exist_ok=True)
    maps = {"prob": res.prob.astype(np.float16)}
    if res.prompt_prob is not None:
        maps["prompt_prob"] = res.prompt_prob.astype(np.float16)
    if res.distance is not None:
        maps["distance"] = res.distance.astype(np.float16)
    np.savez_compressed(folder / f"{pid}.npz", **maps)
