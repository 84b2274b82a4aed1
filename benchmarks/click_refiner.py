"""The click refiner's offline recipe (issue 11): the samples, the training and the evaluation that made the bundled
default's ``SAC.refiner`` (r2 below).

The interactive head decodes a nucleus from SAM's 64 x 64 token grid (4 model pixels per token), and
``benchmarks/click_bound.py`` shows its boundaries limit one click on MoNuSeg. The click refiner
(:class:`~sac.models.refiner.ClickRefiner`, 0.39M parameters) sees the image at full resolution with the head's
logits, the UNet's logits and the clicks, and outputs corrected logits (``head logits + delta``; the last layer starts
at zero, so an untrained refiner returns the head's mask). Three steps (``sac train --variant refiner`` is the
library's online alternative, docs/training.md):

1. ``gen``: on training images only (the 24 MoNuSeg images outside the hold-out, DSB train), ``--windows`` seeded
   256 px grid windows, up to ``--per-window`` nuclei each; for each nucleus the protocol of ``clicks_single.py``
   (first click at its most interior pixel, UNet logits as mask input; then correction clicks on the product's mask,
   the previous logits as mask input), 3 rounds at most. Each round stores a 96 px crop centred on the first click:
   image ``uint8``, head and UNet logits ``float16``, clicks, the nucleus ``bool`` (``.npz``).
2. ``train``: random 64 px sub-crops, the 8 flips / rotations, BCE + Dice against the nucleus, AdamW, batch 16, for
   ``--minutes`` (wall clock); ``--init`` continues a run. Weights saved as safetensors.
3. ``eval``: the 200 seeded nuclei per set of ``clicks_single.py`` (MoNuSeg hold-out, DSB val), 3 clicks, each
   method driving its own correction clicks: ``product`` (the head alone with the editor's rule before the refiner,
   row ``head-click-clip-product`` of a model without one) and ``refiner`` (the ``--weights`` refiner run on a 128 px
   crop around the first click, then the editor's rule without the UNet mean, corrections kept in the first mask's
   box, as the editor does with a refiner). Mean IoU with the nucleus after 1, 2, 3.

    .venv/bin/python benchmarks/click_refiner.py gen --set monuseg_train --windows 120 --per-window 25 --out mon.npz
    .venv/bin/python benchmarks/click_refiner.py gen --set dsb_train --windows 220 --per-window 15 --out dsb.npz
    .venv/bin/python benchmarks/click_refiner.py train --data mon.npz dsb.npz --minutes 14 --out r1.safetensors
    .venv/bin/python benchmarks/click_refiner.py train --data mon.npz dsb.npz --minutes 11 --lr 5e-4 \\
        --init r1.safetensors --out r2.safetensors
    .venv/bin/python benchmarks/click_refiner.py eval --weights r2.safetensors --per-set 200
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clicks_single import MONUSEG_VAL, Windows, editor_mask, load_sets, plan  # noqa: E402
from sac.atomic import atomic_write_text  # noqa: E402
from sac.data.io import list_pairs, read_image, read_labels  # noqa: E402
from sac.evaluation.clicks import correction_click  # noqa: E402
from sac.inference.api import build_model  # noqa: E402
from sac.models.refiner import CROP, ClickRefiner, crop_origin, refiner_inputs  # noqa: E402

GEN_CROP, TRAIN_CROP, EVAL_CROP = 96, 64, CROP  # px: stored crop, training sub-crop, crop refined at evaluation
ROUNDS = 3
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def features(img: np.ndarray, z: np.ndarray, unet: np.ndarray, clicks: np.ndarray) -> np.ndarray:
    """One stored sample (``img uint8 [h,w,3]``, logits ``float16 [h,w]``, clicks ``[3, 3]``) ->
    :func:`~sac.models.refiner.refiner_inputs` ``float32 [7,h,w]``."""
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float() / 255.0
    return refiner_inputs(t, torch.from_numpy(z.astype(np.float32)), torch.from_numpy(unet.astype(np.float32)),
                          torch.from_numpy(np.asarray(clicks, np.float32))).numpy()


def rgb(images: list) -> list:
    return [(i, im if im.ndim == 3 else np.repeat(im[..., None], 3, 2), lab) for i, im, lab in images]


def training_images(which: str) -> list:
    if which == "monuseg_train":
        pairs = [p for p in list_pairs(DATA / "monuseg", "train") if p[0] not in MONUSEG_VAL]
    else:
        pairs = list(list_pairs(DATA / "dsb2018", "train"))
    return rgb([(i, read_image(p), read_labels(q).astype(np.int32)) for i, p, q in pairs])


def decode(model, emb, unet, pts: list, prev, box: np.ndarray | None = None):
    coords = torch.from_numpy(np.stack([q[0] for q in pts]))[None]
    labels = torch.tensor([[q[1] for q in pts]], dtype=torch.long)
    boxes = None if box is None else torch.from_numpy(box)[None]
    logits, _ = model.decode_object(emb, coords, labels, boxes, unet if prev is None else prev[None])
    return logits[0]


@torch.inference_mode()
def gen(args) -> None:
    imgs = training_images(args.set)
    model = build_model("default")[0].eval()
    bytile: dict = {}
    for job in plan({args.set: imgs}, None, args.seed)[args.set]["jobs"]:
        bytile.setdefault((job["image"], job["tile"]), []).append(job)
    keys = list(bytile)
    jobs = [j for o in np.random.default_rng(args.seed).permutation(len(keys))[: args.windows]
            for j in bytile[keys[o]][: args.per_window]]
    wins, out, t0 = Windows(model, imgs), {k: [] for k in ("img", "z", "unet", "clicks", "target")}, time.time()
    for n, job in enumerate(jobs):
        (k, tile), c = (job["image"], job["tile"]), GEN_CROP
        emb, unet = wins.get(k, tile)
        img, lab = imgs[k][1], imgs[k][2]
        h, w = tile.y1 - tile.y0, tile.x1 - tile.x0
        origin = np.array([tile.x0, tile.y0], np.float32)
        target = lab[tile.y0:tile.y1, tile.x0:tile.x1] == job["id"]
        pts = [(np.array(job["click"], np.float32) - origin, 1)]
        x0, y0 = crop_origin(*pts[0][0], c, h, w)
        sl = (slice(y0, y0 + c), slice(x0, x0 + c))
        prev, clip = None, None
        for r in range(ROUNDS):
            prev = decode(model, emb, unet, pts, prev)
            z = prev[0, :h, :w]
            pred = editor_mask(z, unet, pts, "editor" if r == 0 else "fused", h, w, clip)
            if r == 0 and pred.any():
                yy, xx = np.nonzero(pred)
                clip = np.array([xx.min(), yy.min(), xx.max(), yy.max()], np.float32)
            clicks = np.full((ROUNDS, 3), -1, np.float32)
            clicks[: len(pts)] = [(q[0][0] - x0, q[0][1] - y0, q[1]) for q in pts]
            for key, v in (("img", img[tile.y0:tile.y1, tile.x0:tile.x1][sl][..., :3]), ("clicks", clicks),
                           ("z", z.numpy()[sl].astype(np.float16)), ("target", target[sl]),
                           ("unet", unet[0, 0, :h, :w].numpy()[sl].astype(np.float16))):
                out[key].append(np.ascontiguousarray(v))
            click = correction_click(pred, target)
            if click is None:
                break
            pts.append((np.array(click[:2], np.float32), click[2]))
        if n % 500 == 0:
            print(f"{n}/{len(jobs)} nuclei, {len(out['z'])} samples, {time.time() - t0:.0f} s", flush=True)
    np.savez_compressed(args.out, **{k: np.stack(v) for k, v in out.items()})
    print(f"{len(out['z'])} samples from {len(jobs)} nuclei in {time.time() - t0:.0f} s -> {args.out}")


def train(args) -> None:
    data = [np.load(f) for f in args.data]
    X = np.concatenate([np.stack([features(*a) for a in zip(d["img"], d["z"], d["unet"], d["clicks"], strict=True)])
                        for d in data])  # float32 [N, 7, 96, 96]
    Z = np.concatenate([d["z"].astype(np.float32) for d in data])[:, None]
    Y = np.concatenate([d["target"] for d in data]).astype(np.float32)[:, None]
    net = ClickRefiner()
    if args.init:
        net.load_state_dict(load_file(args.init))
    opt = torch.optim.AdamW(net.parameters(), args.lr, weight_decay=1e-4)
    rng, t0, step, losses, b = np.random.default_rng(0), time.time(), 0, [], 16
    print(f"{len(X)} samples, {sum(p.numel() for p in net.parameters())} parameters", flush=True)
    while time.time() - t0 < args.minutes * 60:
        idx = rng.integers(0, len(X), b)
        oy, ox = rng.integers(0, GEN_CROP - TRAIN_CROP + 1, 2)  # the first click stays inside (it is at the centre)
        x, z, y = (torch.from_numpy(a[idx][:, :, oy:oy + TRAIN_CROP, ox:ox + TRAIN_CROP]) for a in (X, Z, Y))
        k = int(rng.integers(4))
        x, z, y = (torch.rot90(a, k, (2, 3)) for a in (x, z, y))
        if rng.random() < 0.5:
            x, z, y = (a.flip(3) for a in (x, z, y))
        out = net(x, z.clamp(-20, 20))
        p = torch.sigmoid(out)
        dice = 1 - (2 * (p * y).sum((1, 2, 3)) + 1) / (p.sum((1, 2, 3)) + y.sum((1, 2, 3)) + 1)
        loss = F.binary_cross_entropy_with_logits(out, y) + dice.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 500 == 0:
            print(f"step {step}, {time.time() - t0:.0f} s, loss {np.mean(losses[-500:]):.4f}", flush=True)
    save_file(net.state_dict(), args.out)
    print(f"{step} steps -> {args.out}")


@torch.inference_mode()
def evaluate(args) -> None:
    sets = {k: rgb(v) for k, v in load_sets(DATA).items()}
    model = build_model("default")[0].eval()
    net = ClickRefiner()
    net.load_state_dict(load_file(args.weights))
    net.eval()
    result: dict = {"sets": {}}
    for name, p in plan(sets, args.per_set, args.seed).items():
        images, jobs, wins = sets[name], p["jobs"], Windows(model, sets[name])
        ious = {m: np.zeros((len(jobs), ROUNDS)) for m in ("product", "refiner")}
        for j, job in enumerate(jobs):
            k, tile = job["image"], job["tile"]
            emb, unet = wins.get(k, tile)
            h, w = tile.y1 - tile.y0, tile.x1 - tile.x0
            origin = np.array([tile.x0, tile.y0], np.float32)
            target = images[k][2][tile.y0:tile.y1, tile.x0:tile.x1] == job["id"]
            area = int(np.count_nonzero(images[k][2][job["slice"]] == job["id"]))
            win = images[k][1][tile.y0:tile.y1, tile.x0:tile.x1][..., :3]
            box = np.array(job["box"], np.float32) - np.tile(origin, 2) if args.first == "box" else None
            first = np.array(job["click"], np.float32) - origin if box is None else (box[:2] + box[2:]) / 2
            x0, y0 = crop_origin(*first, EVAL_CROP, h, w)  # the refined crop is centred on the first click
            sl = (slice(y0, y0 + EVAL_CROP), slice(x0, x0 + EVAL_CROP))
            for m, iou in ious.items():
                pts, prev, clip = [(first, 1)], None, box
                for r in range(ROUNDS):
                    prev = decode(model, emb, unet, pts, prev, box)
                    z = prev[0, :h, :w]
                    if m == "product":
                        pred = editor_mask(z, unet, pts, "editor" if r == 0 else "fused", h, w, clip)
                    else:
                        zz = z.clone()
                        zz[sl] = net.refine(torch.from_numpy(np.ascontiguousarray(win[sl])).permute(2, 0, 1) / 255.0,
                                            z[sl], unet[0, 0, :h, :w][sl],
                                            torch.tensor([(q[0][0] - x0, q[0][1] - y0, q[1]) for q in pts]))
                        pred = editor_mask(zz, unet, pts, "editor", h, w, clip)
                    if r == 0 and pred.any() and box is None:
                        yy, xx = np.nonzero(pred)
                        clip = np.array([xx.min(), yy.min(), xx.max(), yy.max()], np.float32)
                    inter = np.count_nonzero(pred & target)
                    iou[j, r] = inter / (np.count_nonzero(pred) + area - inter)
                    click = correction_click(pred, target)
                    if click is None:
                        iou[j, r + 1:] = iou[j, r]
                        break
                    pts.append((np.array(click[:2], np.float32), click[2]))
        result["sets"][name] = {"n_nuclei": len(jobs), **{
            m: {f"iou@{c + 1}": round(float(v), 4) for c, v in enumerate(a.mean(0))} for m, a in ious.items()}}
        print(name, result["sets"][name], flush=True)
    result["command"] = (f"benchmarks/click_refiner.py eval --per-set {args.per_set} --seed {args.seed} "
                         f"--first {args.first}")
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="step", required=True)
    g = sub.add_parser("gen", help="training samples from the head (training images only)")
    g.add_argument("--set", choices=("monuseg_train", "dsb_train"), required=True)
    g.add_argument("--windows", type=int, required=True)
    g.add_argument("--per-window", type=int, required=True)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--out", required=True)
    t = sub.add_parser("train", help="train the refiner on gen's samples")
    t.add_argument("--data", nargs="+", required=True)
    t.add_argument("--minutes", type=float, required=True)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--init", default=None)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--out", required=True)
    e = sub.add_parser("eval", help="the single-nucleus protocol, product vs refiner")
    e.add_argument("--weights", required=True)
    e.add_argument("--per-set", type=int, default=200)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--first", choices=("click", "box"), default="click",
                   help="first prompt: a click, or the nucleus's box + a click at its centre, the masks kept in the "
                        "box (clicks_single row head-boxc-clip-product)")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--out", default=str(Path(__file__).parent / "results" / "click_refiner.json"))
    args = ap.parse_args()
    torch.set_num_threads(getattr(args, "threads", 2))
    {"gen": gen, "train": train, "eval": evaluate}[args.step](args)


if __name__ == "__main__":
    main()
