"""`--scale auto` on rescaled copies of the validation images: accuracy against `--scale 1` and the oracle scale.

Each validation image (and its labels, nearest neighbour) is resampled by every ``--factors`` value (0.5 = a 20x copy
of a 40x image; 3 = nuclei 3x larger), then segmented by the default model with

* ``auto``: ``InferenceConfig(scale="auto")``, the estimator of :mod:`sac.inference.scale`;
* ``oracle``: the exact inverse factor (the scale that restores the native size);
* ``scale1``: ``--scale 1`` (the behaviour before auto). Large images at scale 1 cost many tiles (a 3000 x 3000
  copy is 169 tiles), so ``--scale1-max-pixels`` skips it for larger copies (the JSON says which were scored).

A run whose scale equals another's exactly (e.g. auto snapped to 1 at factor 1) reuses that segmentation. Scores are
per-image means (:func:`sac.evaluation.report.score_one`) of Dice, AJI and PQ; ``scale_error`` is the chosen scale
divided by the oracle scale, minus 1 (``raw_scale_error`` the same before snapping to 1). ``estimate_share`` is
the estimator's time over the whole auto segmentation time (estimate included).

    nice -n 10 python benchmarks/scale_auto.py --dataset monuseg --crop 512 \
        --out benchmarks/results/scale_auto_monuseg.json
    nice -n 10 python benchmarks/scale_auto.py --dataset dsb --n-images 20 --out benchmarks/results/scale_auto_dsb.json
    python benchmarks/scale_auto.py --table benchmarks/results/scale_auto_monuseg.json   # markdown table of a result
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import random
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from sac.data.io import list_pairs, read_image, read_labels
from sac.evaluation.report import score_one
from sac.inference.api import load_model
from sac.inference.config import InferenceConfig
from sac.inference.reader import ArraySource

MONUSEG_VAL = ("TCGA-21-5784-01Z-00-DX1", "TCGA-AR-A1AK-01Z-00-DX1", "TCGA-B0-5710-01Z-00-DX1",
               "TCGA-B0-5711-01Z-00-DX1", "TCGA-HE-7128-01Z-00-DX1", "TCGA-KB-A93J-01A-01-TS1")
# Images looked at while the estimator's constants were chosen (sac.inference.scale): reported separately.
TUNED_MONUSEG = ("TCGA-21-5784-01Z-00-DX1", "TCGA-KB-A93J-01A-01-TS1", "TCGA-B0-5710-01Z-00-DX1")
N_TUNED_DSB = 12  # the first 12 DSB val ids (sorted); the DSB subset here is drawn from the others
KEYS = ("dice", "aji", "pq")


def resample(image: np.ndarray, labels: np.ndarray, f: float) -> tuple[np.ndarray, np.ndarray]:
    """Image (area-averaged down, bilinear up) and labels (nearest neighbour) resampled by ``f``."""
    if f == 1:
        return image, labels
    h, w = labels.shape
    size = (max(1, round(w * f)), max(1, round(h * f)))
    img = cv2.resize(image, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    lab = cv2.resize(labels.astype(np.float32), size, interpolation=cv2.INTER_NEAREST).astype(np.int32)
    return img, lab


def at_scale(base, scale):
    """A Segmenter like ``base`` at ``scale``, sharing its engine (building an engine per scale costs a compile)."""
    seg = copy.copy(base)
    seg.cfg, seg._scale_memo, seg.scale_estimate = dataclasses.replace(base.cfg, scale=scale), None, None
    return seg


def items(args) -> list[tuple[str, Path, Path]]:
    root = Path(args.data_root)
    if args.dataset == "monuseg":
        pairs = {i: (p, q) for i, p, q in list_pairs(root / "monuseg", "train")}
        return [(i, *pairs[i]) for i in MONUSEG_VAL][: args.n_images]
    pairs = list_pairs(root / "dsb2018", "val")
    pool = [p for p in sorted(pairs)[N_TUNED_DSB:]]
    return sorted(random.Random(args.seed).sample(pool, min(args.n_images or len(pool), len(pool))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", choices=("monuseg", "dsb"))
    ap.add_argument("--table", metavar="JSON", help="print the markdown table of a finished result and exit")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--factors", type=float, nargs="+", default=[0.5, 1.0, 2.0, 3.0])
    ap.add_argument("--n-images", type=int, default=None, help="MoNuSeg: first N validation ids; DSB: seeded subset")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crop", type=int, default=None, help="centre crop (px) of each native image before resampling")
    ap.add_argument("--scale1-max-pixels", type=int, default=1_100_000,
                    help="skip the --scale 1 run of copies with more pixels than this")
    ap.add_argument("--model", default="default")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(Path(args.table).read_text())))
        return
    if not (args.dataset and args.out):
        ap.error("--dataset and --out are required (or --table JSON)")
    torch.set_num_threads(int(os.environ.get("SAC_THREADS", "2")))
    model = load_model(args.model)
    base = model.segmenter(InferenceConfig(scale="auto"))
    segs = {"auto": base}

    def segmenter(scale):
        if scale not in segs:
            segs[scale] = at_scale(base, scale)
        return segs[scale]

    out = {"command": "python benchmarks/scale_auto.py " + " ".join(os.sys.argv[1:]), "dataset": args.dataset,
           "factors": args.factors, "crop": args.crop, "scale1_max_pixels": args.scale1_max_pixels,
           "load_average_at_start": os.getloadavg()[0], "engine": base.engine.name, "images": []}
    t0 = time.perf_counter()
    for pid, img_path, lab_path in items(args):
        image, labels = read_image(img_path), read_labels(lab_path)
        if args.crop:
            h, w = labels.shape
            y, x = max(0, (h - args.crop) // 2), max(0, (w - args.crop) // 2)
            image, labels = image[y : y + args.crop, x : x + args.crop], labels[y : y + args.crop, x : x + args.crop]
        rec = {"id": pid, "tuned_on": pid in TUNED_MONUSEG or pid in _tuned_dsb(args), "shape": list(labels.shape),
               "factors": {}}
        for f in args.factors:
            img, lab = resample(image, labels, f)
            oracle = 1.0 / f
            runs: dict[float, dict] = {}

            def run(scale, img=img, lab=lab, runs=runs):
                if scale not in runs:
                    res = segmenter(scale).segment(ArraySource(img))
                    counts, row = score_one(lab, res.labels)
                    runs[scale] = {"scale": res.settings["scale"], "seconds": round(res.seconds, 2),
                                   "tiles": res.tiles, "n_pred": int(res.labels.max()),
                                   **{k: round(float(row[k]), 4) for k in KEYS},
                                   **({"estimate": res.settings["scale_estimate"]} if scale == "auto" else {})}
                return runs[scale]

            auto = run("auto")
            runs[auto["scale"]] = auto  # an explicit run at the same scale would be the same segmentation
            r = {"true_scale": oracle, "n_true": int(lab.max()), "shape": list(lab.shape), "auto": auto,
                 "oracle": run(oracle)}
            if lab.size <= args.scale1_max_pixels or 1.0 in runs:
                r["scale1"] = run(1.0)
            est = auto["estimate"]
            r["scale_error"] = round(auto["scale"] / oracle - 1, 4)
            r["raw_scale_error"] = None if est["raw_scale"] is None else round(est["raw_scale"] / oracle - 1, 4)
            r["estimate_share"] = round(est["seconds"] / max(auto["seconds"], 1e-9), 4)
            rec["factors"][str(f)] = r
            print(pid[:16], f, {k: (v["scale"], v["dice"], v["aji"]) for k, v in r.items()
                                if isinstance(v, dict)}, flush=True)
        out["images"].append(rec)
        out["summary"] = summarise(out["images"], args.factors)
        out["seconds_total"] = round(time.perf_counter() - t0, 1)
        out["load_average_now"] = os.getloadavg()[0]
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["summary"], indent=1))


def _tuned_dsb(args) -> set[str]:
    if args.dataset != "dsb":
        return set()
    return {p[0] for p in sorted(list_pairs(Path(args.data_root) / "dsb2018", "val"))[:N_TUNED_DSB]}


def _means(rows: list[dict], mode: str) -> dict:
    return {k: round(float(np.mean([r[mode][k] for r in rows])), 4) for k in KEYS}


def _median_abs(values) -> float | None:
    values = [abs(v) for v in values if v is not None]
    return round(float(np.median(values)), 4) if values else None


def summarise(images: list[dict], factors: list[float]) -> dict:
    """Per factor: mean scores of each mode over all images, and of all modes over the images scored at scale 1;
    median |scale error|; estimator time share; the same for the images not looked at while tuning."""
    summary = {}
    for f in factors:
        pairs = [(im, im["factors"][str(f)]) for im in images if str(f) in im["factors"]]
        rows = [r for _, r in pairs]
        if not rows:
            continue
        s = {"n_images": len(rows), "auto": _means(rows, "auto"), "oracle": _means(rows, "oracle")}
        with1 = [r for r in rows if "scale1" in r]
        s["n_images_scale1"] = len(with1)
        if with1:
            s["on_scale1_images"] = {mode: _means(with1, mode) for mode in ("auto", "oracle", "scale1")}
        s["auto_minus_oracle"] = {k: round(s["auto"][k] - s["oracle"][k], 4) for k in KEYS}
        s["median_abs_scale_error"] = _median_abs(r["scale_error"] for r in rows)
        s["median_abs_raw_scale_error"] = _median_abs(r["raw_scale_error"] for r in rows)
        s["estimated_scales"] = [r["auto"]["scale"] for r in rows]
        s["no_nuclei"] = sum(r["auto"]["estimate"]["reason"] == "no nuclei" for r in rows)
        s["estimate_share_median"] = round(float(np.median([r["estimate_share"] for r in rows])), 4)
        s["estimate_seconds_median"] = round(float(np.median([r["auto"]["estimate"]["seconds"] for r in rows])), 3)
        fresh = [r for im, r in pairs if not im["tuned_on"]]
        if fresh and len(fresh) < len(rows):
            s["not_tuned_on"] = {"n_images": len(fresh), "auto": _means(fresh, "auto"),
                                 "oracle": _means(fresh, "oracle"),
                                 "median_abs_scale_error": _median_abs(r["scale_error"] for r in fresh)}
        summary[str(f)] = s
    return summary


def table(result: dict) -> str:
    """Markdown rows: factor | images (scale-1 images) | Dice / AJI / PQ for auto, oracle, scale 1 | scale error."""
    lines = ["| factor | images | auto Dice / AJI / PQ | oracle Dice / AJI / PQ | scale 1 Dice / AJI / PQ "
             "(images) | auto - oracle Dice / AJI | median scale error | estimate share of time |",
             "|---|---|---|---|---|---|---|---|"]
    for f, s in result["summary"].items():
        def fmt(d):
            return " / ".join(f"{d[k]:.3f}" for k in KEYS)
        s1 = s.get("on_scale1_images")
        one = "-" if not s1 else f"{fmt(s1['scale1'])} ({s['n_images_scale1']}; auto there {fmt(s1['auto'])})"
        d = s["auto_minus_oracle"]
        lines.append(f"| {f} | {s['n_images']} | {fmt(s['auto'])} | {fmt(s['oracle'])} | {one} | "
                     f"{d['dice']:+.3f} / {d['aji']:+.3f} | {100 * s['median_abs_scale_error']:.0f} % | "
                     f"{100 * s['estimate_share_median']:.0f} % |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
