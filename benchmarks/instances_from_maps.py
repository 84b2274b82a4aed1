"""Instance methods compared on saved probability maps (no model run): which split of the thresholded map into
nuclei gives the best AJI / PQ.

Input: folders of ``<id>.npz`` maps written by ``benchmarks/evaluate_full.py --save-maps`` or
``benchmarks/table1_2.py --save-maps`` (``prob``: SAM mask probability, ``prompt_prob``: the UNet's). Methods:

* ``components``: connected components of ``p > 0.5`` (semantic only);
* ``watershed``: the current ``sac segment`` default (h-maxima of the smoothed distance transform of the mask);
* ``prob_watershed`` (h = 1.5) and ``prob_watershed_h1`` (h = 1.0, the `sac segment` default without a distance
  head): markers = h-maxima of the distance transform weighted by the probability (``watershed_instances(...,
  prob=p)``), so seeds sit in confident cores and the low-probability necks between touching nuclei become lines;
* ``distance_h<h>`` (maps saved from a model with a distance head): the watershed follows the learned distance
  map (``watershed_instances(..., distance=d, h=h)``), markers = its h-maxima.

Each map (``prob``, ``prompt_prob``, their mean) x each method is scored against the ground truth with
:func:`sac.evaluation.report.score`. Results: ``benchmarks/results/instances_from_maps.json``.

    .venv/bin/python benchmarks/instances_from_maps.py --maps runs/maps/monuseg__SAC___mask_prompt_0-expert \\
        --data ../shared/data/monuseg --split train [--maps DIR --data ROOT --split S ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from sac.atomic import atomic_write_text

HERE = Path(__file__).resolve().parent


def methods(distance: np.ndarray | None = None):
    """Instance methods on a probability map ``p``; with a distance head's map, the distance-guided ones too."""
    from sac.postprocess.instances import components, watershed_instances

    out = {
        "components": lambda p: components(p > 0.5, min_area=10),
        "watershed": lambda p: watershed_instances(p > 0.5, min_area=10),
        "prob_watershed": lambda p: watershed_instances(p > 0.5, min_area=10, prob=p, h=1.5),
        "prob_watershed_h1": lambda p: watershed_instances(p > 0.5, min_area=10, prob=p, h=1.0),
    }
    if distance is not None:
        for h in DISTANCE_HS:
            out[f"distance_h{h:g}"] = lambda p, h=h: watershed_instances(p > 0.5, min_area=10, distance=distance, h=h)
    return out


DISTANCE_HS = (0.05, 0.1, 0.15, 0.2, 0.3)


def main() -> None:
    from sac.data.io import list_pairs, read_labels
    from sac.evaluation.report import score

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--maps", type=Path, action="append", required=True)
    ap.add_argument("--data", type=Path, action="append", required=True)
    ap.add_argument("--split", action="append", required=True)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "instances_from_maps.json")
    ap.add_argument("--only-maps", nargs="+", default=None, help="subset of: sam unet mean")
    ap.add_argument("--only-methods", nargs="+", default=None, help="subset of the methods above")
    args = ap.parse_args()
    out = {"command": "python benchmarks/instances_from_maps.py " + " ".join(sys.argv[1:]), "sets": {}}
    t0 = time.time()
    for maps_dir, data, split in zip(args.maps, args.data, args.split, strict=True):
        pairs: dict[str, list] = {}
        labels_of = {pid: lab for pid, _, lab in list_pairs(data, split)}
        for f in sorted(maps_dir.glob("*.npz")):
            true = read_labels(labels_of[f.stem])
            z = np.load(f)
            maps = {"sam": z["prob"].astype(np.float32)}
            distance = z["distance"].astype(np.float32) if "distance" in z else None
            if "prompt_prob" in z:
                maps["unet"] = z["prompt_prob"].astype(np.float32)
                maps["mean"] = (maps["sam"] + maps["unet"]) / 2
            for mname, p in maps.items():
                if args.only_maps and mname not in args.only_maps:
                    continue
                for meth, fn in methods(distance).items():
                    if args.only_methods and meth not in args.only_methods:
                        continue
                    pairs.setdefault(f"{mname}/{meth}", []).append((f.stem, true, fn(p)))
            print(f"{f.stem} done ({time.time() - t0:.0f} s)", flush=True)
        res = {k: {m: v[m] for m in ("dice", "aji", "pq", "object_f1", "n_images")}
               for k, v in ((k, score(p)) for k, p in pairs.items())}
        out["sets"][str(maps_dir)] = res
        for k, r in res.items():
            print(f"{maps_dir.name[:40]:40s} {k:28s} dice {r['dice']:.4f} aji {r['aji']:.4f} pq {r['pq']:.4f}")
    out["wall_seconds"] = round(time.time() - t0, 1)
    atomic_write_text(args.out, json.dumps(out, indent=2, default=float) + "\n")


if __name__ == "__main__":
    main()
