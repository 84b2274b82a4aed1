"""How far can one click go with today's masks? Bounds for the single-nucleus goal of issue 11 (IoU >= 0.80).

The same seeded nuclei and first click as ``benchmarks/clicks_single.py`` (positive click at each ground-truth
nucleus's most interior pixel, decoded by the interactive head in the cached grid window, the UNet's logits as
mask input). Per set, mean IoU with the whole nucleus of:

* ``head``: the editor's first-click mask (``honour_clicks``, then the piece under the click): the table's row;
* ``head_separated``: the head's ``logits > 0`` cut to the nucleus's cell of the ground truth (pixels nearer to this
  nucleus than to any other; background pixels go to the nearest nucleus), i.e. the head's boundary with a perfect
  separation from its neighbours;
* ``head_separated_best_threshold``: the same with the best threshold per nucleus (``logits > t``, t in -4..4 step
  0.5, chosen with the ground truth): the ceiling of any re-thresholding of the head's logits;
* ``unet_separated``: the UNet's ``prob > 0.5`` in that cell (the automatic map's boundary, perfectly separated);
* ``gt_grown_1px`` / ``gt_shrunk_1px``: the nucleus against itself dilated / eroded by one pixel (4-connected):
  what a mask with the right shape and a boundary one pixel off all round scores, a ruler for the others.

    .venv/bin/python benchmarks/click_bound.py --per-set 200 --out benchmarks/results/click_bound.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clicks_single import Windows, editor_mask, load_sets, plan  # noqa: E402
from sac.atomic import atomic_write_text  # noqa: E402
from sac.inference.api import build_model  # noqa: E402

THRESHOLDS = np.arange(-4.0, 4.01, 0.5)


def iou(pred: np.ndarray, target: np.ndarray, area: int) -> float:
    """IoU of ``pred`` (window) with a nucleus whose ``target`` window crop is given and whole ``area`` px."""
    inter = np.count_nonzero(pred & target)
    return inter / (np.count_nonzero(pred) + area - inter)


def ruler(mask: np.ndarray) -> tuple[float, float]:
    """IoU of ``mask`` (padded by 2 px) with itself grown / shrunk by one pixel (4-connected)."""
    m = np.pad(mask, 2)
    return m.sum() / ndi.binary_dilation(m).sum(), ndi.binary_erosion(m).sum() / m.sum()


@torch.inference_mode()
def bound_set(model, images, jobs: list[dict]) -> dict[str, np.ndarray]:
    wins = Windows(model, images)
    nearest: dict = {}  # (image, tile) -> id of the ground-truth nucleus nearest to each window pixel
    out: dict[str, list] = {k: [] for k in ("head", "head_separated", "head_separated_best_threshold",
                                            "unet_separated", "gt_grown_1px", "gt_shrunk_1px")}
    for job in jobs:
        k, tile = job["image"], job["tile"]
        emb, unet = wins.get(k, tile)
        lab = images[k][2]
        h, w = tile.y1 - tile.y0, tile.x1 - tile.x0
        crop = lab[tile.y0:tile.y1, tile.x0:tile.x1]
        target = crop == job["id"]
        whole = lab[job["slice"]] == job["id"]
        area = int(np.count_nonzero(whole))
        if (k, tile) not in nearest:
            _, (iy, ix) = ndi.distance_transform_edt(crop == 0, return_indices=True)
            nearest[(k, tile)] = crop[iy, ix]
        cell = nearest[(k, tile)] == job["id"]  # the window pixels nearer to this nucleus than to any other
        xy = np.array([job["click"][0] - tile.x0, job["click"][1] - tile.y0], np.float32)
        logits, _ = model.decode_object(emb, torch.from_numpy(xy)[None, None], torch.ones(1, 1, dtype=torch.long),
                                        None, unet)
        z = logits[0, 0, :h, :w]
        out["head"].append(iou(editor_mask(z, unet, [(xy, 1)], "editor", h, w), target, area))
        zn = z.numpy()
        out["head_separated"].append(iou((zn > 0) & cell, target, area))
        out["head_separated_best_threshold"].append(max(iou((zn > t) & cell, target, area) for t in THRESHOLDS))
        out["unet_separated"].append(iou((unet[0, 0, :h, :w].numpy() > 0) & cell, target, area))
        grown, shrunk = ruler(whole)
        out["gt_grown_1px"].append(grown)
        out["gt_shrunk_1px"].append(shrunk)
    return {k: np.array(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="model with the interactive head (default: bundled)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--per-set", type=int, default=200, help="nuclei sampled per set (seeded, as clicks_single)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "click_bound.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    sets = load_sets(Path(args.data))
    model = build_model(args.model)[0].eval()
    if model.object_decoder is None:
        raise SystemExit(f"--model {args.model} has no interactive head (object_decoder)")
    result: dict = {"sets": {}}
    for name, p in plan(sets, args.per_set or None, args.seed).items():
        r = bound_set(model, sets[name], p["jobs"])
        result["sets"][name] = {
            "n_nuclei": len(r["head"]),
            **{k: round(float(v.mean()), 4) for k, v in r.items()},
            "share_at_least_0.8": {k: round(float((v >= 0.8).mean()), 3) for k, v in r.items()},
        }
        print(name, result["sets"][name], flush=True)
    result["command"] = (f"benchmarks/click_bound.py --model {args.model} --per-set {args.per_set} "
                         f"--seed {args.seed} --threads {args.threads}")
    result["seconds"] = round(time.time() - t0, 1)
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
