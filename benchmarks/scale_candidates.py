"""A rule tried for `--scale auto` and not shipped: segment large nuclei larger than the training size when the UNet
is surer there (docs/scale.md, "Tried: larger sizes where the UNet is surer").

`--scale auto` shrinks nuclei larger than the snap range to the training size (18.5 px for the default). DSB's
large-nuclei images were trained on at their native ~53 px, so their rescaled copies score best there, not at
18.5 px. The rule tried: for an image the estimate shrinks (auto scale < 1, estimated), also measure the UNet at
``min(1, raw * 2 ** (k / 2))`` for k = 1, 2, 3 (nuclei at 1.4x, 2x, 2.8x the training size) and take the candidate
of lowest :func:`sac.inference.scale.uncertainty` when it is below ``tau`` x the estimate's and at most ``sure``.

Reads a ``benchmarks/scale_auto.py`` result (its images, factors, estimates and oracle scores), measures each
candidate (the estimator's 8-window pass) and segments it with the default settings when it could be chosen at any
``--taus`` (uncertainty below max(taus) x the estimate's), then prints, per rule, the mean Dice / AJI change
against auto and the gap to the oracle per factor.

    .venv/bin/python benchmarks/scale_candidates.py --base benchmarks/results/scale_auto_dsb.json \\
        --out benchmarks/results/scale_candidates_dsb.json
    python benchmarks/scale_candidates.py --analyse benchmarks/results/scale_candidates_dsb.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import scale_auto as SA  # noqa: E402
from sac.atomic import atomic_write_text  # noqa: E402
from sac.data.io import list_pairs, read_image, read_labels  # noqa: E402
from sac.evaluation.report import score_one  # noqa: E402
from sac.inference import scale as S  # noqa: E402
from sac.inference.api import load_model  # noqa: E402
from sac.inference.config import InferenceConfig  # noqa: E402
from sac.inference.reader import ArraySource  # noqa: E402

STEPS = (1, 2, 3)  # candidates at raw * 2 ** (k / 2), capped at 1


def measure_all(args) -> None:
    base = json.loads(Path(args.base).read_text())
    torch.set_num_threads(int(os.environ.get("SAC_THREADS", "2")))
    model = load_model("default")
    seg0 = model.segmenter(InferenceConfig(scale="auto"))
    root = Path(args.data_root)
    if base["dataset"] == "dsb":
        pairs = {p[0]: p for p in list_pairs(root / "dsb2018", "val")}
    else:
        pairs = {p[0]: p for p in list_pairs(root / "monuseg", "train")}
    out = {"command": "python benchmarks/scale_candidates.py " + " ".join(sys.argv[1:]), "base": args.base,
           "taus": args.taus, "rows": []}
    for im in base["images"]:
        _, ip, lp = pairs[im["id"]]
        image, labels = read_image(ip), read_labels(lp)
        for f, r in im["factors"].items():
            est = r["auto"]["estimate"]
            if est["reason"] != "estimated" or r["auto"]["scale"] >= 1:
                continue  # outside the rule's domain: nothing would change
            img, lab = SA.resample(image, labels, float(f))
            src = ArraySource(img)
            _, u0 = S.measure(seg0.engine.prompt_maps, src, r["auto"]["scale"])
            cands = []
            for k in STEPS:
                s = min(1.0, est["raw_scale"] * 2 ** (k / 2))
                d, u = S.measure(seg0.engine.prompt_maps, src, s)
                c = {"k": k, "scale": round(s, 4), "u": round(u, 4), "n": len(d)}
                if u < max(args.taus) * u0 and len(d) >= S.MIN_NUCLEI:
                    _, row = score_one(lab, SA.at_scale(seg0, s).segment(src).labels)
                    c.update({key: round(float(row[key]), 4) for key in SA.KEYS})
                cands.append(c)
            out["rows"].append({"id": im["id"], "factor": float(f), "auto": {k: r["auto"][k] for k in
                                ("scale", *SA.KEYS)}, "u_auto": round(u0, 4), "oracle": r["oracle"],
                                "candidates": cands})
            print(im["id"][:8], f, round(u0, 3), [(c["scale"], c["u"], c.get("aji")) for c in cands], flush=True)
            atomic_write_text(args.out, json.dumps(out, indent=1) + "\n")


def chosen(row: dict, tau: float, sure: float) -> dict:
    """The scores the rule would give ``row`` (auto's when no candidate qualifies)."""
    ok = [c for c in row["candidates"] if "aji" in c and c["u"] < tau * row["u_auto"] and c["u"] <= sure]
    return min(ok, key=lambda c: c["u"]) if ok else row["auto"]


def analyse(path: str, base_path: str | None = None) -> None:
    res = json.loads(Path(path).read_text())
    base = json.loads(Path(base_path or res["base"]).read_text())
    n_images = {f: len(base["images"]) for f in base["factors"]}
    for tau in res["taus"]:
        for sure in (1.0, 0.3):
            parts = []
            for f in base["factors"]:
                rows = [r for r in res["rows"] if r["factor"] == f]
                picks = [(r, chosen(r, tau, sure)) for r in rows]
                n = n_images[f]  # the change averaged over all images of the factor, as scale_auto's means
                dd = sum(p["dice"] - r["auto"]["dice"] for r, p in picks) / n
                da = sum(p["aji"] - r["auto"]["aji"] for r, p in picks) / n
                gap = base["summary"][str(f)]["auto_minus_oracle"]
                switched = sum(p is not r["auto"] for r, p in picks)
                parts.append(f"factor {f}: {switched} switched, Dice {dd:+.3f} AJI {da:+.3f} -> gap to oracle "
                             f"{gap['dice'] + dd:+.3f} / {gap['aji'] + da:+.3f}")
            print(f"tau {tau}, sure <= {sure}: " + "; ".join(parts))
    for r in res["rows"]:
        p = chosen(r, 0.6, 0.3)
        if p is not r["auto"]:
            print(f"  {r['id'][:8]} x{r['factor']}: scale {r['auto']['scale']:.2f} -> {p['scale']:.2f} (oracle "
                  f"{r['oracle']['scale']:.2f}), uncertainty {r['u_auto']:.2f} -> {p['u']:.2f}, AJI "
                  f"{r['auto']['aji']:.3f} -> {p['aji']:.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", help="a benchmarks/scale_auto.py result JSON")
    ap.add_argument("--out")
    ap.add_argument("--analyse", metavar="JSON", help="print the rule's effect from a finished result and exit")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--taus", type=float, nargs="+", default=[0.5, 0.6, 0.7])
    args = ap.parse_args()
    if args.analyse:
        analyse(args.analyse, args.base)
    elif args.base and args.out:
        measure_all(args)
        analyse(args.out)
    else:
        ap.error("--base and --out are required (or --analyse JSON)")


if __name__ == "__main__":
    main()
