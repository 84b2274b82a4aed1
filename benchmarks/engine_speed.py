"""`sac segment` per engine, whole process, next to the SAM ViT-B image encoder alone: the issue-13 goal.

In one run, for each engine: `sac segment` on 3 MoNuSeg 1000 x 1000 H&E images in one call (a fresh process: start,
model load, engine load from its cache, segmentation, all five outputs per image) at ``--scale 1``; its wall time
per image is divided by the time of the segment_anything ViT-B image encoder (torch, random weights, 2 threads) on
one 1 x 3 x 1024 x 1024 input, measured in the same run (before and after the engines; their mean). The engine's
cache is filled by an untimed call first; the time of that first, exporting call is reported as ``cold_s``.
Peak RSS of each process comes from ``os.wait4``.

    nice -n 10 .venv/bin/python benchmarks/engine_speed.py [--engines openvino,onnxruntime,torch] [--extra ARGS]

Timings are taken on a shared 2-core machine: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAC_DATA", REPO.parent / "shared" / "data"))
IMAGES = ("TCGA-18-5592-01Z-00-DX1", "TCGA-21-5786-01Z-00-DX1", "TCGA-38-6178-01Z-00-DX1")  # training split
VIT_B = """
import time, torch
from segment_anything import sam_model_registry
torch.set_num_threads(2)
enc = sam_model_registry["vit_b"](checkpoint=None).image_encoder.eval()
x = torch.rand(1, 3, 1024, 1024)
with torch.inference_mode():
    enc(x)  # warm-up
    t = time.perf_counter(); enc(x); print(time.perf_counter() - t)
"""




def run_rss(cmd: list[str], env: dict) -> tuple[float, float, str]:
    """-> (wall seconds, peak RSS MB, stdout) of ``cmd`` as a child process (reaped with wait4 for its rusage)."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise RuntimeError(f"{shlex.join(cmd)} failed with code {proc.returncode}")
    return wall, usage.ru_maxrss / 1024, out


def vit_b(env: dict) -> float:
    return float(run_rss([sys.executable, "-c", VIT_B], env)[2].strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", default="openvino,onnxruntime,torch")
    ap.add_argument("--extra", default="", help="extra sac segment arguments, e.g. '--overlap 8'")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "engine_speed.json")
    args = ap.parse_args()
    images = [str(DATA / "monuseg" / "train" / "images" / f"{i}.png") for i in IMAGES]
    sac = [sys.executable, "-m", "sac.cli", "segment"]
    rows: dict = {"images": list(IMAGES), "extra": args.extra, "loadavg_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "SAC_CACHE_DIR": str(Path(tmp) / "cache"), "OMP_NUM_THREADS": "2"}
        vit = [vit_b(env)]
        for engine in args.engines.split(","):
            base = [*images, "--scale", "1", "--engine", engine, *shlex.split(args.extra)]
            cold, _, _ = run_rss([*sac, images[0], "--out", f"{tmp}/warm", "--scale", "1", "--engine", engine], env)
            wall, rss, out = run_rss([*sac, *base, "--out", f"{tmp}/{engine}"], env)
            rows[engine] = {"seconds_per_image": round(wall / len(images), 2), "wall_s": round(wall, 1),
                            "peak_rss_mb": round(rss), "cold_s": round(cold, 1), "summary": out.strip()[-200:],
                            "loadavg": os.getloadavg(),
                            "command": shlex.join(["sac", "segment", "IMAGES", *base[len(images):]])}
            print(engine, rows[engine], flush=True)
        vit.append(vit_b(env))
    rows["vit_b_encoder_s"] = [round(v, 2) for v in vit]
    for engine in args.engines.split(","):
        rows[engine]["ratio_to_vit_b"] = round(rows[engine]["seconds_per_image"] / (sum(vit) / len(vit)), 3)
    rows["loadavg_end"] = os.getloadavg()
    print(json.dumps(rows, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
