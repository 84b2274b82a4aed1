"""Throughput of block-wise `sac segment` on a slide: tissue megapixels per minute with 1 and 2 local Dask workers,
peak RSS per worker, and the extrapolated time of a 100,000 x 80,000 40x slide with 50 % tissue.

The slide is a pyramidal tiled TIFF (mpp 0.25, 40x) built from real MoNuSeg training images: a ``rows x cols``
mosaic of 1000 x 1000 images next to ``glass`` columns (1000 px) of blank glass, so the tissue mask has blocks to
skip. Each configuration runs :func:`sac.inference.distributed.segment_blocks` -- the code
``sac segment slide.tif --workers N`` runs -- with the bundled default model, writing every output. Peak RSS per
worker is polled (psutil, every 0.2 s) on the LocalCluster's worker processes.

The machine is shared with other jobs, so wall time says little; the blocks also report their own CPU time
(``block_cpu_seconds``: every torch thread of the worker, model loading excluded). Extrapolation from CPU time: a
100,000 x 80,000 slide at the default block (2048) and halo (128) has 49 x 40 blocks; with 50 % tissue about half
are computed, each running the tiles that touch its 2304 px window (counted exactly from the tile geometry). CPU
hours = those tiles x the measured CPU seconds per tile; on ``C`` dedicated cores running single-threaded workers
the wall time is about CPU hours / C (blocks are independent), plus the output assembly at its measured rate.

    .venv/bin/python benchmarks/slide_throughput.py [--rows 1 --cols 1 --glass 1 --block 512]
        [--workers 1,2] [--out benchmarks/results/slide_throughput.json]

``os.getloadavg()`` is recorded before and after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SAC_DATA", REPO.parent / "shared" / "data"))
VAL_IDS = {"TCGA-21-5784-01Z-00-DX1", "TCGA-AR-A1AK-01Z-00-DX1", "TCGA-B0-5710-01Z-00-DX1",
           "TCGA-B0-5711-01Z-00-DX1", "TCGA-HE-7128-01Z-00-DX1", "TCGA-KB-A93J-01A-01-TS1"}


def build_slide(path: Path, rows: int, cols: int, glass: int) -> tuple[int, int]:
    import imageio.v3 as iio

    from sac.inference.slide import write_pyramid_tiff

    files = [p for p in sorted((DATA / "monuseg" / "train" / "images").glob("*.png")) if p.stem not in VAL_IDS]
    canvas = np.full((rows * 1000, (cols + glass) * 1000, 3), 238, np.uint8)
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        canvas[r * 1000 : (r + 1) * 1000, c * 1000 : (c + 1) * 1000] = iio.imread(files[k % len(files)])[..., :3]
    write_pyramid_tiff(path, canvas, mpp=0.25)
    return canvas.shape[:2]


class RssPoll:
    """Peak RSS (MB) of each child process of this one (the LocalCluster's workers), polled in a thread."""

    def __init__(self):
        import psutil

        self.me = psutil.Process()
        self.peak: dict[int, float] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            for p in self.me.children(recursive=True):
                try:
                    if any("spawn_main" in part for part in p.cmdline()):
                        self.peak[p.pid] = max(self.peak.get(p.pid, 0.0), p.memory_info().rss / 2**20)
                except Exception:  # a process that just ended
                    pass
            time.sleep(0.2)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def run_one(slide: Path, workers: int, block: int, out: Path) -> dict:
    import resource

    from sac.inference.api import load_model
    from sac.inference.config import InferenceConfig
    from sac.inference.distributed import SlideOptions, segment_blocks
    from sac.inference.writers import FORMATS

    load0 = os.getloadavg()
    model = load_model("default")
    seg = model.segmenter(InferenceConfig())
    opts = SlideOptions(workers=workers, block=block)  # 1 = a LocalCluster of one process too
    t0 = time.perf_counter()
    with RssPoll() as poll:
        summary = segment_blocks(slide, "default", seg.cfg, opts, out, FORMATS, kind="slide", segmenter=seg)
    wall = time.perf_counter() - t0
    return {
        "workers": workers, "engine": seg.engine.name if hasattr(seg, "engine") else "torch",
        "seconds": round(wall, 1), "seconds_blocks": summary["seconds_blocks"],
        "seconds_assembly": round(summary["seconds"] - summary["seconds_blocks"], 2),
        "blocks": summary["blocks"], "blocks_without_tissue": summary["blocks_without_tissue"],
        "tiles_run": summary["tiles_run"], "block_cpu_seconds": summary["block_cpu_seconds"],
        "cpu_seconds_per_tile": round(summary["block_cpu_seconds"] / max(1, summary["tiles_run"]), 3),
        "tissue_megapixels": summary["tissue_megapixels"],
        "tissue_megapixels_per_minute": round(summary["tissue_megapixels"] / (wall / 60), 3),
        "tissue_megapixels_per_cpu_minute": round(summary["tissue_megapixels"] * 60 / summary["block_cpu_seconds"], 3),
        "nuclei": summary["nuclei"],
        "peak_rss_mb_per_worker": sorted(round(v) for v in poll.peak.values()),
        "peak_rss_mb_client": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "loadavg_before": [round(x, 2) for x in load0], "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }


def tiles_for_slide(height: int, width: int, tissue: float, block: int = 2048, halo: int = 128) -> dict:
    """Tiles a block-wise run of an ``height x width`` 40x slide computes (default model geometry: 256 px tiles,
    32 px overlap), with ``tissue`` of the blocks computed; also the one-pass tile count."""
    from sac.inference.tiling import positions
    from sac.postprocess.blockwise import block_grid

    size, overlap = 256, 32
    ys, xs = np.array(positions(height, size, overlap)), np.array(positions(width, size, overlap))

    def count(lo: int, hi: int, starts: np.ndarray) -> int:
        return int(((starts < hi) & (starts + size > lo)).sum())

    per_block = [count(max(0, y0 - halo), min(height, y1 + halo), ys)
                 * count(max(0, x0 - halo), min(width, x1 + halo), xs)
                 for y0, y1, x0, x1 in block_grid(height, width, block)]
    return {"blocks": len(per_block), "tiles_all_blocks": int(sum(per_block)),
            "tiles_computed": int(round(sum(per_block) * tissue)), "tiles_one_pass": len(ys) * len(xs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--cols", type=int, default=1)
    ap.add_argument("--glass", type=int, default=1, help="extra columns (1000 px) of blank glass")
    ap.add_argument("--block", type=int, default=512)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "slide_throughput.json"))
    args = ap.parse_args()
    from sac.atomic import atomic_write_text

    with tempfile.TemporaryDirectory() as tmp:
        slide = Path(tmp) / "mosaic.tif"
        shape = build_slide(slide, args.rows, args.cols, args.glass)
        runs = [run_one(slide, int(w), args.block, Path(tmp) / f"out{w}") for w in args.workers.split(",")]
    big = tiles_for_slide(80_000, 100_000, 0.5)
    native = tiles_for_slide(10_000, 10_000, 1.0)
    per_tile = float(np.mean([r["cpu_seconds_per_tile"] for r in runs]))
    assembly_per_mp = float(np.mean([r["seconds_assembly"] for r in runs])) / (shape[0] * shape[1] / 1e6)

    def estimate(t: dict, megapixels: float) -> dict:
        cpu_h = t["tiles_computed"] * per_tile / 3600
        return {"cpu_hours": round(cpu_h, 1), "assembly_hours": round(assembly_per_mp * megapixels / 3600, 2),
                **{f"wall_hours_{c}_cores": round(cpu_h / c + assembly_per_mp * megapixels / 3600, 1)
                   for c in (2, 16, 64)}}

    result = {
        "benchmark": "slide_throughput", "slide_shape": list(shape), "slide_mpp": 0.25,
        "mosaic": {"rows": args.rows, "cols": args.cols, "glass_columns": args.glass}, "block": args.block,
        "model": "default", "runs": runs, "cpu_seconds_per_tile": round(per_tile, 3),
        "slide_100000x80000": {**big, "tissue": 0.5, **estimate(big, 8000)},
        "native_10000x10000": {**native, **estimate(native, 100), "note": "estimated, not run (CPU time on the "
                                                                          "shared 2-core machine)"},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "shared": True},
        "command": "python benchmarks/slide_throughput.py " + " ".join(
            f"--{k} {v}" for k, v in vars(args).items() if k != "out"),
    }
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
