"""Accuracy (and time) of whole-image inference per engine and per work-saving setting, on the validation sets.

Each variant segments MoNuSeg's 6 hold-out images (scale 1) and/or DSB val (67) through
:func:`sac.inference.evaluate.evaluate_model` -- the code path of `sac evaluate --model` -- and records Dice, AJI,
PQ, seconds per image, and the share of windows the SAM encoder + decoder ran on (``cfg.sam_uncertain``).

    nice -n 10 .venv/bin/python benchmarks/engine_accuracy.py --variants torch,openvino_f32 --sets monuseg,dsb \\
        --out benchmarks/results/engine_accuracy.json

Results are merged into ``--out`` (variant x set), so variants can be run in several calls. Timings are taken on
a shared 2-core machine: the load average is recorded with each row.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAC_DATA", REPO.parent / "shared" / "data"))
MONUSEG_VAL = ("TCGA-21-5784-01Z-00-DX1", "TCGA-AR-A1AK-01Z-00-DX1", "TCGA-B0-5710-01Z-00-DX1",
               "TCGA-B0-5711-01Z-00-DX1", "TCGA-HE-7128-01Z-00-DX1", "TCGA-KB-A93J-01A-01-TS1")
SETS = {"monuseg": ("monuseg", "train", MONUSEG_VAL), "dsb": ("dsb2018", "val", None)}
# name -> (engine, OpenVINO encoder precision, InferenceConfig overrides); all at scale 1. "default" is the shipped
# settings; the others pin sam / tta so that they mean the same whatever the defaults are.
_BEFORE = {"sam": "all", "tta": 1}  # the automatic path before issue 13: SAM on every window, no flips
VARIANTS = {
    "default": ("auto", "bf16", {}),  # main() sets the engine module's precision
    "default_tta4": ("auto", "bf16", {"tta": 4}),  # the default before 2 flips (all 4 mirror images)
    "default_tta1": ("auto", "bf16", {"tta": 1}),
    "torch": ("torch", "f32", _BEFORE),
    "onnxruntime": ("onnxruntime", "f32", _BEFORE),
    "openvino_f32": ("openvino", "f32", _BEFORE),
    "openvino_bf16": ("openvino", "bf16", _BEFORE),
    "openvino_bf16_overlap8": ("openvino", "bf16", {**_BEFORE, "overlap": 8}),
    "openvino_f32_overlap8": ("openvino", "f32", {**_BEFORE, "overlap": 8}),
    "openvino_f32_tta": ("openvino", "f32", {"sam": "all", "tta": 4}),
    "openvino_f32_sam_nuclei": ("openvino", "f32", {"sam": "uncertain", "sam_uncertain": 0.0, "tta": 1}),
    "openvino_f32_sam_u05": ("openvino", "f32", {"sam": "uncertain", "sam_uncertain": 0.05, "tta": 1}),
    "openvino_f32_sam_u10": ("openvino", "f32", {"sam": "uncertain", "sam_uncertain": 0.10, "tta": 1}),
    "openvino_f32_sam_u15": ("openvino", "f32", {"sam": "uncertain", "sam_uncertain": 0.15, "tta": 1}),
    "openvino_f32_sam_u20": ("openvino", "f32", {"sam": "uncertain", "sam_uncertain": 0.20, "tta": 1}),
    "openvino_f32_sam_u30": ("openvino", "f32", {"sam": "uncertain", "sam_uncertain": 0.30, "tta": 1}),
    "openvino_f32_sam_never": ("openvino", "f32", {"sam": "prompts", "tta": 1}),
    "openvino_f32_sam_never_tta": ("openvino", "f32", {"sam": "prompts", "tta": 4}),
    "openvino_f32_sam_never_tta_overlap8": ("openvino", "f32", {"sam": "prompts", "tta": 4, "overlap": 8}),
}
KEYS = ("dice", "aji", "aji_plus", "pq", "n_images")


def run_variant(loaded, name: str, set_name: str) -> dict:
    import torch

    from sac.inference import engine as E
    from sac.inference.config import InferenceConfig
    from sac.inference.evaluate import evaluate_model
    from sac.inference.segmenter import Segmenter

    engine, precision, overrides = VARIANTS[name]
    E.ENCODER_PRECISION = precision
    cfg = InferenceConfig(scale=1.0, engine=engine, **overrides)
    seg = Segmenter(loaded.module, cfg)
    assert engine == "auto" or seg.engine.name == engine, f"{engine} fell back to {seg.engine.name}: {seg.engine.note}"
    folder, split, ids = SETS[set_name]
    t = time.perf_counter()
    res = evaluate_model(loaded, DATA / folder, split, cfg, ids=ids, segmenter=seg, progress=False)
    return {**{k: res[k] for k in KEYS}, "seconds_per_image": round(res["seconds_per_image"], 3),
            "wall_s": round(time.perf_counter() - t, 1), "windows": seg.windows_run[0],
            "sam_windows": seg.windows_run[1], "engine": seg.engine.name, "precision": E.ENCODER_PRECISION,
            "overrides": overrides, "threads": torch.get_num_threads(), "loadavg": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--sets", default="monuseg,dsb")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "engine_accuracy.json")
    args = ap.parse_args()
    import torch

    from sac.inference import engine as E
    from sac.inference.api import load_model

    VARIANTS["default"] = ("auto", E.ENCODER_PRECISION, {})  # the shipped precision, before any variant sets it

    torch.set_num_threads(2)
    loaded = load_model("default")
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    for name in args.variants.split(","):
        for set_name in args.sets.split(","):
            row = run_variant(loaded, name, set_name)
            results.setdefault(name, {})[set_name] = row
            print(name, set_name, json.dumps(row), flush=True)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
