"""Speed of `sac segment` on one 1000 x 1000 H&E image (MoNuSeg) next to the SAM ViT-B image encoder alone.

Every configuration runs in its own subprocess (so peak RSS is that configuration's own) with 2 torch threads:

* ``segment``: load the model once, then time one full `sac segment` image -- tiling, UNet, prompts, encoder,
  decoder, stitching, watershed instances and ALL output files (mask, labels, overlay, csv, geojson) -- the
  same ``segment_file`` the CLI runs. A 200 x 200 crop is segmented first as a warm-up; the median of
  ``--repeats`` timed images is reported. Process start + model load are reported separately.

Wall time AND process CPU time are recorded: on a shared machine wall time depends on the other load, while the
CPU-time ratio to the ViT-B encoder is a fairer comparison of the work done.
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
# "fast_encoder": False runs SAC.encode itself (LoRA wrappers, unfused BatchNorm) for comparison.
CONFIGS = [
    ("scale1_default", {}),
    ("scale0.5_overlap8", {"scale": 0.5, "overlap": 8}),
    ("scale0.5_overlap8_plain_encoder", {"scale": 0.5, "overlap": 8, "fast_encoder": False}),
    ("scale0.5_overlap8_batch4", {"scale": 0.5, "overlap": 8, "batch": 4}),
    ("scale1_points0", {"n_points": 0}),  # no automatic points (models trained with --vary-points)
    ("scale0.25", {"scale": 0.25}),
]
DEFAULT_CONFIGS = "scale1_default,scale0.5_overlap8,scale0.5_overlap8_plain_encoder,scale0.25"


def child_segment(model: str, image: str, overrides: dict, repeats: int) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(2)
    t0 = time.perf_counter()
    from sac.inference.api import load_model
    from sac.inference.config import InferenceConfig
    from sac.inference.files import segment_file
    from sac.inference.segmenter import Segmenter
    from sac.inference.writers import FORMATS

    fast = overrides.pop("fast_encoder", True)
    loaded = load_model(model)
    seg = Segmenter(loaded.module, InferenceConfig(**overrides), fast_encoder=fast)
    load_s = time.perf_counter() - t0
    times, cpu, rows = [], [], []
    with tempfile.TemporaryDirectory() as out:
        # Warm-up on a 200 x 200 crop (first-call allocations, lazy imports), not timed.
        from sac.data.io import read_image

        seg.segment(read_image(image)[:200, :200])
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            row = segment_file(seg, Path(image), Path(out), FORMATS, on_tile=lambda n: None)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            rows.append(row)
            assert row["status"] == "ok", row
    return {
        "seconds_per_image": float(np.median(times)),
        "cpu_seconds_per_image": float(np.median(cpu)),
        "seconds_all": [round(x, 2) for x in times],
        "fast_encoder": fast,
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
    times, cpu = [], []
    with torch.inference_mode():
        for _ in range(repeats):
            t, c = time.perf_counter(), time.process_time()
            enc(x)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    return {"seconds": float(np.median(times)), "cpu_seconds": float(np.median(cpu)),
            "seconds_all": [round(s, 2) for s in times],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def big_tiff_run(model: str, image: str, side: int, scale: float, tmp: Path) -> dict:
    """Write a ``side x side`` tiled TIFF (the H&E image repeated), run `sac segment` on it as a subprocess and
    report its wall time and peak RSS (``RUSAGE_CHILDREN``: the largest child so far, i.e. this one)."""
    import numpy as np
    import tifffile

    from sac.data.io import read_image

    tile = read_image(image)
    -(-side // tile.shape[0]), -(-side // tile.shape[1])
    big = tmp / f"big_{side}.tif"
    with tifffile.TiffWriter(big, bigtiff=True) as tw:  # written band by band: never the whole image in RAM
        def bands():
            for y in range(0, side, 256):
                for x in range(0, side, 256):
                    rows = np.arange(y, min(y + 256, side)) % tile.shape[0]
                    cols = np.arange(x, min(x + 256, side)) % tile.shape[1]
                    block = np.zeros((256, 256, 3), np.uint8)
                    block[: len(rows), : len(cols)] = tile[rows][:, cols]
                    yield block
        tw.write(bands(), shape=(side, side, 3), dtype=np.uint8, tile=(256, 256), compression="zlib")
    out = tmp / "big_out"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "sac.cli", "segment", str(big), "--out", str(out), "--model", model,
                           "--scale", str(scale)], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    files = {p.name: p.stat().st_size for p in out.iterdir()}
    return {"side": side, "scale": scale, "tiff_bytes": big.stat().st_size, "wall_s": round(wall, 1),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "summary": proc.stdout.strip().splitlines()[-1], "outputs_bytes": files,
            "command": f"sac segment big_{side}.tif --out big_out --model MODEL --scale {scale}"}


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
    p.add_argument("--repeats", type=int, default=1, help="timed images per configuration (median)")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"comma list of {', '.join(n for n, _ in CONFIGS)}")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "segment_speed.json"))
    p.add_argument("--big", type=int, default=None, metavar="SIDE",
                   help="instead: segment a SIDE x SIDE tiled TIFF made of the image, report wall time + peak RSS")
    p.add_argument("--big-scale", type=float, default=0.125)
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
    if a.big:
        with tempfile.TemporaryDirectory() as tmp:
            model = a.model or default_model(Path(tmp))
            r = big_tiff_run(model, image, a.big, a.big_scale, Path(tmp))
        r["model"] = a.model or "untrained SAC (LiteMedSAM backbone)"
        from sac.atomic import atomic_write_text

        out = Path(a.out).with_name(f"segment_big_{a.big}.json") if a.out == p.get_default("out") else Path(a.out)
        atomic_write_text(out, json.dumps(r, indent=2) + "\n")
        print(json.dumps(r, indent=1))
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = a.model or default_model(Path(tmp))
        results = {
            "image": image,
            "image_shape": list(_shape(image)),
            "model": model if a.model or model == "default" else "untrained SAC (LiteMedSAM backbone, saved to tmp)",
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch_threads": 2,
                        # other load on the machine skews wall times: record it (1-min load average)
                        "load_average_at_start": round(os.getloadavg()[0], 2)},
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
            vit = results["vit_b_encoder"]
            r["fraction_of_vit_b"] = round(r["seconds_per_image"] / vit["seconds"], 3)
            r["cpu_fraction_of_vit_b"] = round(r["cpu_seconds_per_image"] / vit["cpu_seconds"], 3)
            r["load_average_after"] = round(os.getloadavg()[0], 2)
            results["segment"][name] = r
            print(f"  {r['seconds_per_image']:.1f} s/image ({r['cpu_seconds_per_image']:.1f} CPU s), "
                  f"{r['tiles']} tiles,"
                  f" peak {r['peak_rss_mb']:.0f} MB, {r['fraction_of_vit_b']:.2f} x ViT-B wall, "
                  f"{r['cpu_fraction_of_vit_b']:.2f} x CPU", file=sys.stderr)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    from sac.atomic import atomic_write_text

    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: v for k, v in results.items() if k != "segment"}, indent=1))
    for name, r in results["segment"].items():
        print(f"{name:32s} {r['seconds_per_image']:6.1f} s ({r['cpu_seconds_per_image']:6.1f} CPU s)  tiles "
              f"{r['tiles']:3d}  peak {r['peak_rss_mb']:6.0f} MB  = {r['fraction_of_vit_b']:.2f} x ViT-B encoder wall,"
              f" {r['cpu_fraction_of_vit_b']:.2f} x CPU")


if __name__ == "__main__":
    main()
