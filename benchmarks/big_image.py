"""Peak memory and wall time of `sac segment` on a large (default 10,000 x 10,000) RGB tiled TIFF.

    python benchmarks/big_image.py /work/shared/data/monuseg/train/images --size 10000 --scale 0.25

1. Builds a mosaic of the folder's images (cycled in sorted order, each cropped/padded to a cell of the first
   image's size) and writes it band by band as a tiled (256 x 256), zlib-compressed BigTIFF (``--tiff``,
   default ``/tmp/big_<size>.tif``; reused if it exists), so the mosaic is never held whole in memory.
2. Runs ``/usr/bin/time -v sac segment <tiff> --out <out> --scale <scale>`` (the venv's ``sac``) and records the
   wall time, the peak resident set size ("Maximum resident set size"), the nuclei count (the CLI's last line and
   the CSV's rows) and the size of every output file.
3. Appends/updates the entry for this scale in ``benchmarks/results/big_image.json``.

Heavy: prefix with ``echo 19 > /proc/self/autogroup;`` on a shared machine. Data stays under /tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "big_image.json"


def make_mosaic(folder: Path, size: int, path: Path, tile: int = 256) -> Path:
    """Write a ``size x size x 3`` uint8 mosaic of the images in ``folder`` to ``path`` (tiled zlib BigTIFF)."""
    import tifffile

    from sac.data.io import read_image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".tif", ".tiff", ".jpg"))
    if not files:
        raise SystemExit(f"{folder}: no images")
    images = [read_image(p) for p in files]
    ch, cw = images[0].shape[:2]
    cells_x = -(-size // cw)

    cells = []
    for img in images:  # every image cropped/zero-padded to the first image's size
        c = np.zeros((ch, cw, 3), np.uint8)
        h, w = min(ch, img.shape[0]), min(cw, img.shape[1])
        c[:h, :w] = img[:h, :w]
        cells.append(c)

    def tiles():
        for y in range(0, size, tile):
            band = np.zeros((tile, cells_x * cw, 3), np.uint8)  # one row of TIFF tiles, ~8 MB
            for yy in range(y, min(y + tile, size)):
                r, ry = divmod(yy, ch)
                for c in range(cells_x):
                    band[yy - y, c * cw : (c + 1) * cw] = cells[(r * cells_x + c) % len(cells)][ry]
            for x in range(0, size, tile):
                block = np.zeros((tile, tile, 3), np.uint8)
                w = min(tile, size - x)
                block[:, :w] = band[:, x : x + w]
                yield block

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    with tifffile.TiffWriter(tmp, bigtiff=True) as tw:
        tw.write(tiles(), shape=(size, size, 3), dtype=np.uint8, tile=(tile, tile), compression="zlib",
                 photometric="rgb")
    os.replace(tmp, path)
    return path


def parse_time_v(stderr: str) -> dict:
    """``/usr/bin/time -v`` report -> wall s, user s, system s, peak RSS MB."""
    def field(name: str) -> str:
        m = re.search(rf"^\s*{re.escape(name)}.*?:\s*(\S+)\s*$", stderr, re.M)
        return m.group(1) if m else ""

    wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss)")
    parts = [float(p) for p in wall.split(":")] if wall else [float("nan")]
    secs = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return {"wall_s": round(secs, 1), "user_s": float(field("User time (seconds)") or "nan"),
            "system_s": float(field("System time (seconds)") or "nan"),
            "peak_rss_mb": round(int(field("Maximum resident set size (kbytes)") or 0) / 1024, 1)}


def run(tiff: Path, out: Path, scale: float, extra: list[str]) -> dict:
    sac = str(Path(sys.executable).with_name("sac"))
    cmd = ["/usr/bin/time", "-v", sac, "segment", str(tiff), "--out", str(out), "--scale", str(scale), *extra]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"sac segment failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    stem = tiff.stem
    csv_rows = sum(1 for _ in open(out / f"{stem}_nuclei.csv")) - 1
    summary = proc.stdout.strip().splitlines()[-1]
    m = re.search(r"(\d+) nuclei", summary)
    return {
        "command": " ".join(cmd[2:]),
        "scale": scale,
        **parse_time_v(proc.stderr),
        "wall_s_measured_here": round(wall, 1),
        "nuclei": int(m.group(1)) if m else None,
        "csv_rows": csv_rows,
        "summary_line": summary,
        "outputs_bytes": {p.name: p.stat().st_size for p in sorted(out.iterdir())},
    }


def machine() -> dict:
    mem = next((ln.split()[1] for ln in open("/proc/meminfo") if ln.startswith("MemTotal")), "0")
    return {"cpus": os.cpu_count(), "mem_gib": round(int(mem) / 2**20, 1), "platform": platform.platform(),
            "python": platform.python_version(),
            "note": "record here what else ran on the machine (the script cannot know)"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("images", type=Path, help="folder of images for the mosaic (e.g. MoNuSeg train/images)")
    p.add_argument("--size", type=int, default=10000)
    p.add_argument("--scale", type=float, default=0.25)
    p.add_argument("--tiff", type=Path, default=None, help="mosaic path (default /tmp/big_<size>.tif)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default /tmp/big_out_<scale>)")
    p.add_argument("--make-only", action="store_true", help="only write the mosaic")
    p.add_argument("--results", type=Path, default=RESULTS)
    a, extra = p.parse_known_args()
    tiff = a.tiff or Path(f"/tmp/big_{a.size}.tif")
    if not tiff.exists():
        t = time.perf_counter()
        make_mosaic(a.images, a.size, tiff)
        print(f"wrote {tiff} ({tiff.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t:.0f} s", flush=True)
    if a.make_only:
        return
    out = a.out or Path(f"/tmp/big_out_{a.scale:g}")
    r = run(tiff, out, a.scale, extra)
    r.update(image=f"{a.size} x {a.size} RGB mosaic of {a.images} (tiled 256, zlib BigTIFF)",
             tiff_bytes=tiff.stat().st_size, machine=machine(),
             date=time.strftime("%Y-%m-%d %H:%M:%S"))
    data = json.loads(a.results.read_text()) if a.results.exists() else {"runs": []}
    data["runs"] = [x for x in data["runs"] if x.get("scale") != a.scale] + [r]
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.write_text(json.dumps(data, indent=2) + "\n")
    print(json.dumps({k: r[k] for k in ("wall_s", "peak_rss_mb", "nuclei", "csv_rows")}))


if __name__ == "__main__":
    main()
