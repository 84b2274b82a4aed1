"""Paper Tables 1 (MoNuSeg) and 2 (DSB): UNet alone, SAM zero-shot 1-expert, SAM-FT 1-expert, SAC 0-expert,
and beyond the paper SAC with the UNet map as SAM's mask prompt (``RUNS/goal-mp``) and with a distance head on
the UNet for instance splitting (``RUNS/goal-dh``), then trained with varied point counts (``RUNS/goal-vp``),
and the same ingredients in the two-stage <= 2 h recipe (``RUNS/fast-unet`` UNet + distance head, ``RUNS/fast``).

Whole-image F1 / IoU / Dice (per-image means; pooled Dice, AJI and PQ too) on the MoNuSeg hold-out and DSB val,
with the models trained by ``benchmarks/train_models.sh``. Writes ``benchmarks/results/table1_2.json``.

    .venv/bin/python benchmarks/table1_2.py [--sets monuseg dsb] [--runs runs]
"""

from __future__ import annotations

import sys

from paper_eval import Table, parser, run_eval


def main() -> None:
    args = parser(__doc__).parse_args()
    table = Table("table1_2", "python benchmarks/table1_2.py " + " ".join(sys.argv[1:]))
    for s in args.sets:
        # Rows not measured elsewhere first (SAC's own rows are also in goal_*.json / unet_alone_*.json).
        if (args.runs / "fast").is_dir():  # the <= 2 h recipe: UNet + distance head, then SAC + mask prompt
            run_eval(args, table, f"{s}: 2-hour recipe SAC 0-expert", "fast", s,
                     unet_key=f"{s}: 2-hour recipe: its UNet alone")
        if (args.runs / "fast-unet").is_dir():  # its first stage alone (UNet + distance head, 45 min)
            run_eval(args, table, f"{s}: 2-hour recipe stage 1: UNet alone (UNet + distance head)", "fast-unet", s,
                     points=None, unet_only=True)
        if (args.runs / "goal-vp").is_dir():  # + varied point counts, all parts trained (stage 5)
            run_eval(args, table, f"{s}: SAC + mask prompt + distance head, varied points 0-expert", "goal-vp", s,
                     unet_key=f"{s}: SAC + mask prompt + distance head, varied points: its UNet alone")
        if (args.runs / "goal-dh").is_dir():  # + distance head (stage 4)
            run_eval(args, table, f"{s}: SAC + mask prompt + distance head 0-expert", "goal-dh", s,
                     unet_key=f"{s}: SAC + mask prompt + distance head: its UNet alone")
        if (args.runs / "goal-mp").is_dir():
            run_eval(args, table, f"{s}: SAC + mask prompt 0-expert", "goal-mp", s,
                     unet_key=f"{s}: SAC + mask prompt: its UNet alone")
        run_eval(args, table, f"{s}: SAM-FT 0-expert", "sam-ft", s, expert=0)
        run_eval(args, table, f"{s}: SAM-FT 1-expert", "sam-ft", s, expert=1)
        run_eval(args, table, f"{s}: SAM 1-expert (zero-shot)", "sam", s, expert=1, points=0)
        # one pass of the SAC model also scores its own UNet (after SAC training) -- reported separately
        run_eval(args, table, f"{s}: SAC 0-expert", "goal", s, unet_key=f"{s}: SAC's UNet (after stage 2)")
        run_eval(args, table, f"{s}: UNet-stage model / SAM mask (untrained decoder)", "goal-unet", s,
                 unet_key=f"{s}: UNet alone", points=None)


if __name__ == "__main__":
    main()
