"""Shared setup of the paper-table scripts: the evaluation sets, the trained models, resumable result files.

Evaluation sets (whole images, ``benchmarks/evaluate_full.py``): ``monuseg`` = the 6 MoNuSeg train images held
out by the SAC run (``RUNS/goal/splits.json``, seed 0), ``dsb`` = DSB 2018 val (67 images). Models: ``RUNS/goal-unet``
(UNet alone), ``RUNS/goal`` (SAC), ``RUNS/sam-ft`` (SAM-FT), ``sam`` (zero-shot LiteMedSAM), as trained by
``benchmarks/train_models.sh``. Each row is written to the JSON as soon as it is measured and skipped when the
script is rerun, so an interrupted table resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from sac.atomic import atomic_write_text

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KEYS = ("dice", "iou", "f1", "dice_pooled", "aji", "pq", "object_f1", "n_images")


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--runs", type=Path, default=REPO / "runs", help="folder holding goal-unet/, goal/, sam-ft/")
    ap.add_argument("--sets", nargs="+", default=["monuseg", "dsb"], choices=["monuseg", "dsb"])
    ap.add_argument("--limit", type=int, default=None, help="first K images per set (quick checks)")
    ap.add_argument("--models", nargs="+", default=None,
                    help="run only the rows of these models (goal, goal-mp, goal-dh, goal-unet, sam-ft, sam); "
                         "default all")
    ap.add_argument("--save-maps", type=Path, default=None,
                    help="keep each row's stitched probability maps in SAVE_MAPS/<row>/<id>.npz")
    return ap


def eval_set(args, name: str) -> tuple[Path, str, list[str] | None]:
    """(data root, split, ids or None) of evaluation set ``name``."""
    from evaluate_full import held_out_ids

    if name == "monuseg":
        root = args.data / "monuseg"
        return root, "train", held_out_ids(args.runs / "goal" / "splits.json", root, "train")
    return args.data / "dsb2018", "val", None


def model_path(args, model: str) -> str:
    return model if model == "sam" else str(args.runs / model)


class Table:
    """Rows of one table in ``benchmarks/results/<name>.json``, measured once each."""

    def __init__(self, name: str, command: str):
        self.path = HERE / "results" / f"{name}.json"
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"rows": {}}
        self.data.update({"command": command, "machine": f"{platform.machine()}, {os.cpu_count()} cpus"})

    def has(self, key: str) -> bool:
        return key in self.data["rows"]

    def put(self, key: str, row: dict) -> None:
        self.data["rows"][key] = row
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=float) + "\n")
        print(f"{key:45s} " + " ".join(f"{k} {row[k]:.4f}" for k in ("dice", "iou", "f1", "aji", "pq") if k in row))


def run_eval(args, table: Table, key: str, model: str, set_name: str, *, unet_key: str | None = None, **kw) -> None:
    """Evaluate ``model`` on ``set_name`` with settings ``kw`` (points, expert, select) into row ``key``
    (and the UNet-alone score of the same pass into ``unet_key``, the mean of both maps into ``key + " (fused)"``).
    Image embeddings are reused across rows (``evaluate_full._EMB_CACHE``)."""
    from evaluate_full import evaluate

    if table.has(key) and (unet_key is None or table.has(unet_key)):
        return
    if getattr(args, "models", None) and model not in args.models:
        return
    root, split, ids = eval_set(args, set_name)
    t0 = time.time()
    maps = None
    if getattr(args, "save_maps", None) is not None:
        maps = args.save_maps / "".join(c if c.isalnum() or c in "-_" else "_" for c in key)
    res = evaluate(model_path(args, model), root, split, ids, unet=unet_key is not None, limit=args.limit,
                   progress=False, save_maps=maps, **kw)
    common = {"model": model, "set": set_name, "settings": res["settings"],
              "seconds_per_image": res["seconds_per_image"], "wall_seconds": round(time.time() - t0, 1)}
    if kw.get("unet_only"):  # a UNet-alone model: the prompt generator's own instances are the row
        table.put(key, {**{k: res["unet"][k] for k in KEYS}, **common, "note": "prompt UNet alone"})
        return
    table.put(key, {**{k: res["sac"][k] for k in KEYS}, **common})
    if unet_key is not None and "unet" in res:
        table.put(unet_key, {**{k: res["unet"][k] for k in KEYS}, **common, "note": "prompt UNet alone"})
    if res.get("fused"):
        table.put(f"{key} (fused)", {**{k: res["fused"][k] for k in KEYS}, **common,
                                     "note": "mean of the SAM mask and UNet probabilities, same threshold"})
