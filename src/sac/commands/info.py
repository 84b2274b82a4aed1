"""`sac info`: parameter counts of a SAC configuration (paper Table 6)."""

from __future__ import annotations

from sac.models.config import LoraConfig

HELP = "Print the trainable/frozen parameter table of a SAC configuration (paper Table 6)."

_ROWS = (
    ("lora", "LoRA on Q,V (image encoder)", True),
    ("mask_decoder", "mask decoder", True),
    ("object_decoder", "interactive head (object decoder)", True),
    ("refiner", "click refiner (interactive)", True),
    ("prompt_generator", "auto-prompt generator (UNet)", True),
    ("image_encoder", "image encoder (base)", False),
    ("prompt_encoder", "prompt encoder", False),
)


def add_arguments(parser):
    parser.add_argument("--backbone", default="litemedsam", help="litemedsam, vit_b, vit_l or vit_h")
    parser.add_argument("--lora-rank", type=int, default=None, help=f"LoRA rank r (default {LoraConfig().rank})")
    parser.add_argument("--no-lora", action="store_true", help="count the SAM-FT variant (no LoRA)")
    parser.add_argument("--no-prompts", action="store_true", help="count without the auto-prompt generator")
    parser.add_argument("--interactive", action="store_true",
                        help="count the interactive head too (a second mask decoder for one nucleus from clicks)")
    parser.add_argument("--refiner", action="store_true",
                        help="count the click refiner too (a small UNet on the head's mask; implies --interactive)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def run(args) -> int:
    import json

    import torch

    from sac.backbones import build_sac, get_spec
    from sac.errors import SACError
    from sac.models.config import SACConfig

    spec = get_spec(args.backbone)
    cfg = SACConfig(backbone=spec.name)
    if args.lora_rank is not None:
        if args.lora_rank < 1:
            raise SACError(f"--lora-rank must be >= 1, got {args.lora_rank}")
        cfg.lora.rank = args.lora_rank
        cfg.lora.alpha = float(args.lora_rank)
    cfg.lora.enabled = not args.no_lora
    cfg.prompts.enabled = not args.no_prompts
    cfg.interactive = bool(args.interactive or args.refiner)
    cfg.refiner = bool(args.refiner) and cfg.prompts.enabled
    # Counting needs shapes only: build SAM ViTs on the meta device (no memory; vit_h in well under a second).
    # TinyViT's constructor calls .item() on a tensor, impossible on meta, but it is small enough for the CPU.
    device = torch.device("meta") if spec.layout == "vit" else torch.device("cpu")
    with device:
        model = build_sac(cfg, pretrained=False)
    counts = model.parameter_groups()
    result = {
        "backbone": spec.name,
        "weights": "not loaded (shapes only; counts do not depend on weights)",
        "lora_rank": cfg.lora.rank if cfg.lora.enabled else None,
        "auto_prompts": cfg.prompts.enabled,
        "input_size": spec.input_size,
        **counts,
        "trainable_percent": round(100.0 * counts["trainable"] / counts["total"], 3),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    lora = f"LoRA r={cfg.lora.rank} on Q,V" if cfg.lora.enabled else "no LoRA"
    print(f"backbone {spec.name} ({spec.description}); {lora}; input {spec.input_size}px")
    print("weights not loaded: parameter counts depend on the architecture only")
    print(f"{'part':32s} {'parameters':>14s}  status")
    for key, label, trained in _ROWS:
        if not counts[key]:
            status = "not used"  # e.g. LoRA with --no-lora: 0 parameters are neither trained nor frozen
        else:
            status = "trainable" if trained and _is_trained(key, cfg) else "frozen"
        print(f"{label:32s} {counts[key]:>14,d}  {status}")
    print(f"{'trainable':32s} {counts['trainable']:>14,d}  {result['trainable_percent']:.2f}%")
    print(f"{'frozen':32s} {counts['frozen']:>14,d}")
    print(f"{'total':32s} {counts['total']:>14,d}")
    return 0


def _is_trained(key: str, cfg) -> bool:
    return key != "mask_decoder" or cfg.train_decoder
