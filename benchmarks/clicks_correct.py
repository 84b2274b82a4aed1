"""Correcting the automatic result with clicks (issue 11): a simulated annotator edits through the Editor.

Per image: ``Editor(model, image)`` runs the automatic segmentation (the settings of `sac segment`), then
:func:`sac.evaluation.corrections.annotate` fixes the worst error again and again (largest missed nucleus ->
positive click at its most interior pixel; largest false detection -> negative click; an instance holding two or
more ground-truth nuclei -> a split with one click per nucleus; a nucleus cut into pieces -> a merge, one click per
piece) until 50 clicks are spent. The same annotator also drives ``PerfectEditor`` from the same automatic labels
(each correction applied exactly from the ground truth: the ceiling of any editor; ``--editors``). AJI and PQ of the
current labels are recorded after K = 0, 5, 10, 20, 50 clicks (at the first correction that reaches K: a split
costs one click per part, so a checkpoint may be passed by one or two clicks; the clicks actually spent are
recorded). Sets: the 6 MoNuSeg validation images (held out from training) and a fixed seeded subset of DSB 2018
val (``--dsb N`` images drawn with ``numpy.random.default_rng(seed)``, default 20 of 67).

Latency (``--latency N``): N positive clicks (``Editor.add``, embeddings cached, the complete edit: window
choice, decoder, label update, history) at the most interior pixels of randomly chosen ground-truth nuclei of one
1000 x 1000 MoNuSeg validation image; median and p95 in ms, how many clicks needed a new (click-centred) window,
and the load average (the machine is shared).

    nice -n 5 .venv/bin/python benchmarks/clicks_correct.py --out benchmarks/results/clicks_correct.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from sac.atomic import atomic_write_text
from sac.data.io import list_pairs, read_image, read_labels
from sac.evaluation.clicks import interior_point
from sac.evaluation.corrections import PerfectEditor, annotate
from sac.evaluation.instance import instance_scores
from sac.inference.api import load_model
from sac.inference.editor import Editor

HERE = Path(__file__).resolve().parent
MONUSEG_VAL = ("TCGA-21-5784-01Z-00-DX1", "TCGA-AR-A1AK-01Z-00-DX1", "TCGA-B0-5710-01Z-00-DX1",
               "TCGA-B0-5711-01Z-00-DX1", "TCGA-HE-7128-01Z-00-DX1", "TCGA-KB-A93J-01A-01-TS1")
CHECKPOINTS = (0, 5, 10, 20, 50)  # only those <= --clicks are reported


def sets(data: Path, dsb: int, seed: int) -> dict[str, list[tuple[str, Path, Path]]]:
    mon = {i: (i, p, q) for i, p, q in list_pairs(data / "monuseg", "train")}
    val = list_pairs(data / "dsb2018", "val")
    pick = sorted(np.random.default_rng(seed).choice(len(val), size=min(dsb, len(val)), replace=False).tolist())
    return {"monuseg": [mon[i] for i in MONUSEG_VAL], "dsb": [val[k] for k in pick]}


def run_annotator(ed, true: np.ndarray, max_clicks: int) -> dict:
    """The simulated annotator on ``ed`` (an Editor or a PerfectEditor) -> clicks spent, corrections by kind, the
    scores at each checkpoint and the median time per correction."""
    rows: dict[int, dict] = {}
    kinds: dict[str, int] = {}
    click_ms: list[float] = []
    last = [time.perf_counter()]

    def on_click(clicks, c):
        if c is not None:
            click_ms.append((time.perf_counter() - last[0]) * 1000)
            kinds[c.kind] = kinds.get(c.kind, 0) + 1
        for k in CHECKPOINTS:
            if k not in rows and clicks >= k and k <= max_clicks:
                s = instance_scores(true, ed.labels)
                rows[k] = {"aji": s.aji, "pq": s.pq, "clicks": clicks, "n_pred": s.n_pred}
        last[0] = time.perf_counter()

    spent = annotate(ed, true, max_clicks, on_click)
    final = instance_scores(true, ed.labels)
    for k in (k for k in CHECKPOINTS if k <= max_clicks):  # nothing left to fix before K: the final state
        rows.setdefault(k, {"aji": final.aji, "pq": final.pq, "clicks": spent, "n_pred": final.n_pred})
    return {"clicks_spent": spent, "corrections": kinds,
            "median_correction_ms": float(np.median(click_ms)) if click_ms else None,
            "at": {str(k): rows[k] for k in sorted(rows)}, "n_true": final.n_true}


def correct_image(model, image: np.ndarray, true: np.ndarray, max_clicks: int, editors: list[str]) -> dict:
    """Per editor (``model``: the Editor; ``perfect``: the PerfectEditor from the same automatic labels) the
    annotator's run from the automatic segmentation."""
    t0 = time.perf_counter()
    ed = Editor(model, image, embed="model" in editors)
    out: dict = {"auto_seconds": round(time.perf_counter() - t0, 2), "scale": ed.result().settings.get("scale")}
    if "perfect" in editors:
        out["perfect"] = run_annotator(PerfectEditor(ed.labels, true), true, max_clicks)
    if "model" in editors:
        out.update(run_annotator(ed, true, max_clicks))
        out["new_windows"] = ed.windows.encoded
    return out


def latency(model, image: np.ndarray, true: np.ndarray, n: int, seed: int) -> dict:
    ed = Editor(model, image)
    ids = np.unique(true)
    ids = ids[ids > 0]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(ids, size=n, replace=n > len(ids))
    load0 = os.getloadavg()
    ms, new_window = [], []
    for i in chosen:
        x, y = interior_point(true == i)
        before = ed.windows.encoded
        t0 = time.perf_counter()
        ed.add(x, y)
        ms.append((time.perf_counter() - t0) * 1000)
        new_window.append(ed.windows.encoded > before)
    ms_a, nw = np.array(ms), np.array(new_window)
    cached = ms_a[~nw]
    return {"clicks": n, "median_ms": float(np.median(ms_a)), "p95_ms": float(np.percentile(ms_a, 95)),
            "mean_ms": float(ms_a.mean()), "clicks_with_new_window": int(nw.sum()),
            "median_ms_cached_window": float(np.median(cached)) if cached.size else None,
            "p95_ms_cached_window": float(np.percentile(cached, 95)) if cached.size else None,
            "engine": ed.engine.name if hasattr(ed.engine, "name") else None,
            "embedding_cache_mib": round(ed.windows.nbytes() / 2**20, 1),
            "loadavg_before": load0, "loadavg_after": os.getloadavg()}


def summarise(images: dict) -> dict:
    """Mean AJI / PQ / clicks per checkpoint over ``images`` (each an annotator run's result)."""
    out: dict = {}
    ks = [k for k in CHECKPOINTS if all(str(k) in v["at"] for v in images.values())]
    for k in ks:
        at = [v["at"][str(k)] for v in images.values()]
        out[str(k)] = {"aji": float(np.mean([a["aji"] for a in at])), "pq": float(np.mean([a["pq"] for a in at])),
                       "mean_clicks": float(np.mean([a["clicks"] for a in at]))}
    ajis = [out[str(k)]["aji"] for k in ks]
    out["aji_gain_at_20"] = out["20"]["aji"] - out["0"]["aji"] if "20" in out else None
    out["aji_rises_every_step"] = bool(all(b > a for a, b in zip(ajis, ajis[1:], strict=False)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=HERE.parent.parent / "shared" / "data")
    ap.add_argument("--model", default="default")
    ap.add_argument("--sets", nargs="*", default=["monuseg", "dsb"], choices=["monuseg", "dsb"],
                    help="sets to correct (none: only the latency run)")
    ap.add_argument("--dsb", type=int, default=20, help="DSB val images (fixed seeded subset)")
    ap.add_argument("--editors", nargs="+", default=["model", "perfect"], choices=["model", "perfect"],
                    help="model: the Editor; perfect: corrections applied exactly from the ground truth (the ceiling)")
    ap.add_argument("--clicks", type=int, default=max(CHECKPOINTS))
    ap.add_argument("--latency", type=int, default=200, help="clicks of the latency run (0: skip)")
    ap.add_argument("--limit", type=int, default=None, help="first K images per set (quick checks)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "clicks_correct.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.model)
    head = getattr(model.module, "object_decoder", None) is not None
    folder = Path(model.info.get("folder", ""))
    weights = folder / "model.safetensors"
    sha = hashlib.sha256(weights.read_bytes()).hexdigest() if weights.is_file() else None
    result = {"command": "benchmarks/clicks_correct.py " + " ".join(sys.argv[1:]), "model": model.info,
              "model_sha256": sha, "interactive_head": head, "checkpoints": CHECKPOINTS, "dsb_subset": args.dsb,
              "seed": args.seed,
              "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch threads {args.threads}",
              "loadavg_start": os.getloadavg(), "sets": {}}
    items = sets(args.data, args.dsb, args.seed)

    def save():
        atomic_write_text(args.out, json.dumps(result, indent=2, default=float) + "\n")

    for name in args.sets:
        per_image = {}
        for pid, img_path, lab_path in items[name][: args.limit]:
            per_image[pid] = correct_image(model, read_image(img_path), read_labels(lab_path), args.clicks,
                                           args.editors)
            for ed in args.editors:
                at = (per_image[pid] if ed == "model" else per_image[pid][ed])["at"]
                print(name, pid, ed, " ".join(f"K={k}: AJI {v['aji']:.3f}" for k, v in at.items()), flush=True)
            result["sets"][name] = {"images": per_image}
            if "model" in args.editors:
                result["sets"][name]["summary"] = summarise(per_image)
            if "perfect" in args.editors:
                result["sets"][name]["summary_perfect"] = summarise({k: v["perfect"] for k, v in per_image.items()})
            save()
        print(name, json.dumps({k: v for k, v in result["sets"][name].items() if k != "images"}), flush=True)
    if args.latency:
        pid, img_path, lab_path = items["monuseg"][0]
        result["latency"] = {"image": pid, **latency(model, read_image(img_path), read_labels(lab_path),
                                                     args.latency, args.seed)}
        print("latency", json.dumps(result["latency"]), flush=True)
    result["loadavg_end"] = os.getloadavg()
    save()


if __name__ == "__main__":
    main()
