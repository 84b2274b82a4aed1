"""How much the seeded watershed gains over plain connected components (AJI, PQ) on real MoNuSeg images.

Two measurements, both scored with :func:`sac.evaluation.report.score` against the ground-truth instances:

1. ``oracle``: instances from the *ground-truth* semantic mask (``labels > 0``) -- isolates the splitting method
   from segmentation errors (upper bound of what instance post-processing can give);
2. ``model``: one `Segmenter` run per image (the `sac segment` path), then a thresholded probability map split
   by watershed and by connected components (semantic-only), same ``min_area``. ``--map sac``: the SAC mask (the
   watershed is what `sac segment` writes); ``--map unet``: the model's prompt-generator map, split by the same
   instance step (following the UNet's distance head when it has one), as the "unet" row of
   :func:`sac.inference.evaluate.evaluate_model`.

    .venv/bin/python benchmarks/instances_gain.py --model RUN_DIR [--ids A,B,...] [--scale 1.0]

Image ids: ``--ids``, else the MoNuSeg validation ids recorded in RUN_DIR/splits.json, else 6 ids drawn with
``random.Random(0)`` (the default model's MoNuSeg hold-out, drawn the same way).
Results: benchmarks/results/instances_gain.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAC_DATA", REPO.parent / "shared" / "data"))


def pick_ids(model: str | None, ids: str | None) -> tuple[list[str], str]:
    if ids:
        return ids.split(","), "--ids"
    if model and model != "default" and not model.startswith("sam"):  # a run folder records its split
        from sac.inference.api import find_model_dir

        for cand in (Path(model), find_model_dir(model).parent):
            sp = cand / "splits.json"
            if sp.is_file():
                val = [v for v in json.loads(sp.read_text())["val"] if "monuseg" in v["root"]]
                if val and val[0].get("ids"):
                    return val[0]["ids"], f"{sp} (MoNuSeg validation ids of the run)"
    all_ids = sorted(p.stem for p in (DATA / "monuseg" / "train" / "images").glob("*.png"))
    return sorted(random.Random(0).sample(all_ids, 6)), "random.Random(0).sample(monuseg train ids, 6)"


def summarise(result: dict) -> dict:
    keys = ("aji", "aji_plus", "pq", "dq", "sq", "dice", "object_f1", "n_true", "n_pred")
    return {k: result[k] for k in keys}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="run or model folder; omitted = oracle measurement only")
    p.add_argument("--ids", default=None)
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--min-area", type=int, default=10)
    p.add_argument("--map", choices=("sac", "unet"), default="sac",
                   help="probability map to split: the SAC mask (what sac segment uses) or the model's UNet "
                        "prompt map (e.g. for a `unet`-variant run, whose mask decoder is untrained)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "instances_gain.json"))
    a = p.parse_args()

    import numpy as np
    import torch

    from sac.data.io import read_labels
    from sac.evaluation.report import score
    from sac.postprocess.instances import components, watershed_instances

    torch.set_num_threads(2)
    ids, source = pick_ids(a.model, a.ids)
    root = DATA / "monuseg" / "train"
    truth = {i: read_labels(root / "labels" / f"{i}.png") for i in ids}
    out: dict = {"ids": ids, "ids_from": source, "min_area": a.min_area,
                 "command": "python benchmarks/instances_gain.py " + " ".join(sys.argv[1:]),
                 "loadavg": os.getloadavg()}
    out["oracle"] = {
        "components": summarise(score((i, t, components(t > 0, a.min_area)) for i, t in truth.items())),
        "watershed": summarise(score((i, t, watershed_instances(t > 0, min_area=a.min_area))
                                     for i, t in truth.items())),
    }
    print("oracle", json.dumps(out["oracle"], indent=1), file=sys.stderr)
    if a.model:
        from sac.inference.api import load_model
        from sac.inference.config import InferenceConfig
        from sac.inference.reader import open_image

        seg = load_model(a.model).segmenter(InferenceConfig(scale=a.scale, min_area=a.min_area))
        ws, cc, secs = [], [], []
        for i in ids:
            t0 = time.perf_counter()
            res = seg.segment(open_image(root / "images" / f"{i}.png"))
            secs.append(time.perf_counter() - t0)
            if a.map == "sac":
                prob, labels = res.prob, res.labels
            elif res.prompt_prob is None:
                raise SystemExit(f"--map unet: {a.model} has no prompt generator")
            else:
                prob = res.prompt_prob
                labels = seg.instances(prob > seg.cfg.threshold, prob, res.distance)
            ws.append((i, truth[i], labels))
            cc.append((i, truth[i], components(prob > seg.cfg.threshold, a.min_area)))
            print(f"{i}: {labels.max()} nuclei (watershed), {secs[-1]:.1f} s", file=sys.stderr)
        out["model"] = {"model": a.model, "map": a.map, "settings": seg.settings(),
                        "seconds_per_image": float(np.mean(secs)),
                        "components": summarise(score(cc)), "watershed": summarise(score(ws))}
        print("model", json.dumps(out["model"], indent=1), file=sys.stderr)
    from sac.atomic import atomic_write_text

    atomic_write_text(a.out, json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
