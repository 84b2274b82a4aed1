"""`sac train`: fine-tune SAC (LoRA + mask decoder + prompt UNet) with PyTorch Lightning. See docs/training.md."""

from __future__ import annotations

from sac.training.config import MONITORS, VARIANTS

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
    g.add_argument("--val-seed", type=int, default=None, help="seed of the hold-out choice (default 0)")
    g.add_argument("--val-crops", type=int, default=None, dest="val_crops_per_image",
                   help="fixed grid crops per validation image (default 4)")
    g.add_argument("--val-max-images", type=int, default=None, help="cap on images per validation split")
    g.add_argument("--scale", type=float, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="scale augmentation range (default 0.8 1.25)")
    g = parser.add_argument_group("model")
    g.add_argument("--variant", default=None, choices=VARIANTS,
                   help="sac (paper), sam-ft (decoder only, GT expert points), lora-noprompt, unet (UNet alone), "
                        "interactive (the one-nucleus-from-clicks head on top of an --init-from model)")
    g.add_argument("--backbone", default=None, help="litemedsam (default) | vit_b | vit_l | vit_h")
    g.add_argument("--sam-checkpoint", default=None, help="official SAM .pth for vit_* backbones")
    g.add_argument("--lora-rank", type=int, default=None)
    g.add_argument("--lora-layers", type=int, default=None, dest="lora_last_n_layers", metavar="N",
                   help="LoRA only in the last N attention layers (CPU option; default: all, as in the paper)")
    g.add_argument("--points", type=int, default=None, dest="n_points", help="auto points per class (default 16)")
    g.add_argument("--select", default=None, choices=("centroid", "random"))
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
    g.add_argument("--epochs", type=int, default=None, help="max epochs (default 30)")
    g.add_argument("--min-epochs", type=int, default=None)
    g.add_argument("--patience", type=int, default=None, help="early stopping patience (epochs, default 10)")
    g.add_argument("--monitor", default=None, choices=MONITORS,
                   help="validation score that picks best/ and drives early stopping (default dice; "
                        "click_iou for --variant interactive)")
    g.add_argument("--objects-per-crop", type=int, default=None,
                   help="interactive: ground-truth nuclei prompted per training crop (default 4)")
    g.add_argument("--crops-per-epoch", type=int, default=None, help="random crops per epoch (default 64)")
    g.add_argument("--crop-pool", action="store_true",
                   help="CPU recipe: reuse the same crops every epoch and cache their frozen encoder prefix")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--lr", type=float, default=None, help="LoRA + decoder learning rate (default 3e-4)")
    g.add_argument("--lr-prompt", type=float, default=None, help="prompt UNet learning rate (default 1e-3)")
    g.add_argument("--seed", type=int, default=None)
    g.add_argument("--max-time", type=float, default=None, metavar="MINUTES", help="wall-time budget")
    g.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps")
    g.add_argument("--warmup-minutes", type=float, default=None,
                   help="sac: train the UNet alone this long first (stage in RUN_DIR/warmup)")
    g = parser.add_argument_group("run")
    g.add_argument("--out", required=True, help="run folder (best/, last.ckpt, metrics.csv, ...)")
    g.add_argument("--resume", action="store_true", help="continue the run in --out from last.ckpt")
    g.add_argument("--device", default=None, choices=("cpu", "cuda", "auto"))
    g.add_argument("--devices", type=int, default=None, help="number of devices (DDP when > 1)")
    g.add_argument("--threads", type=int, default=None, dest="num_threads", help="torch.set_num_threads")
    g.add_argument("--no-channels-last", action="store_true", help="disable channels_last encoder input")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. for log files)")


def build_config(args):
    """argparse namespace -> TrainConfig (flags left at None keep the dataclass defaults)."""
    from sac.training.config import TrainConfig

    cfg = TrainConfig()
    sources = [_source(t) for t in list(args.data) + list(args.extra_data)]
    for s in sources:
        s.split = s.split or args.split
    cfg.data = sources
    cfg.val_split = args.val_split
    for name in ("val_from_train", "val_seed", "val_crops_per_image", "val_max_images", "variant", "backbone",
                 "sam_checkpoint", "lora_rank", "lora_last_n_layers", "n_points", "select", "init_from", "epochs",
                 "min_epochs", "patience", "crops_per_epoch", "batch_size", "lr", "lr_prompt", "seed", "max_time",
                 "max_steps", "warmup_minutes", "device", "devices", "num_threads", "monitor", "objects_per_crop"):
        value = getattr(args, name, None)
        if value is not None:
            setattr(cfg, name, value)
    if args.scale is not None:
        cfg.scale_min, cfg.scale_max = args.scale
    cfg.channels_last = not args.no_channels_last
    cfg.crop_pool = bool(args.crop_pool)
    cfg.mask_prompt = bool(args.mask_prompt)
    cfg.distance_head = bool(args.distance_head)
    cfg.freeze_sam = bool(args.freeze_sam)
    cfg.vary_points = bool(args.vary_points)
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
