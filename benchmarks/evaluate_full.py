"""Full-image evaluation of a trained model on a split or on the held-out ids of a run (MoNuSeg has no val split).

The loop is ``sac evaluate --model``'s (:func:`sac.inference.evaluate.evaluate_model`: ``Segmenter`` tiling,
prompts, stitching, watershed instances; ``sac.evaluation.report``), with what ``sac evaluate`` does not expose:

* ``--ids-from RUN/splits.json``: score only the images a run held out for validation;
* ``--unet``: also score the prompt generator alone (``prompt_prob > 0.5`` -> the same instance step): the
  "UNet alone" row of paper Table 1 from the very same forward passes; and the mean of the two probability
  maps ("fused": SAM mask and UNet averaged, then the same threshold and instance step);
* ``--save-maps DIR``: keep each image's stitched maps (``<id>.npz``: prob, prompt_prob, distance as float16) for
  post-hoc analysis without rerunning the model.

    .venv/bin/python benchmarks/evaluate_full.py --model runs/goal --data ../shared/data/monuseg --split train \\
        --ids-from runs/goal/splits.json --unet --out benchmarks/results/goal_monuseg_heldout.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from pathlib import Path

from sac.atomic import atomic_write_text

# Image embeddings per (encoder, input tile): prompt settings (points, experts, selection) and models that share a
# frozen encoder (zero-shot SAM, SAM-FT) reuse them across the rows of a table in one process. The encoder is
# deterministic, so a hit returns exactly what a fresh forward would (kept in float32 for that reason).
_EMB_CACHE: dict[tuple, object] = {}


def _encoder_kind(loaded) -> tuple:
    """Rows with equal kinds have identical image encoders: a frozen backbone is shared, a LoRA one is not."""
    module = loaded.module
    if module.cfg.lora.enabled:
        return ("lora", str(loaded.info))
    return ("frozen", module.backbone_name, module.backbone_sha256)


def _memo_encoder(encoder, kind: tuple):
    def encode(x):
        key = (kind, tuple(x.shape), hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest())
        hit = _EMB_CACHE.get(key)
        if hit is None:
            hit = _EMB_CACHE[key] = encoder(x)
        return hit
    return encode


def held_out_ids(splits_json: Path, data: Path, split: str) -> list[str] | None:
    """Ids that ``splits.json`` lists as validation images of ``data``/``split`` (None if not listed)."""
    rec = json.loads(Path(splits_json).read_text())
    for v in rec["val"]:
        if Path(v["root"]).resolve() == Path(data).resolve() and v["split"] == split:
            return list(v["ids"])
    return None


def evaluate(model: str, data: Path, split: str, ids: list[str] | None = None, *, points: int | None = None,
             expert: int = 0, select: str | None = None, unet: bool = False, seed: int = 0,
             limit: int | None = None, progress: bool = True, unet_only: bool = False,
             save_maps: Path | None = None, scale: float = 1.0, overlap: int | None = None,
             tta: int = 1, split_h: float | None = None, expert_mode: str = "edit", sam: str = "all") -> dict:
    """Score ``model`` on whole images with :func:`sac.inference.evaluate.evaluate_model`; returns
    {"sac": score dict, "unet": score dict (if asked), "fused": score dict (with unet), seconds_per_image, settings}.

    ``unet_only``: score only the prompt UNet and skip the SAM image encoder (it is replaced by zeros, which the
    UNet never sees), ~10x faster for a UNet-alone model; no "sac" entry then. ``sam``: ``all`` (SAM's mask on every
    window: the paper's method, which the paper tables here measure) or another ``InferenceConfig.sam``."""
    import torch

    from sac.inference.api import load_model
    from sac.inference.config import InferenceConfig
    from sac.inference.evaluate import evaluate_model

    torch.set_num_threads(int(os.environ.get("SAC_THREADS", "2")))
    cfg = InferenceConfig(n_points=points, select=select, seed=seed, scale=scale, overlap=overlap, tta=tta,
                          split_h=split_h, sam=sam)
    loaded = load_model(model)
    seg = loaded.segmenter(cfg.validate())
    if os.environ.get("SAC_EMB_CACHE", "1") != "0":
        seg.engine.encode = _memo_encoder(seg.engine.encode, _encoder_kind(loaded))
    if unet_only:
        pe = loaded.module.prompt_encoder
        seg.engine.encode = lambda x: torch.zeros(len(x), pe.embed_dim, *pe.image_embedding_size)
    rows = ("unet",) if unet_only else ("sac", "unet", "fused") if unet else ("sac",)
    res = evaluate_model(loaded, data, split, cfg, ids=ids, limit=limit, expert=expert, rows=rows,
                         expert_mode=expert_mode, save_maps=save_maps, segmenter=seg, progress=progress)
    out = {"sac": None if unet_only else {k: v for k, v in res.items() if k not in (*rows, "seconds_per_image",
                                                                                    "seconds_total", "settings")},
           "seconds_per_image": res["seconds_per_image"], "settings": res["settings"]}
    out["settings"].pop("limit", None)
    out.update({name: res[name] for name in ("unet", "fused") if name in res})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="model folder or run folder")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--ids-from", type=Path, default=None, help="a run's splits.json: score its held-out ids only")
    ap.add_argument("--points", type=int, default=None)
    ap.add_argument("--expert", type=int, default=0)
    ap.add_argument("--select", default=None)
    ap.add_argument("--unet", action="store_true", help="also score the prompt UNet alone")
    ap.add_argument("--unet-only", action="store_true", help="score only the prompt UNet (skips the SAM encoder)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--save-maps", type=Path, default=None, help="folder for each image's stitched maps (.npz)")
    ap.add_argument("--scale", type=float, default=1.0, help="as sac segment --scale")
    ap.add_argument("--overlap", type=int, default=None, help="as sac segment --overlap (model pixels)")
    ap.add_argument("--tta", type=int, default=1, choices=(1, 2, 4), help="as sac segment --tta (default 1: off)")
    ap.add_argument("--split-h", type=float, default=None, help="as sac segment --split-h")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    ids = held_out_ids(args.ids_from, args.data, args.split) if args.ids_from else None
    t0 = time.time()
    res = evaluate(args.model, args.data, args.split, ids, points=args.points, expert=args.expert,
                   select=args.select, unet=args.unet, limit=args.limit, unet_only=args.unet_only,
                   save_maps=args.save_maps, scale=args.scale, overlap=args.overlap, tta=args.tta,
                   split_h=args.split_h)
    res["wall_seconds"] = round(time.time() - t0, 1)
    res["command"] = "python benchmarks/evaluate_full.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v not in (None, False, True)
    ) + "".join(f" --{k.replace('_', '-')}" for k in ("unet", "unet_only") if getattr(args, k))
    res["machine"] = f"{platform.machine()}, {os.cpu_count()} cpus"
    atomic_write_text(args.out, json.dumps(res, indent=2, default=float) + "\n")
    for name in ("sac", "unet", "fused"):
        if res.get(name):
            r = res[name]
            print(f"{name:5s} dice {r['dice']:.4f} (pooled {r['dice_pooled']:.4f}) iou {r['iou']:.4f} "
                  f"aji {r['aji']:.4f} pq {r['pq']:.4f}  n={r['n_images']}")


if __name__ == "__main__":
    main()
