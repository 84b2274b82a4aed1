"""The bundled default model's training nucleus size: the value of ``SACConfig.nucleus_diameter``.

Median equivalent diameter (``2 * sqrt(area / pi)``, pixels) of the ground-truth nuclei the default model was
trained on -- MoNuSeg train without the 6 validation images, and DSB train -- weighted as training samples them:
``sampling="source"`` (:class:`sac.data.dataset.CropDataset`) gives each source half of the crops and each image of
a source the same share; a random ``crop`` x ``crop`` window of an ``H x W`` image holds a given nucleus with
probability ``min(1, crop**2 / (H * W))``. So nucleus weight = ``0.5 / n_images(source) * min(1, crop**2 / (H*W))``.

    python benchmarks/nucleus_size.py --data-root ../shared/data   # -> benchmarks/results/nucleus_size.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from sac.data.io import list_pairs, read_labels

MONUSEG_VAL = ("TCGA-21-5784-01Z-00-DX1", "TCGA-AR-A1AK-01Z-00-DX1", "TCGA-B0-5710-01Z-00-DX1",
               "TCGA-B0-5711-01Z-00-DX1", "TCGA-HE-7128-01Z-00-DX1", "TCGA-KB-A93J-01A-01-TS1")


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """``int [H, W]`` instance ids -> ``float64 [N]`` equivalent diameters (px) of the non-empty ids."""
    areas = np.bincount(labels.ravel())[1:]
    return 2.0 * np.sqrt(areas[areas > 0] / np.pi)


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """For each q, the value where the cumulative weight (values sorted) first reaches q of the total."""
    order = np.argsort(values)
    cum = np.cumsum(weights[order]) / weights.sum()
    return [float(values[order][np.searchsorted(cum, q)]) for q in qs]


def training_sizes(sources: list[tuple[str, str, tuple[str, ...]]], crop: int = 256) -> dict:
    """``[(root, split, excluded ids)]`` -> per-source and pooled statistics (see module docstring)."""
    values, weights, per_source = [], [], {}
    for root, split, exclude in sources:
        pairs = [(i, lab) for i, _, lab in list_pairs(root, split) if i not in exclude]
        src_d, medians = [], []
        for _, lab_path in pairs:
            lab = read_labels(lab_path)
            d = equivalent_diameters(lab)
            if not len(d):
                continue
            medians.append(float(np.median(d)))
            src_d.append(d)
            values.append(d)
            weights.append(np.full(len(d), 0.5 / len(pairs) * min(1.0, crop * crop / lab.size)))
        pooled = np.concatenate(src_d)
        per_source[f"{Path(root).name}/{split}"] = {
            "images": len(pairs), "nuclei": int(len(pooled)), "median_diameter": round(float(np.median(pooled)), 2),
            "image_median_percentiles_5_25_50_75_95": np.percentile(medians, [5, 25, 50, 75, 95]).round(2).tolist(),
        }
    v, w = np.concatenate(values), np.concatenate(weights)
    return {"nucleus_diameter": round(weighted_quantiles(v, w, (0.5,))[0], 1),
            "weighted_percentiles_10_90": [round(q, 1) for q in weighted_quantiles(v, w, (0.1, 0.9))],
            "sources": per_source, "crop": crop}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--out", default="benchmarks/results/nucleus_size.json")
    args = ap.parse_args()
    root = Path(args.data_root)
    res = training_sizes([(str(root / "monuseg"), "train", MONUSEG_VAL), (str(root / "dsb2018"), "train", ())])
    res["command"] = f"python benchmarks/nucleus_size.py --data-root {args.data_root}"
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
