"""`sac evaluate`: score predictions (--pred) or a trained model (--model) against ground truth.

    sac evaluate --pred PRED_DIR --data ROOT --split val [--json OUT]
    sac evaluate --model RUN_DIR|default|sam --data ROOT --split val [--points N ...] [--json OUT]

Both print the same table (sac.evaluation.report.format_table); see docs/metrics.md for definitions.
"""

from sac.inference.config import (
    DEVICE_CHOICES,
    ENGINE_CHOICES,
    SAM_CHOICES,
    SELECT_CHOICES,
    TTA_CHOICES,
    InferenceConfig,
    diameter_arg,
    scale_arg,
)
from sac.postprocess import DISTANCE_H

HELP = "Score predictions (--pred) or a trained model (--model) against ground truth."


def add_arguments(parser):
    src = parser.add_argument_group("what to score (exactly one)")
    src.add_argument("--pred", metavar="PRED_DIR", default=None,
                     help="folder of predicted label maps or binary masks (png/tif), matched by file stem: "
                          "<id>.png, <id>_labels.tif or <id>_mask.png; binary masks are split into "
                          "instances by connected components")
    src.add_argument("--model", metavar="RUN_DIR|default|sam", default=None,
                     help="a training run folder, 'default' (bundled model) or 'sam' (plain SAM baseline)")
    parser.add_argument("--data", metavar="ROOT", required=True, help="dataset root (standard layout)")
    parser.add_argument("--split", default="val", help="split to score")
    parser.add_argument("--json", metavar="OUT", default=None, help="also write the full result as JSON")
    m = parser.add_argument_group("model options (--model only; default: the model's own settings)")
    m.add_argument("--points", type=int, default=None, help="number of auto-prompt points")
    m.add_argument("--expert", type=int, default=None, metavar="M",
                   help="simulated expert clicks per image: M on ground-truth nuclei + M on background, applied "
                        "to the automatic result like sac segment --expert-points (0 = none)")
    m.add_argument("--select", choices=SELECT_CHOICES, default=None, help="point selection rule")
    m.add_argument("--tile", type=int, default=None, help="tile size in pixels")
    m.add_argument("--overlap", type=int, default=None, help="tile overlap in pixels")
    m.add_argument("--scale", type=scale_arg, default=None, metavar="auto|F",
                   help="resize factor in (0, 8] applied before segmenting (default auto: estimated per image from "
                        "its nucleus size, docs/scale.md)")
    m.add_argument("--nucleus-diameter", type=diameter_arg, default=None, metavar="PX",
                   help="typical nucleus diameter of the images in pixels: sets the scale instead of the estimate")
    m.add_argument("--split-h", type=float, default=None, metavar="H",
                   help=f"watershed marker height on a distance head's map (default {DISTANCE_H}; lower splits more)")
    m.add_argument("--tta", type=int, choices=TTA_CHOICES, default=None, metavar="N",
                   help="flip test-time augmentation: average the prompt UNet's maps over N mirror images "
                        f"of each tile ({', '.join(map(str, TTA_CHOICES))}; 1 = off; default {InferenceConfig.tta})")
    m.add_argument("--no-tta", dest="tta", action="store_const", const=1, help="same as --tta 1")
    m.add_argument("--sam", choices=SAM_CHOICES, default=None,
                   help=f"where the SAM encoder + decoder run on (default {InferenceConfig.sam}; all = every window)")
    m.add_argument("--seed", type=int, default=None, help="random seed (random selection, expert points)")
    m.add_argument("--device", choices=DEVICE_CHOICES, default=None, help="compute device (default cpu)")
    m.add_argument("--engine", choices=ENGINE_CHOICES, default=None,
                   help="what runs the model on the CPU (default auto: the fastest installed that matches torch)")
    m.add_argument("--sam-checkpoint", metavar="PATH", default=None, help="SAM weights for vit_* backbones")
    m.add_argument("--limit", type=int, default=None, metavar="K", help="score only the first K images")


_MODEL_ONLY = ("points", "expert", "select", "tile", "overlap", "scale", "nucleus_diameter", "split_h", "tta", "sam",
               "seed", "device", "engine", "sam_checkpoint", "limit")


def run(args) -> int:
    import json
    from pathlib import Path

    from sac.errors import SACError

    if (args.pred is None) == (args.model is None):
        raise SACError("give exactly one of --pred PRED_DIR or --model RUN_DIR|default|sam")
    from sac.atomic import atomic_write_text, check_writable
    from sac.evaluation.report import format_table

    if args.json:
        check_writable(args.json)  # fail now, not after scoring every image
    if args.pred is not None:
        used = [f"--{k.replace('_', '-')}" for k in _MODEL_ONLY if getattr(args, k) is not None]
        if used:
            raise SACError(f"{', '.join(used)} only apply to --model, not --pred")
        from tqdm import tqdm

        from sac.evaluation.report import score_folder

        result = score_folder(args.pred, args.data, args.split,
                              progress=lambda it: tqdm(it, desc="scoring", unit="image"))
        result["pred"] = str(args.pred)
    else:
        from sac.inference.config import InferenceConfig
        from sac.inference.evaluate import evaluate_model

        given = {"tile": args.tile, "overlap": args.overlap, "scale": args.scale,
                 "nucleus_diameter": args.nucleus_diameter, "n_points": args.points,
                 "select": args.select, "split_h": args.split_h, "tta": args.tta, "seed": args.seed,
                 "engine": args.engine, "sam": args.sam}
        cfg = InferenceConfig(**{k: v for k, v in given.items() if v is not None})  # None: the library default
        result = evaluate_model(args.model, Path(args.data), args.split, cfg, expert=args.expert or 0,
                                limit=args.limit, device=args.device or "cpu", sam_checkpoint=args.sam_checkpoint)
        result["model"] = str(args.model)
    result.update({"data": str(args.data), "split": args.split})
    print(format_table(result))
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
