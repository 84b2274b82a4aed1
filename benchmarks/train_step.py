"""Seconds per training step of each variant and CPU switch (the CPU-practical recipe, docs/training.md).

Runs the real ``SACLitModule.training_step`` + ``backward`` + ``AdamW.step`` on a fixed batch of real
256x256 crops (MoNuSeg + DSB, ``CropDataset``), LiteMedSAM backbone, and records the median of ``--repeat``
steps after one warm-up step. Also times a validation forward per crop with and without the frozen-prefix
cache. Writes ``benchmarks/results/train_step.json``.

    .venv/bin/python benchmarks/train_step.py [--data ../shared/data] [--batch 4] [--repeat 3] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from sac.atomic import atomic_write_text

CASES = {
    # name: (TrainConfig overrides, description)
    "sac_naive": (dict(variant="sac", channels_last=False, frozen_prefix_no_grad=False),
                  "paper: LoRA all 10 layers + decoder + UNet; plain forward"),
    "sac_channels_last": (dict(variant="sac", channels_last=True, frozen_prefix_no_grad=False),
                          "+ channels_last encoder input"),
    "sac_cl_nograd": (dict(variant="sac", channels_last=True, frozen_prefix_no_grad=True),
                      "+ no_grad for the frozen prefix (conv stage 0)"),
    "sac_lora_last4": (dict(variant="sac", lora_last_n_layers=4),
                       "LoRA only in the last 4 attention layers (+ channels_last, no_grad prefix)"),
    "sac_lora_last2": (dict(variant="sac", lora_last_n_layers=2),
                       "LoRA only in the last 2 attention layers (+ channels_last, no_grad prefix)"),
    "lora_noprompt": (dict(variant="lora-noprompt"), "LoRA all + decoder, no prompts (+ switches)"),
    "sam_ft": (dict(variant="sam-ft"), "decoder only, frozen encoder forward each step (+ switches)"),
    "sam_ft_cached": (dict(variant="sam-ft", crop_pool=True), "decoder only, image embeddings cached (epoch >= 2)"),
    "sac_pool_last2": (dict(variant="sac", lora_last_n_layers=2, crop_pool=True),
                       "LoRA last 2 layers, crop pool: frozen prefix cached (epoch >= 2)"),
    "sac_pool_last4": (dict(variant="sac", lora_last_n_layers=4, crop_pool=True),
                       "LoRA last 4 layers, crop pool: frozen prefix cached (epoch >= 2)"),
    "sac_pool_all": (dict(variant="sac", crop_pool=True),
                     "LoRA all layers, crop pool: conv stage 0 cached (epoch >= 2)"),
    "unet": (dict(variant="unet"), "prompt UNet alone (BCE + Dice)"),
    "sac_threads1": (dict(variant="sac", num_threads=1), "sac with switches, torch.set_num_threads(1)"),
}


def _batch(data: Path, size: int, n: int) -> dict:
    from sac.data.dataset import CropDataset

    ds = CropDataset(sources=[(data / "monuseg", "train"), (data / "dsb2018", "train")], crop_size=size,
                     length=n, seed=0, sampling="source")
    items = [ds[i] for i in range(n)]
    return {k: (torch.stack([it[k] for it in items]) if torch.is_tensor(items[0][k]) else [it[k] for it in items])
            for k in items[0]}


def time_case(name: str, batch: dict, repeat: int, threads: int) -> dict:
    overrides, desc = CASES[name]
    return {"description": desc, **time_config(overrides, batch, repeat, threads)}


def time_config(overrides: dict, batch: dict, repeat: int, threads: int) -> dict:
    """Median seconds of ``repeat`` training steps (after one untimed step) of ``TrainConfig(**overrides)``."""
    from sac.backbones import build_sac
    from sac.training.config import TrainConfig
    from sac.training.module import SACLitModule, sac_config

    cfg = replace(TrainConfig(), **overrides)
    torch.set_num_threads(cfg.num_threads or threads)
    torch.manual_seed(0)
    model = build_sac(sac_config(cfg))
    module = SACLitModule(cfg, model)
    module.train()
    opt = module.configure_optimizers()
    # crop_pool cases: the untimed warm-up step fills the prefix cache, timed steps hit it (= epoch >= 2)
    batch = {**batch, "index": torch.arange(len(batch["image"]))}
    times = []
    for i in range(repeat + 1):
        t = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = module.training_step(batch, i)
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    load = __import__("os").getloadavg()[0]
    counts = model.parameter_groups()
    return {"seconds_per_step": round(statistics.median(times), 3),
            "all_seconds": [round(t, 3) for t in times], "loss": float(loss), "threads": torch.get_num_threads(),
            "trainable": counts["trainable"], "encoder_prefix": module.encoder.prefix_fraction,
            "loadavg_1min": round(load, 2)}


def time_validation(batch: dict, threads: int) -> dict:
    """Validation forward (no grad) per crop: plain vs frozen-prefix cache hit, LoRA all layers."""
    from sac.backbones import build_sac
    from sac.training.config import TrainConfig
    from sac.training.module import SACLitModule, sac_config

    torch.set_num_threads(threads)
    cfg = TrainConfig()
    module = SACLitModule(cfg, build_sac(sac_config(cfg)))
    module.eval()
    keys = list(range(len(batch["image"])))
    out = {}
    for label, k in (("no_cache", None), ("cache_fill", keys), ("cache_hit", keys)):
        t = time.perf_counter()
        module.predict_crops(batch["image"], k)
        out[label] = round((time.perf_counter() - t) / len(keys), 3)
    return {"seconds_per_crop": out, "encoder_prefix": module.encoder.prefix_fraction}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", nargs="*", default=None, choices=list(CASES) + ["validation"])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_step.json")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    batch = _batch(args.data, 256, args.batch)
    out_path = args.out
    results = json.loads(out_path.read_text()) if out_path.is_file() else {}
    results.setdefault("cases", {})
    t0 = time.time()
    for name in args.only or list(CASES) + ["validation"]:
        r = time_validation(batch, args.threads) if name == "validation" else time_case(
            name, batch, args.repeat, args.threads)
        results["cases"][name] = r
        print(f"{name:18s} {json.dumps(r)}", flush=True)
        results.update({
            "command": "python benchmarks/train_step.py " + " ".join(
                f"--{k} {v}" for k, v in (("batch", args.batch), ("repeat", args.repeat), ("threads", args.threads))),
            "batch": args.batch, "crop": 256, "backbone": "litemedsam", "torch": torch.__version__,
            "machine": f"{platform.machine()} {platform.processor()}, {__import__('os').cpu_count()} cpus",
            "note": "median seconds of --repeat optimizer steps (forward+backward+AdamW) after 1 warm-up step; "
                    "the machine may have been shared with other processes (see docs/training.md)",
        })
        atomic_write_text(out_path, json.dumps(results, indent=2) + "\n")
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
