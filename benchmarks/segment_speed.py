"""Speed of `sac segment` on one 1000 x 1000 H&E image (MoNuSeg) next to the SAM ViT-B image encoder alone.

Every configuration runs in its own subprocess (so peak RSS is that configuration's own) with 2 torch threads:

* ``segment``: load the model once, then time one full `sac segment` image -- tiling, UNet, prompts, encoder,
  decoder, stitching, watershed instances and ALL output files (mask, labels, overlay, csv, geojson) -- the
  same ``segment_file`` the CLI runs. The first image is a warm-up (allocator, lazy imports); the median of the
  next ``--repeats`` is reported. Process start + model load are reported separately.
* ``vit_b``: the segment_anything ViT-B image encoder (random init: speed does not depend on weights) on a
  1 x 3 x 1024 x 1024 input under ``torch.inference_mode`` -- the work SAM-based tools do per 1000 px image.

    .venv/bin/python benchmarks/segment_speed.py [--model default|RUN_DIR] [--image PATH] [--out JSON]

Without a trained default model, an untrained SAC on the real LiteMedSAM backbone is used: the compute is the
same; only the number of nuclei (watershed/CSV/GeoJSON work) differs. Not a timed test: run it by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAC_DATA", REPO.parent / "shared" / "data"))

# (name, InferenceConfig overrides): the default, then the speed levers discussed in docs/segment.md.
CONFIGS = [
    ("scale1_default", {}),
    ("scale0.5_default", {"scale": 0.5}),
    ("scale0.5_overlap8", {"scale": 0.5, "overlap": 8}),
    ("scale0.5_overlap8_batch4", {"scale": 0.5, "overlap": 8, "batch": 4}),
    ("scale0.25", {"scale": 0.25}),
]


def child_segment(model: str, image: str, overrides: dict, repeats: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    from sac.inference.api import load_model
    from sac.inference.config import InferenceConfig
    from sac.inference.files import segment_file
    from sac.inference.writers import FORMATS

    loaded = load_model(model)
    seg = loaded.segmenter(InferenceConfig(**overrides))
    load_s = time.perf_counter() - t0
    times, rows = [], []
    with tempfile.TemporaryDirectory() as out:
        for _ in range(repeats + 1):
            t = time.perf_counter()
            row = segment_file(seg, Path(image), Path(out), FORMATS, on_tile=lambda n: None)
            times.append(time.perf_counter() - t)
            rows.append(row)
            assert row["status"] == "ok", row
    return {
        "seconds_per_image": float(np.median(times[1:])),
        "seconds_all": [round(x, 2) for x in times],
        "startup_and_model_load_s": round(load_s, 2),
        "tiles": len(seg.tiles_for(*_shape(image))),
        "nuclei": rows[-1]["nuclei"],
        "settings": seg.settings(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _shape(image: str) -> tuple[int, int]:
    from sac.data.io import read_image

    return read_image(image).shape[:2]


def child_vit_b(repeats: int) -> dict:
    import numpy as np
    import torch
    from segment_anything import sam_model_registry

    torch.set_num_threads(2)
    enc = sam_model_registry["vit_b"](checkpoint=None).image_encoder.eval()
    x = torch.rand(1, 3, 1024, 1024)
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            t = time.perf_counter()
            enc(x)
            times.append(time.perf_counter() - t)
    return {"seconds": float(np.median(times)), "seconds_all": [round(s, 2) for s in times],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(args: list[str]) -> dict:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_wall_s"] = round(time.perf_counter() - t, 2)
    return result


def default_model(tmp: Path) -> str:
    """The bundled default if present, else an untrained LiteMedSAM SAC saved into ``tmp``."""
    from sac.inference.api import default_model_dir

    if (default_model_dir() / "model.safetensors").is_file():
        return "default"
    from sac.backbones import build_sac
    from sac.modelfile import save_model

    save_model(tmp / "untrained", build_sac())
    return str(tmp / "untrained")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="default | RUN_DIR | model folder (default: see docstring)")
    p.add_argument("--image", default=None, help="a 1000x1000 H&E image (default: first MoNuSeg train image)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--configs", default=",".join(n for n, _ in CONFIGS))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "segment_speed.json"))
    p.add_argument("--child", choices=("segment", "vit_b"), help=argparse.SUPPRESS)
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child == "segment":
        print(json.dumps(child_segment(a.model, a.image, json.loads(a.overrides), a.repeats)))
        return
    if a.child == "vit_b":
        print(json.dumps(child_vit_b(a.repeats)))
        return
    image = a.image or str(sorted((DATA / "monuseg" / "train" / "images").glob("*.png"))[0])
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model or default_model(Path(tmp))
        results = {
            "image": image,
            "image_shape": list(_shape(image)),
            "model": model if a.model or model == "default" else "untrained SAC (LiteMedSAM backbone, saved to tmp)",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch_threads": 2,
                        "note": "shared machine: another helper's training ran at the same time"},
            "command": "python benchmarks/segment_speed.py " + " ".join(sys.argv[1:]),
        }
        print("vit_b encoder ...", file=sys.stderr)
        results["vit_b_encoder"] = run_child(["--child", "vit_b", "--repeats", str(a.repeats)])
        wanted = a.configs.split(",")
        results["segment"] = {}
        for name, overrides in CONFIGS:
            if name not in wanted:
                continue
            print(f"{name} ...", file=sys.stderr)
            r = run_child(["--child", "segment", "--model", model, "--image", image,
                           "--overrides", json.dumps(overrides), "--repeats", str(a.repeats)])
            r["fraction_of_vit_b"] = round(r["seconds_per_image"] / results["vit_b_encoder"]["seconds"], 3)
            results["segment"][name] = r
            print(f"  {r['seconds_per_image']:.1f} s/image, {r['tiles']} tiles, peak {r['peak_rss_mb']:.0f} MB, "
                  f"{r['fraction_of_vit_b']:.2f} x ViT-B", file=sys.stderr)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from sac.atomic import atomic_write_text

    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "segment"}, indent=1))
    for name, r in results["segment"].items():
        print(f"{name:28s} {r['seconds_per_image']:6.1f} s  tiles {r['tiles']:3d}  peak {r['peak_rss_mb']:6.0f} MB"
              f"  = {r['fraction_of_vit_b']:.2f} x ViT-B encoder")


if __name__ == "__main__":
    main()
