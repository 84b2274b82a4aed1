"""`sac train`: fine-tune SAC (LoRA + mask decoder + prompt UNet) with PyTorch Lightning. See docs/training.md."""

from __future__ import annotations

import dataclasses

from sac.devices import DEVICE_CHOICES
from sac.models.config import SELECT_METHODS
from sac.training.config import MONITORS, VARIANTS, TrainConfig

_D = TrainConfig()  # the defaults that flags left at None keep (shown in --help)

HELP = "Fine-tune SAC (LoRA + mask decoder + prompt generator) on one or more datasets."

EPILOG = """examples:
  sac train --data ../shared/data/dsb2018 --out runs/dsb --max-time 30
  sac train --data ../shared/data/monuseg --data ../shared/data/dsb2018 --val-from-train 6 \\
      --warmup-minutes 15 --max-time 60 --out runs/default
"""


def _source(text: str):
    """``ROOT[:SPLIT]`` -> DataSource (an empty split is filled from --split)."""
    from sac.training.config import DataSource

    root, sep, split = text.rpartition(":")
    if not sep or "/" in split:  # no colon, or the colon belongs to the path
        root, split = text, ""
    return DataSource(root=root, split=split)


def add_arguments(parser) -> None:
    parser.epilog = EPILOG
    g = parser.add_argument_group("data")
    g.add_argument("--data", action="append", required=True, metavar="ROOT[:SPLIT]",
                   help="dataset root in the standard layout; repeat to train on several at once")
    g.add_argument("--extra-data", action="append", default=[], metavar="ROOT:SPLIT", help="same as another --data")
    g.add_argument("--split", default="train", help="default split of --data roots")
    g.add_argument("--val-split", default="val", help="roots that have this split are validated on it")
    g.add_argument("--val-from-train", type=int, default=None, metavar="N",
                   help="roots without --val-split: hold out N train images for validation (recorded in splits.json)")
    g.add_argument("--val-seed", type=int, default=None, help=f"seed of the hold-out choice (default {_D.val_seed})")
    g.add_argument("--val-crops", type=int, default=None, dest="val_crops_per_image",
                   help=f"fixed grid crops per validation image (default {_D.val_crops_per_image})")
    g.add_argument("--val-max-images", type=int, default=None, help="cap on images per validation split")
    g.add_argument("--scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help=f"scale augmentation range (default {_D.scale_min} {_D.scale_max})")
    g = parser.add_argument_group("model")
    g.add_argument("--variant", default=None, choices=VARIANTS,
                   help="sac (paper), sam-ft (decoder only, GT expert points), lora-noprompt, unet (UNet alone), "
                        "interactive (the one-nucleus-from-clicks head on top of an --init-from model), refiner "
                        "(the click refiner on top of an --init-from model's interactive head)")
    g.add_argument("--backbone", default=None, help="litemedsam (default) | vit_b | vit_l | vit_h")
    g.add_argument("--sam-checkpoint", default=None, help="official SAM .pth for vit_* backbones")
    g.add_argument("--lora-rank", type=int, default=None)
    g.add_argument("--lora-layers", type=int, default=None, dest="lora_last_n_layers", metavar="N",
                   help="LoRA only in the last N attention layers (CPU option; default: all, as in the paper)")
    g.add_argument("--points", type=int, default=None, dest="n_points",
                   help=f"auto points per class (default {_D.n_points})")
    g.add_argument("--select", default=None, choices=SELECT_METHODS)
    g.add_argument("--vary-points", action="store_true",
                   help="sac: each step uses 0 points (p=1/4) or a log-uniform count in 1..--points, so the model "
                        "also works with few or no points")
    g.add_argument("--mask-prompt", action="store_true",
                   help="sac: also give SAM the UNet's logits as its dense mask prompt (beyond the paper)")
    g.add_argument("--distance-head", action="store_true",
                   help="UNet also predicts each nucleus's normalised distance to its border, used by the "
                        "watershed to split touching nuclei (beyond the paper)")
    g.add_argument("--freeze-sam", action="store_true",
                   help="sac: train only the prompt generator (UNet, distance head); LoRA and decoder as initialised")
    g.add_argument("--init-from", default=None, help="model folder or run folder to initialise matching tensors from")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=None, help=f"max epochs (default {_D.epochs})")
    g.add_argument("--min-epochs", type=int, default=None)
    g.add_argument("--patience", type=int, default=None,
                   help=f"early stopping patience (epochs, default {_D.patience})")
    g.add_argument("--monitor", default=None, choices=MONITORS,
                   help=f"validation score that picks best/ and drives early stopping (default {_D.monitor}; "
                        "click_iou for --variant interactive / refiner)")
    g.add_argument("--objects-per-crop", type=int, default=None,
                   help=f"interactive, refiner: nuclei prompted per training crop (default {_D.objects_per_crop})")
    g.add_argument("--refine-rounds", type=int, default=None, dest="object_refine_rounds", metavar="N",
                   help="interactive: up to N (refiner: exactly N) corrective click rounds per step, each at the "
                        f"previous round's largest error (default {_D.object_refine_rounds})")
    g.add_argument("--crops-per-epoch", type=int, default=None,
                   help=f"random crops per epoch (default {_D.crops_per_epoch})")
    g.add_argument("--crop-pool", action="store_true",
                   help="CPU recipe: reuse the same crops every epoch and cache their frozen encoder prefix")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--lr", type=float, default=None, help=f"LoRA + decoder learning rate (default {_D.lr:g})")
    g.add_argument("--lr-prompt", type=float, default=None,
                   help=f"prompt UNet learning rate (default {_D.lr_prompt:g})")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--max-time", type=float, default=None, metavar="MINUTES", help="wall-time budget")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    g.add_argument("--warmup-minutes", type=float, default=None,
                   help="sac: train the UNet alone this long first (stage in RUN_DIR/warmup)")
    g = parser.add_argument_group("run")
    g.add_argument("--out", required=True, help="run folder (best/, last.ckpt, metrics.csv, ...)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from last.ckpt")
    g.add_argument("--device", default=None, choices=DEVICE_CHOICES)
    g.add_argument("--devices", type=int, default=None, help="number of devices (DDP when > 1)")
    g.add_argument("--threads", type=int, default=None, dest="num_threads", help="torch.set_num_threads")
    g.add_argument("--no-channels-last", action="store_true", help="disable channels_last encoder input")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. for log files)")


def build_config(args):
    """argparse namespace -> TrainConfig: every flag whose dest is a TrainConfig field sets it unless left at
    None (then the dataclass default applies); ``--data``/``--extra-data``/``--split``, ``--scale`` and the
    ``--no-*`` switches are translated below."""
    cfg = TrainConfig()
    sources = [_source(t) for t in list(args.data) + list(args.extra_data)]
    for s in sources:
        s.split = s.split or args.split
    cfg.data = sources
    for f in dataclasses.fields(TrainConfig):
        value = getattr(args, f.name, None)
        if f.name != "data" and value is not None:
            setattr(cfg, f.name, value)
    if args.scale is not None:
        cfg.scale_min, cfg.scale_max = args.scale
    cfg.channels_last = not args.no_channels_last
    cfg.progress_bar = not args.no_progress
    return cfg


def run(args) -> int:
    import json

    from sac.training.run import train

    cfg = build_config(args)
    given = tuple(n for n in ("max_time", "max_steps", "epochs") if getattr(args, n, None) is not None)
    summary = train(cfg, args.out, resume=args.resume, overrides=given)
    print(json.dumps(summary, indent=2))
    return 0
