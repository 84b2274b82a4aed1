"""How low can the median scale error of ``benchmarks/scale_auto.py`` go for an estimator that knows every nucleus?

``scale_auto.py`` scores an estimate against the "true" scale ``1 / factor``, which assumes every native image is at
the size the model wants. This script bounds the error for estimators that map the image's median nucleus
diameter ``D`` (px, here the ground truth's, i.e. a perfect measurement) to a scale:

* ``equivariant``: ``scale = T / D`` (bring nuclei to a fixed size ``T``, as ``--scale auto`` does before snapping).
  On a copy at factor ``f`` the error is ``|T / d - 1|`` for native diameter ``d``, the same at every factor; the
  best ``T`` over a grid and the model's training size are reported.
* ``monotone``: any scale that does not grow with ``D``. A scale within 15 % of ``1 / f`` for one factor of
  {0.5, 1, 2, 3} is more than 15 % from the others, so such an estimator is right for at most one factor at each
  ``D``, and in factor order along ``D``: thresholds ``b0 <= b1 <= b2`` split ``D`` into the factors' ranges. The
  best thresholds maximise the worst factor's count of copies within 15 %; the median error is <= 15 % at a factor
  only if more than half of its copies are. ``--score`` segments every copy at the best such map's scale
  (default model and settings) and reports its Dice / AJI / PQ beside ``--scale auto``'s and the oracle's.

    python benchmarks/scale_bound.py --result benchmarks/results/scale_auto_dsb.json --score \\
        --out benchmarks/results/scale_bound_dsb.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import scale_auto as SA  # noqa: E402
from nucleus_size import equivalent_diameters  # noqa: E402
from sac.atomic import atomic_write_text  # noqa: E402
from sac.data.io import list_pairs, read_image, read_labels  # noqa: E402
from sac.evaluation.report import score_one  # noqa: E402
from sac.inference.api import load_model  # noqa: E402
from sac.inference.config import InferenceConfig  # noqa: E402

TOLERANCE = 0.15  # the goal: median relative scale error <= 15 %


def monotone_bound(d: np.ndarray, factors: tuple[float, ...]) -> dict:
    """Best thresholds for a non-increasing size -> scale map (see module docstring); ``d``: native diameters."""
    obs = [np.sort(f * d) for f in factors]
    cand = np.unique(np.concatenate([[0.0, np.inf], *obs, *(o * (1 + 1e-9) for o in obs)]))
    below = np.stack([np.searchsorted(o, cand, side="left") for o in obs])  # [factor, threshold]: copies with D < b
    n = len(d)
    # counts for thresholds b0 (index i) <= b1 (j) <= b2 (k); factors in increasing order
    assert list(factors) == sorted(factors) and len(factors) == 4
    # the premise: each factor's window 1/f within TOLERANCE lies apart from the next factor's
    assert all((1 - TOLERANCE) / f > (1 + TOLERANCE) / g for f, g in zip(factors, factors[1:], strict=False))
    i, j, k = np.meshgrid(np.arange(len(cand)), np.arange(len(cand)), np.arange(len(cand)), indexing="ij",
                          sparse=True)
    counts = np.stack(np.broadcast_arrays(below[0][i], below[1][j] - below[1][i], below[2][k] - below[2][j],
                                          n - below[3][k]))
    worst = np.where((i <= j) & (j <= k), counts.min(axis=0), -1)
    best = np.unravel_index(int(np.argmax(worst)), worst.shape)
    return {"worst_factor_within": int(worst[best]), "needed": n // 2 + 1,
            "thresholds_px": [round(float(cand[b]), 2) for b in best],
            "within_per_factor": [int(c) for c in counts[(slice(None), *best)]]}


def score_binned(res: dict, pairs: dict, d: np.ndarray, bound: dict) -> dict:
    """Segment every copy at the monotone map's scale: ``1 / f`` for the factor whose range holds ``f * d``."""
    factors = [float(f) for f in res["factors"]]
    base = load_model("default").segmenter(InferenceConfig(scale="auto"))
    rows = {str(f): [] for f in factors}
    for im, di in zip(res["images"], d, strict=True):
        image, labels = read_image(pairs[im["id"]][0]), read_labels(pairs[im["id"]][1])
        for f in factors:
            r = im["factors"][str(f)]
            s = 1 / factors[int(np.searchsorted(bound["thresholds_px"], f * di, side="right"))]
            if abs(s * f - 1) < 1e-9:
                sc = r["oracle"]
            else:
                img, lab = SA.resample(image, labels, f)
                _, sc = score_one(lab, SA.at_scale(base, s).segment(img).labels)
            rows[str(f)].append({"scale": s, "binned": {k: float(sc[k]) for k in SA.KEYS}, "auto": r["auto"],
                                 "oracle": r["oracle"]})
    return {f: {"binned": SA._means(v, "binned"), "auto": SA._means(v, "auto"), "oracle": SA._means(v, "oracle"),
                "median_scale_error": round(float(np.median([abs(x["scale"] * float(f) - 1) for x in v])), 4)}
            for f, v in rows.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--result", required=True, help="a benchmarks/scale_auto.py JSON (its images and factors)")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--target", type=float, default=18.5, help="the model's training size (px)")
    ap.add_argument("--score", action="store_true", help="segment the copies at the best monotone map's scales")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    res = json.loads(Path(args.result).read_text())
    root = Path(args.data_root)
    pairs = {i: (p, q) for i, p, q in (list_pairs(root / "dsb2018", "val") if res["dataset"] == "dsb"
                                   else list_pairs(root / "monuseg", "train"))}
    d = np.array([float(np.median(equivalent_diameters(read_labels(pairs[im["id"]][1])))) for im in res["images"]])
    grid = np.linspace(5, 60, 1101)
    errors = np.median(np.abs(grid[:, None] / d[None] - 1), axis=1)
    out = {"command": "python benchmarks/scale_bound.py " + " ".join(sys.argv[1:]), "dataset": res["dataset"],
           "n_images": len(d), "native_median_diameter_px": {"5/25/50/75/95 %": [round(float(q), 1) for q in
                                                              np.percentile(d, [5, 25, 50, 75, 95])]},
           "equivariant": {"best_T_px": round(float(grid[errors.argmin()]), 2),
                           "median_error_at_best_T": round(float(errors.min()), 4),
                           "median_error_at_target": round(float(np.median(np.abs(args.target / d - 1))), 4)},
           "monotone": monotone_bound(d, tuple(float(f) for f in res["factors"]))}
    if args.score:
        out["monotone"]["scores"] = score_binned(res, pairs, d, out["monotone"])
    atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
