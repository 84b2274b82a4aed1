"""One nucleus from clicks through the Editor itself (issue 11), at the settings of `sac segment` / `sac serve`.

`benchmarks/clicks_single.py` scores the annotator's protocol on a copy of the editor's rule at scale 1, so that
rows of rules and heads can be compared. This script drives :class:`sac.inference.editor.Editor` as a user's clicks
do, with its default :class:`~sac.inference.config.InferenceConfig` (``--scale auto``: each image is segmented and
clicked at the scale its UNet estimates, docs/scale.md), on the same nuclei (``clicks_single.plan``: ``--per-set``
nuclei per set, seeded):

1. ``Editor(model, image)`` per image (the automatic run, every window embedded);
2. per nucleus: ``add`` at its most interior pixel (``--first click``) or ``box`` on its bounding box (``--first
   box``), then up to 4 ``refine`` calls, each with one click at the most interior pixel of the largest error region
   of the instance's current mask (:func:`sac.evaluation.clicks.correction_click`: positive in a missed region,
   negative in an extra one); IoU of the instance with the whole nucleus after 1, 2, 3 and 5 prompts (a perfect
   mask keeps its IoU; a prompt the editor answers with a no-op ends that nucleus's run with the IoU it had, 0 when
   the first prompt found nothing: counted in ``noops``);
3. ``undo`` back to the automatic labels (checked equal) before the next nucleus.

Reported per set: the mean IoU per prompt count, over all nuclei and split by whether the image ran at scale 1,
and the scale of every image. ``--scale 1`` runs the editor at scale 1 (the setting of clicks_single.py).

    .venv/bin/python benchmarks/clicks_editor.py --per-set 200 --out benchmarks/results/clicks_editor.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from clicks_single import CLICKS, load_sets, plan
from sac.atomic import atomic_write_text
from sac.evaluation.clicks import correction_click
from sac.inference.api import load_model
from sac.inference.config import InferenceConfig, scale_arg
from sac.inference.editor import Editor

HERE = Path(__file__).resolve().parent
REPORT = (1, 2, 3, 5)  # prompts after which IoU is reported (CLICKS = 5 rounds)
PAD = 2  # px around the nucleus and the mask where the annotator looks for errors


def one_nucleus(ed: Editor, lab: np.ndarray, job: dict, first: str) -> tuple[list[float], int, int]:
    """The annotator on one nucleus -> (IoU after each of the CLICKS prompts, no-ops, edits that changed the
    labels: as many ``undo`` calls restore them)."""
    nid, (cx, cy) = job["id"], job["click"]
    edit = ed.box(*job["box"]) if first == "box" else ed.add(cx, cy)
    ious: list[float] = []
    noops, edits = 0, int(edit.changed)
    inst = edit.ids[0] if edit.changed else 0  # the new instance (then those it took pixels from)
    while len(ious) < CLICKS:
        if not edit.changed:
            noops += 1
            ious += [ious[-1] if ious else 0.0] * (CLICKS - len(ious))
            break
        pred = ed.labels == inst
        target = lab == nid
        ys, xs = np.nonzero(pred | target)
        y0, y1 = max(ys.min() - PAD, 0), ys.max() + PAD + 1
        x0, x1 = max(xs.min() - PAD, 0), xs.max() + PAD + 1
        p, t = pred[y0:y1, x0:x1], target[y0:y1, x0:x1]
        inter = np.count_nonzero(p & t)
        ious.append(inter / (np.count_nonzero(p) + np.count_nonzero(t) - inter))
        click = correction_click(p, t) if len(ious) < CLICKS else None
        if click is None:
            ious += [ious[-1]] * (CLICKS - len(ious))
            break
        edit = ed.refine(inst, [[click[0] + x0, click[1] + y0, click[2]]])
        edits += edit.changed
    return ious, noops, edits


def summary(ious: np.ndarray, rows) -> dict[str, float] | None:
    return {str(r): float(ious[rows, r - 1].mean()) for r in REPORT} if np.any(rows) else None


def run_set(model, cfg: InferenceConfig, images, jobs: list[dict], firsts: list[str]) -> dict:
    """Every image opened once; per first prompt (``click`` / ``box``) the annotator on its sampled nuclei."""
    ious = {f: np.zeros((len(jobs), CLICKS)) for f in firsts}
    noops = dict.fromkeys(firsts, 0)
    scale_of = np.ones(len(jobs))
    per_image = {}
    for k, (iid, img, lab) in enumerate(images):
        idx = [j for j, job in enumerate(jobs) if job["image"] == k]
        if not idx:
            continue
        t0 = time.perf_counter()
        ed = Editor(model, img, cfg)
        scale = float(ed.result().settings.get("scale", 1.0))
        base = ed.labels.copy()
        t1 = time.perf_counter()
        for first in firsts:
            for j in idx:
                ious[first][j], n, edits = one_nucleus(ed, lab, jobs[j], first)
                noops[first] += n
                for _ in range(edits):
                    ed.undo()
                if not np.array_equal(ed.labels, base):
                    raise RuntimeError(f"{iid}: undo did not restore the automatic labels")
        scale_of[idx] = scale
        per_image[iid] = {"scale": scale, "nuclei": len(idx), "open_s": round(t1 - t0, 2),
                          "clicks_s": round(time.perf_counter() - t1, 2),
                          **{f"mean_iou_{f}": summary(ious[f], idx) for f in firsts}}
        print(f"  {iid[:24]} scale {scale:.2f} {len(idx)} nuclei, IoU after the first prompt: "
              + ", ".join(f"{f} {ious[f][idx, 0].mean():.3f}" for f in firsts), flush=True)
    at1 = np.isclose(scale_of, 1.0)
    out = {f: {"nuclei": len(jobs), "noops": noops[f], "mean_iou": summary(ious[f], slice(None)),
               "scale_1": {"nuclei": int(at1.sum()), "mean_iou": summary(ious[f], at1)},
               "other_scales": {"nuclei": int((~at1).sum()), "mean_iou": summary(ious[f], ~at1)}} for f in firsts}
    return {"rows": out, "images": per_image}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--model", default="default")
    ap.add_argument("--sets", nargs="+", default=["monuseg_val6", "dsb2018_val"],
                    choices=["monuseg_val6", "dsb2018_val"])
    ap.add_argument("--first", nargs="+", default=["click", "box"], choices=["click", "box"])
    ap.add_argument("--scale", type=scale_arg, default=InferenceConfig.scale,
                    help="the editor's --scale (default: %(default)s, as sac segment / sac serve)")
    ap.add_argument("--per-set", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "clicks_editor.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    cfg = InferenceConfig(scale=args.scale)
    sets = {k: v for k, v in load_sets(args.data).items() if k in args.sets}
    jobs = plan(sets, args.per_set, args.seed)
    result = json.loads(args.out.read_text()) if args.out.is_file() else {}
    result.update({"command": "benchmarks/clicks_editor.py " + " ".join(sys.argv[1:]), "model": model.info,
                   "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch threads {args.threads}",
                   "loadavg_start": os.getloadavg()})
    rows = result.setdefault("rows", {})
    for name, images in sets.items():
        t0 = time.perf_counter()
        print(f"{name}, scale {args.scale}", flush=True)
        r = run_set(model, cfg, images, jobs[name]["jobs"], args.first)
        for first, row in r["rows"].items():
            rows.setdefault(f"{first}, scale {args.scale}", {})[name] = row
            print(f"{name} {first}: " + " / ".join(f"{v:.3f}" for v in row["mean_iou"].values()), flush=True)
        result.setdefault("images", {})[f"{name}, scale {args.scale}"] = r["images"]
        result.setdefault("seconds", {})[f"{name}, scale {args.scale}"] = round(time.perf_counter() - t0, 1)
        result["loadavg_end"] = os.getloadavg()
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
