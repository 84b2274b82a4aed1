"""One nucleus from clicks (issue 11): a simulated annotator segments single nuclei with 1..5 clicks.

Per set (the 6 held-out MoNuSeg training images, DSB val), for each sampled ground-truth nucleus:

1. first click: positive, at the nucleus's most interior pixel (maximum of its distance transform,
   :func:`sac.evaluation.clicks.interior_point`); the ``box`` rows start from the nucleus's bounding box instead;
2. up to 4 more clicks, each at the most interior pixel of the largest error region of the previous mask
   (positive in a missed region, negative in an extra one; :func:`~sac.evaluation.clicks.correction_click`),
   all earlier clicks kept and the previous mask logits given as SAM's mask input (interactive head);
3. IoU of ``logits > 0`` with the whole nucleus after 1, 2, 3 and 5 clicks (a nucleus predicted perfectly keeps
   its mask; no further click).

Embeddings are cached as in the editor: each image is tiled with the default 256 px windows (overlap 32, scale 1),
each window embedded once per model, and each nucleus decoded in the window in which its first click lies
farthest from a window side inside the image. The interactive head's first round gets the UNet's logits of that
window as mask input (``head-click-nomask``: without it). Rows: the interactive head (``SAC.decode_object`` of a
model with ``object_decoder``) with a click and with a box; zero-shot LiteMedSAM (``"sam"``: its pretrained
decoder, no mask input) with a click and with a box (anchor rows). ``--per-set N`` samples N nuclei per set
(seeded; the same nuclei for every row run with the same seed: a smaller N takes a prefix of the same order).
Rows are merged into an existing results file.

Latency (``--latency N``): N single-click ``decode_object`` calls (one prompt set, embedding and UNet logits
cached) on the MoNuSeg 1000 x 1000 images, median and p95 in ms, with the load average (shared machine).

    .venv/bin/python benchmarks/clicks_single.py --model runs/interactive --rows head-click head-box \\
        --per-set 300 --latency 200
    .venv/bin/python benchmarks/clicks_single.py --rows sam-click sam-box --per-set 150
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from sac.atomic import atomic_write_text
from sac.data.io import list_pairs, read_image, read_labels
from sac.evaluation.clicks import box_of, correction_click, interior_point
from sac.inference.api import build_model
from sac.inference.editor import NEAR
from sac.inference.tiling import Tile, make_tiles
from sac.inference.windows import box_mask, honour_clicks, largest_component, pick_component
from sac.models.refiner import refine_crop

MONUSEG_VAL = ("TCGA-21-5784-01Z-00-DX1", "TCGA-AR-A1AK-01Z-00-DX1", "TCGA-B0-5710-01Z-00-DX1",
               "TCGA-B0-5711-01Z-00-DX1", "TCGA-HE-7128-01Z-00-DX1", "TCGA-KB-A93J-01A-01-TS1")
ROWS = {  # row -> (model key, first prompt)
    "head-click": ("head", "click"), "head-box": ("head", "box"), "head-click-nomask": ("head", "click-nomask"),
    # correction rounds with the UNet logits (or nothing) as mask input instead of the previous round's logits
    "head-click-refine-unet": ("head", "click-refine-unet"), "head-click-refine-none": ("head", "click-refine-none"),
    "sam-click": ("sam", "click"), "sam-box": ("sam", "box"),
    # what Editor.add / box / refine return: the first decoded mask made to obey its clicks, then the piece under
    # them; the corrections threshold the mean of the decoder's and the UNet's logits first. With a click refiner
    # in the model (SAC.refiner), every mask but a box's first goes through it before that mean
    "head-click-product": ("head", "click", "product"), "head-box-product": ("head", "box", "product"),
    # the box with a positive click at its centre, as the head was trained (a box always came with an inside click)
    "head-boxc-product": ("head", "box-centre", "product"),
    # ... and every correction kept inside the box grown to the positive clicks (the first mask only: "product")
    "head-boxc-clip-product": ("head", "box-centre-clip", "product"),
    # the product's click path: corrections kept inside the first mask's box grown to the positive clicks
    "head-click-clip-product": ("head", "click-clip", "product"),
    # ablations: the editor's rule without that mean, and with it from the first click on
    "head-click-editor": ("head", "click", "editor"), "head-click-fused": ("head", "click", "fused"),
}
CLICKS = 5
REPORT = (1, 2, 3, 5)
TILE, OVERLAP = 256, 32
CHUNK = 24  # prompt sets per decoder call (memory: ~16 MB of repeated embedding each)


def load_sets(root: Path) -> dict[str, list[tuple[str, np.ndarray, np.ndarray]]]:
    mon = {i: (p, q) for i, p, q in list_pairs(root / "monuseg", "train")}
    sets = {"monuseg_val6": [(i, read_image(mon[i][0]), read_labels(mon[i][1]).astype(np.int32)) for i in MONUSEG_VAL]}
    sets["dsb2018_val"] = [(i, read_image(p), read_labels(q).astype(np.int32))
                           for i, p, q in list_pairs(root / "dsb2018", "val")]
    return sets


def clearance(tile: Tile, x: int, y: int, h: int, w: int) -> float:
    """Distance of pixel (x, y) to the nearest side of ``tile`` that lies inside the image (the editor's rule)."""
    d = np.inf
    if tile.x0 > 0:
        d = min(d, x - tile.x0 + 0.5)
    if tile.y0 > 0:
        d = min(d, y - tile.y0 + 0.5)
    if tile.x0 + tile.size < w:
        d = min(d, tile.x0 + tile.size - x - 0.5)
    if tile.y0 + tile.size < h:
        d = min(d, tile.y0 + tile.size - y - 0.5)
    return d


def plan(sets: dict, per_set: int | None, seed: int) -> dict[str, list[dict]]:
    """Per set: the sampled nuclei, each ``{image, id, click (x, y), tile, box}`` (image pixels)."""
    out = {}
    for name, images in sets.items():
        jobs = []
        for k, (_, _, lab) in enumerate(images):
            h, w = lab.shape
            tiles = make_tiles(h, w, TILE, OVERLAP)
            for nid, sl in enumerate(ndimage.find_objects(lab), start=1):
                if sl is None:
                    continue
                m = lab[sl] == nid
                if not m.any():
                    continue
                cx, cy = interior_point(m)
                x, y = cx + sl[1].start, cy + sl[0].start
                inside = [t for t in tiles if t.x0 <= x < t.x1 and t.y0 <= y < t.y1]
                tile = max(inside, key=lambda t, x=x, y=y: clearance(t, x, y, h, w))
                x0, y0, x1, y1 = box_of(m)
                jobs.append({"image": k, "id": nid, "click": (x, y), "tile": tile, "slice": sl,
                             "box": (x0 + sl[1].start, y0 + sl[0].start, x1 + sl[1].start, y1 + sl[0].start)})
        order = np.random.default_rng(seed).permutation(len(jobs))
        out[name] = {"total": len(jobs), "jobs": [jobs[i] for i in order[:per_set]]}
    return out


def window(img: np.ndarray, tile: Tile) -> torch.Tensor:
    """The window as the segmenter builds it at scale 1: reflect-padded to the tile, ``float32 [3, S, S]``."""
    region = img[tile.y0:tile.y1, tile.x0:tile.x1]
    h, w = region.shape[:2]
    if h < tile.size or w < tile.size:
        region = np.pad(region, ((0, tile.size - h), (0, tile.size - w), (0, 0)),
                        mode="reflect" if min(h, w) > 1 else "edge")
    return torch.from_numpy(np.ascontiguousarray(region)).permute(2, 0, 1).float() / 255.0


class Windows:
    """Embeddings (and UNet logits) of each window, computed once per model."""

    def __init__(self, model, images):
        self.model, self.images, self.cache = model, images, {}

    @torch.inference_mode()
    def get(self, k: int, tile: Tile) -> tuple[torch.Tensor, torch.Tensor | None]:
        if (k, tile) not in self.cache:
            x = window(self.images[k][1], tile)[None]
            emb = self.model.encode(x)
            unet = self.model.prompt_logits(x) if self.model.prompt_generator is not None else None
            self.cache[(k, tile)] = (emb, unet)
        return self.cache[(k, tile)]


@torch.inference_mode()
def run_row(model, wins: Windows, images, jobs: list[dict], first: str, post: str | None = None) -> np.ndarray:
    """IoU after each of the CLICKS rounds for every job -> ``float [n_jobs, CLICKS]``. ``post``: None (the
    decoder's ``logits > 0`` over the window), ``editor`` (obey the clicks, keep the piece under them), ``fused``
    (``editor`` on the mean of the decoder's and the UNet's logits) or ``product`` (what
    :class:`~sac.inference.editor.Editor` does: ``editor`` for the first prompt, ``fused`` for corrections)."""
    ious = np.zeros((len(jobs), CLICKS))
    refiner = getattr(model, "refiner", None) is not None
    groups: dict = {}
    for j, job in enumerate(jobs):
        groups.setdefault((job["image"], job["tile"]), []).append(j)
    for (k, tile), idx in groups.items():
        emb, unet = wins.get(k, tile)
        lab = images[k][2]
        h, w = tile.y1 - tile.y0, tile.x1 - tile.x0
        targets = [lab[tile.y0:tile.y1, tile.x0:tile.x1] == jobs[j]["id"] for j in idx]
        areas = [int(np.count_nonzero(lab[jobs[j]["slice"]] == jobs[j]["id"])) for j in idx]
        origin = np.array([tile.x0, tile.y0], np.float32)
        boxes = [np.array(jobs[j]["box"], np.float32) - np.tile(origin, 2) for j in idx] if "box" in first else None
        if first == "box":
            pts = [[] for _ in idx]
        elif first.startswith("box-centre"):
            pts = [[((b[:2] + b[2:]) / 2, 1)] for b in boxes]
        else:
            pts = [[(np.array(jobs[j]["click"], np.float32) - origin, 1)] for j in idx]
        prev: list = [None] * len(idx)
        clip = list(boxes) if boxes is not None else [None] * len(idx)  # the box the product keeps a mask in
        active = list(range(len(idx)))
        for r in range(CLICKS):
            for c0 in range(0, len(active), CHUNK):
                part = active[c0:c0 + CHUNK]
                n = max(len(pts[p]) for p in part)
                coords = np.zeros((len(part), n, 2), np.float32)
                labels = np.full((len(part), n), -1, np.int64)
                for q, p in enumerate(part):
                    for t, (xy, lb) in enumerate(pts[p]):
                        coords[q, t], labels[q, t] = xy, lb
                bx = torch.from_numpy(np.stack([boxes[p] for p in part])) if boxes is not None else None
                if (r == 0 and first != "click-nomask") or (r > 0 and first == "click-refine-unet"):
                    mask_in = None if unet is None else unet.expand(len(part), -1, -1, -1)
                elif r == 0 or first == "click-refine-none":
                    mask_in = None
                else:
                    mask_in = torch.stack([prev[p] for p in part])
                logits, _ = model.decode_object(emb, torch.from_numpy(coords) if n else None,
                                                torch.from_numpy(labels) if n else None, bx, mask_in)
                for q, p in enumerate(part):
                    prev[p] = logits[q]
            still = []
            for p in active:
                z = prev[p][0, :h, :w]
                pred = (z > 0).numpy()
                if post is not None:
                    rule = post if post != "product" else "editor" if r == 0 else "fused"
                    if post == "product" and refiner and (r > 0 or not first.startswith("box")):
                        z = refined(model, images[k][1], tile, z, unet, pts[p])  # corrections: mean with the UNet
                    kept = post == "product" and (r == 0 or first.endswith("clip"))
                    pred = editor_mask(z, unet, pts[p], rule, h, w, clip[p] if kept else None)
                    if first == "click-clip" and r == 0 and pred.any():  # corrections stay in the first mask's box
                        yy, xx = np.nonzero(pred)
                        clip[p] = np.array([xx.min(), yy.min(), xx.max(), yy.max()], np.float32)
                inter = np.count_nonzero(pred & targets[p])
                ious[idx[p], r] = inter / (np.count_nonzero(pred) + areas[p] - inter)
                click = correction_click(pred, targets[p])
                if click is not None:
                    pts[p].append((np.array(click[:2], np.float32), click[2]))
                    still.append(p)
                else:  # perfect: the annotator stops; the IoU stays
                    ious[idx[p], r + 1:] = ious[idx[p], r]
            active = still
    return ious


def refined(model, img: np.ndarray, tile: Tile, z: torch.Tensor, unet: torch.Tensor | None, clicks: list
            ) -> torch.Tensor:
    """The head's logits ``z [h, w]`` of ``tile`` after the model's click refiner, as the editor applies it
    (:func:`sac.inference.windows.refine_logits`, scale 1): on the crop of :func:`~sac.models.refiner.refine_crop`."""
    h, w = z.shape
    x0, y0, size = refine_crop((z > 0).numpy(), np.array([xy for xy, _ in clicks], np.float64))
    sl = np.s_[y0:y0 + size, x0:x0 + size]
    pts = torch.tensor([(float(xy[0]) - x0, float(xy[1]) - y0, float(lb)) for xy, lb in clicks])
    out = z.clone()
    out[sl] = model.refiner.refine(window(img, tile)[:, :h, :w][(slice(None), *sl)], z[sl],
                                   None if unet is None else unet[0, 0, :h, :w][sl], pts)
    return out


def editor_mask(logits: torch.Tensor, unet: torch.Tensor | None, clicks: list, post: str, h: int, w: int,
                box: np.ndarray | None = None) -> np.ndarray:
    """The editor's rule (scale 1: window pixels are model pixels) on one decoded mask ``logits [S, S]``; with a
    ``box`` ``(x0, y0, x1, y1)`` (inclusive window pixels), kept inside it grown to the positive clicks, as
    :class:`~sac.inference.editor.Editor` does (``box_mask``)."""
    prob = None if unet is None else torch.sigmoid(unet[0, 0, :h, :w]).numpy()
    z = logits if post != "fused" or unet is None else (logits + unet[0, 0, :h, :w]) / 2
    pts = [(float(xy[0]), float(xy[1]), int(lb)) for xy, lb in clicks]
    mask = honour_clicks((z > 0).numpy(), pts, prob)
    if box is not None:
        mask &= box_mask(mask.shape, box, pts)
    seeds = [(x, y) for x, y, lb in pts if lb == 1]
    piece = pick_component(mask, seeds, NEAR) if seeds else largest_component(mask)
    return np.zeros((h, w), bool) if piece is None else piece


@torch.inference_mode()
def latency(model, wins: Windows, jobs: list[dict], n: int) -> dict:
    times = []
    for job in jobs[:n]:
        emb, unet = wins.get(job["image"], job["tile"])
        xy = torch.tensor([[[job["click"][0] - job["tile"].x0, job["click"][1] - job["tile"].y0]]], dtype=torch.float32)
        t0 = time.perf_counter()
        model.decode_object(emb, xy, torch.ones(1, 1, dtype=torch.long), None, unet)
        times.append(time.perf_counter() - t0)
    ms = np.array(times) * 1000
    return {"n_clicks": len(ms), "median_ms": round(float(np.median(ms)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "loadavg": list(os.getloadavg()),
            "torch_threads": torch.get_num_threads(),
            "what": "one decode_object call (1 click, UNet mask input), embedding cached, MoNuSeg 1000x1000"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="default", help="model with the interactive head (default: bundled)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    ap.add_argument("--sets", nargs="+", default=["monuseg_val6", "dsb2018_val"])
    ap.add_argument("--per-set", type=int, default=300, help="nuclei sampled per set (seeded); 0 = all")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--latency", type=int, default=0, help="time this many single clicks (head) on MoNuSeg")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-refiner", action="store_true",
                    help="product rows without the model's click refiner (the editor before it)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "clicks_single.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.time()
    sets = load_sets(Path(args.data))
    plans = plan(sets, args.per_set or None, args.seed)
    out_path = Path(args.out)
    result: dict = {"sets": {}}
    models = {}
    for row in args.rows:
        key = ROWS[row][0]
        if key not in models:
            models[key] = build_model(args.model if key == "head" else "sam")[0].eval()
            if key == "head" and models[key].object_decoder is None:
                raise SystemExit(f"--model {args.model} has no interactive head (object_decoder)")
            if args.no_refiner:
                models[key].refiner = None
    for name, p in plans.items():
        if name not in args.sets:
            continue
        entry = result["sets"].setdefault(name, {"rows": {}})
        entry["nuclei_total"] = p["total"]
        wins = {key: Windows(m, sets[name]) for key, m in models.items()}
        for row in args.rows:
            key, first, *post = ROWS[row]
            t1 = time.time()
            ious = run_row(models[key], wins[key], sets[name], p["jobs"], first, *post)
            entry["rows"][row] = {
                **{f"iou@{c}": round(float(ious[:, c - 1].mean()), 4) for c in REPORT},
                "n_nuclei": len(ious), "seconds": round(time.time() - t1, 1), "loadavg": list(os.getloadavg()),
                "model": args.model if key == "head" else "sam (zero-shot LiteMedSAM)",
                "refiner": getattr(models[key], "refiner", None) is not None,
            }
            print(name, row, entry["rows"][row], flush=True)
        if args.latency and name == "monuseg_val6" and "head" in models:
            result["latency"] = latency(models["head"], wins["head"], p["jobs"], args.latency)
            print("latency", result["latency"], flush=True)
    result["protocol"] = (f"first click at the nucleus's most interior pixel (or its bounding box), then up to "
                          f"{CLICKS - 1} correction clicks at the most interior pixel of the largest error region; "
                          f"{TILE}px windows (overlap {OVERLAP}, scale 1), each nucleus in the window where its "
                          f"first click is farthest from an inner window side; seed {args.seed}")
    result["command"] = "benchmarks/clicks_single.py " + " ".join(  # a flag only when set
        f"--{k.replace('_', '-')}" + ("" if v is True else f" {' '.join(v) if isinstance(v, list) else v}")
        for k, v in vars(args).items() if k not in ("data", "out") and v is not False)
    result["seconds_last_run"] = round(time.time() - t0, 1)
    # merge into the file as it is now (another row run may have written it since this one started)
    merged = json.loads(out_path.read_text()) if out_path.is_file() else {"sets": {}}
    for name, entry in result.pop("sets").items():
        old = merged["sets"].setdefault(name, {"rows": {}})
        old["nuclei_total"] = entry["nuclei_total"]
        old["rows"].update(entry["rows"])
    merged.update(result)
    atomic_write_text(out_path, json.dumps(merged, indent=2) + "\n")


if __name__ == "__main__":
    main()
