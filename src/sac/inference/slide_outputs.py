"""Final outputs of a block-wise job, streamed from the per-block result files (:mod:`sac.inference.block`).

Per image ``<stem>`` in the output folder: ``_labels.zarr`` (OME-Zarr 0.5 group, one ``uint32`` level ``0`` in
1024 px chunks at the analysis level, micrometre scale when the mpp is known), ``.geojson`` (QuPath detections,
level-0 coordinates), ``_nuclei.csv`` (the columns of :mod:`sac.inference.measure`; coordinates, area and
perimeter in level-0 pixels), ``_overlay.png`` (contours on a thumbnail, longest side <= ``OVERLAY_SIDE``) and
``_slide.json`` (what was done: level, scale, blocks, tissue, nuclei, time).

Global ids are ``1..N`` in block order: block ``b``'s local ids are shifted by the nuclei of blocks ``0..b-1``,
so they never depend on which task finished first. Nothing is held for the whole slide but the overlay
thumbnail: each block's file is read, appended to the CSV and GeoJSON streams, painted into the Zarr and closed.
Every file is written to a temporary name and renamed only once all of them are complete (the Zarr folder last),
so an interrupted assembly leaves no output that looks finished.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np

from sac.atomic import atomic_path, atomic_write_text
from sac.inference.measure import COLUMNS
from sac.inference.writers import CONTOUR_RGB

OVERLAY_SIDE = 4096
CHUNK = 1024
SLIDE_SUFFIX = {"labels": "_labels.zarr", "overlay": "_overlay.png", "csv": "_nuclei.csv", "geojson": ".geojson"}


def _rings(coords):
    """Every ring ``[[x, y], ...]`` of a Polygon or MultiPolygon coordinate list."""
    if coords and isinstance(coords[0][0], int | float):
        yield coords
    else:
        for c in coords:
            yield from _rings(c)


def thumbnail(source, max_side: int = OVERLAY_SIDE) -> tuple[np.ndarray, float]:
    """``uint8 [h, w, 3]`` of the whole analysis image and its factor (analysis pixels per thumbnail pixel).
    Slides use their pyramid; flat images are read in bands of rows and subsampled (never whole)."""
    if hasattr(source, "thumbnail"):
        return source.thumbnail(max_side)
    H, W = source.shape
    step = max(1, -(-max(H, W) // max_side))
    parts = [source.read(y, min(y + 1024, H), 0, W)[(-y) % step :: step, ::step] for y in range(0, H, 1024)]
    return np.ascontiguousarray(np.concatenate(parts)), float(step)


def _write_zarr_meta(group, mpp: float | None, downsample: float) -> None:
    """OME-Zarr 0.5 multiscales metadata (one level), so OME-Zarr readers (napari-ome-zarr, QuPath) open it."""
    unit = {"unit": "micrometer"} if mpp else {}
    px = (mpp * downsample) if mpp else 1.0
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "name": "labels",
        "axes": [{"name": "y", "type": "space", **unit}, {"name": "x", "type": "space", **unit}],
        "datasets": [{"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [px, px]}]}],
    }]}


def assemble(job, out_dir: Path, stem: str, formats, source, summary: dict) -> list[Path]:
    """Stream every block result of ``job`` into the final outputs (``formats`` among labels, overlay, csv,
    geojson; ``mask`` has no slide form) and ``<stem>_slide.json`` (``summary``, updated with the totals); returns
    the paths.
    """
    import pandas as pd
    from skimage.draw import polygon_perimeter

    out_dir = Path(out_dir)
    cores = job.cores()
    skip = set(job.skip)
    counts = []
    for i in range(len(cores)):
        if i in skip:
            counts.append(0)
            continue
        with np.load(job.result_path(i)) as f:
            counts.append(int(f["n"]))
    bases = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    H, W = job.shape
    paths: dict[str, Path] = {fmt: out_dir / f"{stem}{SLIDE_SUFFIX[fmt]}" for fmt in formats if fmt in SLIDE_SUFFIX}
    overlay = factor = None
    if "overlay" in paths:
        overlay, factor = thumbnail(source)
        overlay = np.array(overlay)  # writable copy: readers may return read-only buffers
    ds, (ox, oy) = job.downsample, job.origin
    giant = 0
    with contextlib.ExitStack() as stack:
        tmp = {fmt: stack.enter_context(atomic_path(p)) for fmt, p in paths.items() if fmt != "labels"}
        csv = stack.enter_context(open(tmp["csv"], "w", newline="")) if "csv" in tmp else None
        geo = stack.enter_context(open(tmp["geojson"], "w")) if "geojson" in tmp else None
        zroot = zarr_tmp = None
        if "labels" in paths:
            import zarr

            zarr_tmp = out_dir / f".{paths['labels'].name}.{secrets.token_hex(4)}.tmp"
            stack.callback(shutil.rmtree, zarr_tmp, ignore_errors=True)  # no-op once renamed
            zroot = zarr.open_group(zarr_tmp, mode="w", zarr_format=3)
            zarr_arr = zroot.create_array("0", shape=(H, W), chunks=(min(CHUNK, H), min(CHUNK, W)), dtype="uint32",
                                          fill_value=0)
            _write_zarr_meta(zroot, job.mpp or summary.get("mpp"), ds)
        if csv is not None:
            csv.write(",".join(COLUMNS) + "\n")
        if geo is not None:
            geo.write('{"type":"FeatureCollection","features":[')
        first = True
        for i in range(len(cores)):
            if i in skip:
                continue
            base = int(bases[i])
            with np.load(job.result_path(i)) as f:
                giant += int(f["giant"])
                if csv is not None and len(f["table"]):
                    t = pd.DataFrame(f["table"], columns=list(COLUMNS))
                    t["id"] = t["id"].astype(np.int64) + base
                    for col in ("area", "bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1"):
                        t[col] = t[col].round(2)
                    t.to_csv(csv, header=False, index=False, float_format="%.4f", lineterminator="\n")
                feats = json.loads(str(f["features"])) if (geo is not None or overlay is not None) else []
                for feat in feats:
                    gid = feat["properties"]["nucleus_id"] + base
                    feat["properties"]["nucleus_id"] = gid
                    feat["properties"]["name"] = f"nucleus {gid}"
                    if geo is not None:
                        geo.write(("" if first else ",") + json.dumps(feat, separators=(",", ":")))
                        first = False
                    if overlay is not None:
                        for ring in _rings(feat["geometry"]["coordinates"]):
                            xy = np.asarray(ring, np.float64)
                            xs, ys = (xy[:, 0] / ds - ox) / factor, (xy[:, 1] / ds - oy) / factor
                            rr, cc = polygon_perimeter(ys, xs, shape=overlay.shape[:2])
                            overlay[rr, cc] = CONTOUR_RGB
                if zroot is not None:
                    for k in range(int(f["pieces"])):
                        y0, y1, x0, x1 = (int(v) for v in f[f"box_{k}"])
                        lab = f[f"labels_{k}"]
                        region = zarr_arr[y0:y1, x0:x1]
                        sel = lab > 0
                        region[sel] = lab[sel].astype(np.uint32) + np.uint32(base)
                        zarr_arr[y0:y1, x0:x1] = region
        if geo is not None:
            geo.write("]}")
        if overlay is not None:
            import imageio.v3 as iio

            iio.imwrite(tmp["overlay"], overlay, extension=".png")
        if zarr_tmp is not None:
            _replace_dir(zarr_tmp, paths["labels"])
    summary.update(nuclei=int(bases[-1]), giant_regions_dropped=giant)
    atomic_write_text(out_dir / f"{stem}_slide.json", json.dumps(summary, indent=2) + "\n")  # written last
    return [*paths.values(), out_dir / f"{stem}_slide.json"]


def _replace_dir(src: Path, target: Path) -> None:
    """Rename folder ``src`` to ``target``; an existing ``target`` is moved aside first and then deleted."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.{secrets.token_hex(4)}.old"
        os.replace(target, old)
    os.replace(src, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
