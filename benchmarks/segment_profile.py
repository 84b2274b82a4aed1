"""Where the time of one `sac segment` image goes: read, UNet, encoder, decoder, stitch, instances, each writer.

Segments one image with ``segment_file`` (what the CLI runs per image: all five outputs) under two settings in one
process -- ``before`` (torch, SAM on every window: the settings before issue 13) and ``after`` (the current
defaults: ``InferenceConfig()`` at scale 1) -- with each stage's functions wrapped in timers. A 200 x 200 warm-up
crop runs first for each setting (not timed).

    nice -n 10 .venv/bin/python benchmarks/segment_profile.py [--image PATH] [--out JSON]

Timings are taken on a shared 2-core machine (load average recorded).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAC_DATA", REPO.parent / "shared" / "data"))
IMAGE = DATA / "monuseg" / "train" / "images" / "TCGA-21-5784-01Z-00-DX1.png"
SETTINGS = {"before": {"engine": "torch", "sam": "all", "tta": 1, "overlap": 32}, "after": {}}


def timed(store: dict, key: str, fn):
    @functools.wraps(fn)
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            store[key] += time.perf_counter() - t

    return wrapper


def profile(loaded, image: Path, overrides: dict) -> dict:
    from sac.data.io import read_image
    from sac.inference import files, measure, reader, writers
    from sac.inference.config import InferenceConfig
    from sac.inference.segmenter import Segmenter
    from sac.inference.tiling import Stitcher

    t0 = time.perf_counter()
    cfg = InferenceConfig(**{"scale": 1.0, **overrides})
    seg = Segmenter(loaded.module, cfg)
    build_s = time.perf_counter() - t0
    seg.segment(read_image(image)[:200, :200])
    seg.windows_run = [0, 0]
    store: dict[str, float] = defaultdict(float)
    patches = [(reader, "open_image", "read"), (Segmenter, "window_input", "read"),
               (Segmenter, "scale_for", "scale"), (Segmenter, "instances", "instances"),
               (Stitcher, "add", "stitch"), (Stitcher, "result", "stitch"), (Segmenter, "to_window", "stitch"),
               (measure, "nuclei_table", "measurements")]
    patches += [(writers, f"write_{w}", f"write_{w}") for w in ("mask", "labels", "overlay", "table", "geojson")]
    for stage in ("prompt_maps", "encode", "decode"):
        setattr(seg.engine, stage, timed(store, {"prompt_maps": "unet"}.get(stage, stage), getattr(seg.engine, stage)))
    saved = [(obj, name, getattr(obj, name)) for obj, name, _ in patches]
    for obj, name, key in patches:
        setattr(obj, name, timed(store, key, getattr(obj, name)))
    try:
        with tempfile.TemporaryDirectory() as out:
            t = time.perf_counter()
            row = files.segment_file(seg, image, Path(out), writers.FORMATS, on_tile=lambda n: None)
            total = time.perf_counter() - t
    finally:
        for obj, name, fn in saved:
            setattr(obj, name, fn)
    assert row["status"] == "ok", row
    stages = {k: round(v, 3) for k, v in sorted(store.items(), key=lambda kv: -kv[1])}
    return {"total_s": round(total, 2), "stages_s": stages, "other_s": round(total - sum(store.values()), 2),
            "segmenter_build_s": round(build_s, 2), "windows": seg.windows_run[0], "sam_windows": seg.windows_run[1],
            "nuclei": row["nuclei"], "engine": seg.engine.name, "settings": {"scale": 1.0, **overrides},
            "loadavg": os.getloadavg()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image", type=Path, default=IMAGE)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "segment_profile.json")
    args = ap.parse_args()
    import torch

    from sac.inference.api import load_model

    torch.set_num_threads(2)
    loaded = load_model("default")
    result = {"image": args.image.name}
    for name, overrides in SETTINGS.items():
        result[name] = profile(loaded, args.image, overrides)
        print(name, json.dumps(result[name]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
