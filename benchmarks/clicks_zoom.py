"""One nucleus from one click in a click-centred window, zoomed (issue 11: does showing nuclei larger help?).

The same nuclei and first click as ``benchmarks/clicks_single.py`` (seeded sample per set, positive click at each
ground-truth nucleus's most interior pixel), but each nucleus is decoded in its own window: ``256 / z`` image pixels
centred on the click (shifted to stay inside the image), resampled to the model's 256 px input (bilinear,
antialiased), embedded and passed through the UNet; the interactive head decodes the click with the UNet's logits
as mask input, and its logits are resampled back to image pixels. ``z = 1`` isolates the effect of centring the
window from that of zooming. Reported per set and zoom: the head's raw ``logits > 0`` and the editor's first-click
rule (``honour_clicks`` then the piece under the click), mean IoU with the whole nucleus. One encoder pass per
nucleus: this is an accuracy probe, not the editor's cached path.

    .venv/bin/python benchmarks/clicks_zoom.py --zooms 1 2 --per-set 200 --out benchmarks/results/clicks_zoom.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clicks_single import load_sets, plan, window  # noqa: E402
from sac.atomic import atomic_write_text  # noqa: E402
from sac.inference.api import build_model  # noqa: E402
from sac.inference.editor import NEAR  # noqa: E402
from sac.inference.tiling import Tile  # noqa: E402
from sac.inference.windows import honour_clicks, pick_component  # noqa: E402

INPUT = 256


def centred(height: int, width: int, x: int, y: int, side: int) -> Tile:
    """The ``side`` px window centred on (x, y), shifted to stay inside a ``height x width`` image (clicks_single's
    ``window`` reflect-pads it where the image is smaller)."""
    x0 = max(0, min(round(x - side / 2), width - side)) if width >= side else 0
    y0 = max(0, min(round(y - side / 2), height - side)) if height >= side else 0
    return Tile(y0, x0, min(y0 + side, height), min(x0 + side, width), side)


@torch.inference_mode()
def one_click(model, img: np.ndarray, lab: np.ndarray, job: dict, zoom: float) -> tuple[float, float]:
    """IoU with the job's nucleus of the head's raw mask and of the editor's first-click rule."""
    side = round(INPUT / zoom)
    x, y = job["click"]
    tile = centred(*img.shape[:2], x, y, side)
    x0, y0, h, w = tile.x0, tile.y0, tile.y1 - tile.y0, tile.x1 - tile.x0
    t = window(img, tile)[None]
    if side != INPUT:
        t = F.interpolate(t, size=(INPUT, INPUT), mode="bilinear", antialias=True, align_corners=False)
    emb, unet = model.encode(t), model.prompt_logits(t)
    f = INPUT / side  # pixel centres map as (p + 0.5) * f - 0.5
    xy = torch.tensor([[[(x - x0 + 0.5) * f - 0.5, (y - y0 + 0.5) * f - 0.5]]], dtype=torch.float32)
    logits, _ = model.decode_object(emb, xy, torch.ones(1, 1, dtype=torch.long), None, unet)
    if side != INPUT:
        logits = F.interpolate(logits, size=(side, side), mode="bilinear", align_corners=False)
        unet = F.interpolate(unet, size=(side, side), mode="bilinear", align_corners=False)
    raw = (logits[0, 0, :h, :w] > 0).numpy()
    target = lab[y0:y0 + h, x0:x0 + w] == job["id"]
    area = int(np.count_nonzero(lab[job["slice"]] == job["id"]))

    def iou(pred: np.ndarray) -> float:
        inter = np.count_nonzero(pred & target)
        return inter / (np.count_nonzero(pred) + area - inter)

    cx, cy = x - x0, y - y0
    mask = honour_clicks(raw, [(float(cx), float(cy), 1)], torch.sigmoid(unet[0, 0, :h, :w]).numpy())
    piece = pick_component(mask, [(cx, cy)], NEAR)
    return iou(raw), iou(np.zeros_like(raw) if piece is None else piece)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="model with the interactive head (default: bundled)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--zooms", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--per-set", type=int, default=200, help="nuclei sampled per set (clicks_single.py's sample)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "clicks_zoom.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = build_model(args.model)[0].eval()
    if model.object_decoder is None:
        raise SystemExit(f"--model {args.model} has no interactive head (object_decoder)")
    sets = load_sets(Path(args.data))
    rows = {}
    for name, p in plan(sets, args.per_set or None, args.seed).items():
        for zoom in args.zooms:
            t0 = time.time()
            ious = np.array([one_click(model, sets[name][j["image"]][1], sets[name][j["image"]][2], j, zoom)
                             for j in p["jobs"]])
            rows[f"{name} zoom {zoom:g}"] = {"raw_iou@1": round(float(ious[:, 0].mean()), 4),
                                             "editor_iou@1": round(float(ious[:, 1].mean()), 4),
                                             "n_nuclei": len(ious), "seconds": round(time.time() - t0, 1),
                                             "loadavg": list(os.getloadavg())}
            print(name, zoom, rows[f"{name} zoom {zoom:g}"], flush=True)
    out = {"rows": rows, "command": "benchmarks/clicks_zoom.py " + " ".join(
        f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
        for k, v in vars(args).items() if k not in ("data", "out"))}
    atomic_write_text(Path(args.out), json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
