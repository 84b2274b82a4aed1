"""Check that adding the interactive head left the automatic path bit-identical (issue 11).

Compares two model folders (the default before and after the interactive head was added): (1) the SAM mask
logits of the automatic path on one real 256 px tile (UNet -> points -> decode, exactly as ``sac segment``), and
(2) the label images of ``sac segment`` on 1 MoNuSeg validation image and 3 DSB val images. Writes
``benchmarks/results/automatic_unchanged.json``.

    .venv/bin/python benchmarks/automatic_unchanged.py --before /tmp/old_default --after src/sac/weights/default
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from sac.atomic import atomic_write_text
from sac.data.io import list_pairs, read_image
from sac.inference.api import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--before", required=True)
    ap.add_argument("--after", required=True)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "automatic_unchanged.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    data = Path(args.data)
    mon = {i: p for i, p, _ in list_pairs(data / "monuseg", "train")}
    images = [("monuseg", "TCGA-21-5784-01Z-00-DX1", mon["TCGA-21-5784-01Z-00-DX1"])]
    images += [("dsb2018_val", i, p) for i, p, _ in list_pairs(data / "dsb2018", "val")[:3]]
    models = {k: load_model(v) for k, v in (("before", args.before), ("after", args.after))}
    tile = read_image(images[0][2])[:256, :256]
    x = torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1)[None].float() / 255.0
    logits = {}
    with torch.inference_mode():
        for k, m in models.items():
            sac = m.module
            sac.prompt_rng = np.random.default_rng(0)
            prompt = sac.prompt_logits(x)
            coords, labels = sac.select_prompts(prompt, batch_size=1)
            logits[k] = sac.decode(sac.encode(x), coords, labels, prompt)[0]
    result = {"tile_logits_identical": bool(torch.equal(logits["before"], logits["after"])),
              "tile_logits_max_abs_diff": float((logits["before"] - logits["after"]).abs().max()),
              "images": []}
    for src, name, path in images:
        lab = {k: m.segment(str(path)).labels for k, m in models.items()}
        result["images"].append({"set": src, "id": name, "labels_identical": bool(np.array_equal(*lab.values())),
                                 "n_nuclei": int(len(np.unique(lab["after"])) - 1)})
    result["has_object_decoder"] = {k: m.module.object_decoder is not None for k, m in models.items()}
    result["loadavg"] = list(os.getloadavg())
    result["command"] = f"benchmarks/automatic_unchanged.py --before {args.before} --after {args.after}"
    print(json.dumps(result, indent=2))
    atomic_write_text(Path(args.out), json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
