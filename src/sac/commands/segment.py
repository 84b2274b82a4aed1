"""`sac segment`: nuclei masks, instances, measurements and QuPath/napari files for images of any size."""

from sac.inference.config import (
    DEVICE_CHOICES,
    ENGINE_CHOICES,
    INSTANCE_CHOICES,
    SAM_CHOICES,
    SELECT_CHOICES,
    TTA_CHOICES,
    InferenceConfig,
    diameter_arg,
    scale_arg,
)
from sac.postprocess import DISTANCE_H

HELP = "Segment nuclei in images: masks, instances, measurements, QuPath/napari outputs."

_EPILOG = """\
outputs per image in --out: <stem>_mask.png (0/255), <stem>_labels.tif (uint16/uint32 ids), <stem>_overlay.png
(contours, positive prompts blue, negative pink), <stem>_nuclei.csv (one row per nucleus), <stem>.geojson (QuPath
detections); summary.csv for several images. Expert points are "x,y,label;..." in image pixels (label 1 = nucleus,
0 = background) or a JSON file (a list, or {"<file name or stem>": [[x, y, label], ...]}). See docs/segment.md.
"""


def add_arguments(parser):
    parser.epilog = _EPILOG
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders or globs (PNG/JPEG/BMP/TIFF); slide files (SVS/NDPI/MRXS/...)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    parser.add_argument("--model", default="default",
                        help="'default' (bundled), 'sam' (zero-shot backbone), a model folder or a run folder")
    parser.add_argument("--points", type=int, default=None, metavar="N",
                        help="automatic prompts per class per tile (default: what the model was trained with)")
    parser.add_argument("--select", choices=SELECT_CHOICES, default=None,
                        help="automatic prompt selection (default: the model's)")
    parser.add_argument("--expert-points", default=None, metavar="POINTS|FILE.json",
                        help='expert clicks "x,y,label;..." in image pixels, or a JSON file: label 0 removes the '
                             'nucleus under the point, 1 adds a missed nucleus there (docs/interactive.md)')
    parser.add_argument("--tile", type=int, default=None, metavar="T",
                        help="window side in model pixels, at most the model input (default: the input size, 256 for "
                             "litemedsam; smaller windows are padded to it)")
    parser.add_argument("--overlap", type=int, default=None, metavar="O",
                        help="minimum overlap of neighbouring windows in model pixels (default: tile/8)")
    parser.add_argument("--scale", type=scale_arg, default=None, metavar="auto|F",
                        help="resample images by F in (0, 8] before segmentation, outputs back to full size (0.5 = "
                             "40x->20x); default auto: per image, the factor that brings its nuclei to the model's "
                             "training size, estimated by the model (kept 1 near that size; docs/scale.md)")
    parser.add_argument("--nucleus-diameter", type=diameter_arg, default=None, metavar="PX",
                        help="typical nucleus diameter of the images in pixels: sets the scale instead of the "
                             "estimate (with --scale auto)")
    parser.add_argument("--instances", choices=INSTANCE_CHOICES, default=None,
                        help=f"how touching nuclei are separated (default {InferenceConfig.instances}; none = "
                             "components)")
    parser.add_argument("--split-h", type=float, default=None, metavar="H",
                        help="watershed marker height on the distance head's map, in (0, 1): lower splits touching "
                             f"nuclei more (default {DISTANCE_H}; 0.1 suited dense H&E, 0.2 large fluorescent nuclei)")
    parser.add_argument("--tta", type=int, choices=TTA_CHOICES, default=None, metavar="N",
                        help="flip test-time augmentation: average the prompt UNet's maps over N mirror images "
                             f"of each tile ({', '.join(map(str, TTA_CHOICES))}; 1 = off; "
                             f"default {InferenceConfig.tta})")
    parser.add_argument("--no-tta", dest="tta", action="store_const", const=1, help="same as --tta 1")
    parser.add_argument("--sam", choices=SAM_CHOICES, default=None,
                        help=f"windows the SAM encoder + decoder run on in the automatic pass (default "
                             f"{InferenceConfig.sam}: only where expert points are; 'all' = the paper's method on "
                             "every window, ~8x slower and no more accurate, docs/segment.md)")
    parser.add_argument("--min-area", type=int, default=None, metavar="PX",
                        help=f"drop nuclei smaller than this (default {InferenceConfig.min_area})")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default=None, help="compute device (default cpu)")
    parser.add_argument("--engine", choices=ENGINE_CHOICES, default=None,
                        help="what runs the model on the CPU (default auto: the fastest installed that matches torch; "
                             "--device cuda runs torch)")
    parser.add_argument("--formats", default="mask,labels,overlay,csv,geojson",
                        help="comma-separated subset of mask,labels,overlay,csv,geojson")
    parser.add_argument("--sam-checkpoint", default=None, metavar="PATH",
                        help="official SAM .pth for models on a vit_b/l/h backbone")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"seed of random prompt selection (default {InferenceConfig.seed})")
    slides = parser.add_argument_group(
        "whole-slide images and scale-out",
        "slides (SVS, NDPI, MRXS, OME-TIFF, pyramidal TIFF) are always segmented block by block; flat images too "
        "with --workers/--scheduler. Outputs: <stem>_labels.zarr, .geojson, _nuclei.csv, _overlay.png (downscaled), "
        "_slide.json. See docs/slides.md.")
    slides.add_argument("--workers", type=int, default=None, metavar="N",
                        help="run blocks on a local Dask cluster of N processes (default: in this process)")
    slides.add_argument("--scheduler", default=None, metavar="tcp://HOST:PORT",
                        help="run blocks on an existing dask.distributed cluster")
    slides.add_argument("--mpp", type=float, default=None, metavar="UM",
                        help="microns per pixel of the input (level 0), overriding the slide's own value")
    slides.add_argument("--roi", default=None, metavar="x,y,w,h", help="region of a slide, level-0 pixels")
    slides.add_argument("--tissue-threshold", type=float, default=None, metavar="S",
                        help="HSV saturation above which a thumbnail pixel is tissue (default: Otsu, at most 0.1)")
    slides.add_argument("--no-tissue-mask", action="store_true", help="segment the whole slide, glass included")
    slides.add_argument("--resume", action="store_true",
                        help="finish an interrupted block-wise run (blocks already done are not recomputed)")
    slides.add_argument("--block", type=int, default=None, metavar="PX",
                        help="block core side in analysis pixels (default 2048)")
    slides.add_argument("--halo", type=int, default=None, metavar="PX",
                        help="context around each block, analysis pixels; > the largest nucleus + 16 (default "
                             "128, divided by the scale below 1)")


def run(args) -> int:
    import functools
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    from sac.errors import SACError
    from sac.inference.experts import parse_expert_points
    from sac.inference.files import expand_inputs
    from sac.inference.writers import parse_formats

    # Everything a user can get wrong is checked before the (slow) model load.
    given = {"tile": args.tile, "overlap": args.overlap, "n_points": args.points, "select": args.select,
             "nucleus_diameter": args.nucleus_diameter, "scale": args.scale, "instances": args.instances,
             "min_area": args.min_area, "seed": args.seed, "split_h": args.split_h, "tta": args.tta,
             "engine": args.engine, "sam": args.sam}
    cfg = InferenceConfig(**{k: v for k, v in given.items() if v is not None}).validate()  # None: library default
    formats = parse_formats(args.formats)
    points = parse_expert_points(args.expert_points)
    from sac.inference.distributed import SlideOptions
    from sac.inference.slide import parse_roi

    slide_opts = SlideOptions(
        workers=args.workers, scheduler=args.scheduler, mpp=args.mpp, roi=parse_roi(args.roi),
        tissue_threshold=args.tissue_threshold, tissue_mask=not args.no_tissue_mask, resume=args.resume,
        block=args.block, halo=args.halo,
    ).validate()
    images, problems = expand_inputs(args.inputs)
    for msg in problems:
        print(f"error: {msg}", file=sys.stderr)
    if not images:
        raise SACError("no input images found")

    from tqdm import tqdm

    from sac.inference.api import load_model
    from sac.inference.distributed import segment_blocks_file
    from sac.inference.files import start_file
    from sac.inference.slide import is_slide
    from sac.inference.writers import write_summary

    start = time.perf_counter()
    model = load_model(args.model, device=args.device or "cpu", sam_checkpoint=args.sam_checkpoint)
    segmenter = model.segmenter(cfg)
    out = Path(args.out)
    rows: list[dict] = []

    def report(row: dict) -> None:
        if row["status"] != "ok":
            tqdm.write(f"error: {row['status']}", file=sys.stderr)
        elif row.get("scale_info"):
            tqdm.write(f"{Path(row['image']).name}: {row['nuclei']} nuclei, {row['scale_info']}")
        rows.append(row)

    bar = tqdm(images, desc="images", unit="img", disable=None, file=sys.stderr)
    # One image's nuclei and outputs are made on a second thread while the model runs on the next (at most one
    # pending, so memory holds two images): see sac.inference.files.start_file.
    with ThreadPoolExecutor(1, thread_name_prefix="sac-finish") as pool:
        pending = None
        for path in bar:
            bar.set_postfix_str(path.name)
            if slide_opts.workers or slide_opts.scheduler or is_slide(path):
                row = segment_blocks_file(path, args.model, segmenter, slide_opts, out, formats, points)
                finish = functools.partial(dict, row)
            else:
                finish = start_file(segmenter, path, out, formats, points)
            if pending is not None:
                report(pending.result())
            pending = pool.submit(finish)
        if pending is not None:
            report(pending.result())
    failed = len(problems) + sum(r["status"] != "ok" for r in rows)
    if len(images) > 1:
        write_summary(out / "summary.csv", rows)
    ok = [r for r in rows if r["status"] == "ok"]
    nuclei = sum(r["nuclei"] for r in ok)
    fail = f", {failed} failed" if failed else ""
    print(f"segmented {len(ok)} image(s){fail}: {nuclei} nuclei in {time.perf_counter() - start:.1f} s -> {out}")
    return 2 if failed else 0
