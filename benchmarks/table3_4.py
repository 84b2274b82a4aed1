"""Paper Tables 3 and 4: automatic points x simulated expert points, varied at evaluation time on the same models.

Table 3 (MoNuSeg hold-out): SAM zero-shot {0p0e, 0p3e}; SAM-FT {0p0e, 0p1e, 0p3e}; SAC ("LoRA" rows)
{0p0e, 0p1e, 1p0e, 1p1e, 3p3e}; beyond the paper, the same grid for the later stages of the default model
(``RUNS/goal-mp``, ``goal-dh``, ``goal-vp``) when they exist.
Table 4 (MoNuSeg and DSB): SAM-FT 0-point with 0, 1, 3 experts.
"p" = automatic points per class from the UNet, "e" = simulated expert points (m positive + m negative, see
``sac.inference.experts.simulate_expert``), merged into the prompts of every tile that holds them (the paper's
protocol, ``expert_mode="prompts"``; `sac evaluate --expert` applies them as editor clicks instead). SAM-FT has
no prompt generator, so its "k-point" rows of the paper have no counterpart here.
Writes ``benchmarks/results/table3_4.json``.

    .venv/bin/python benchmarks/table3_4.py [--sets monuseg dsb]
"""

from __future__ import annotations

import sys

from paper_eval import Table, parser, run_eval

TABLE3 = [("SAM", "sam", 0, 0), ("SAM", "sam", 0, 3),
          ("SAM-FT", "sam-ft", 0, 0), ("SAM-FT", "sam-ft", 0, 1), ("SAM-FT", "sam-ft", 0, 3),
          ("LoRA", "goal", 0, 0), ("LoRA", "goal", 0, 1), ("LoRA", "goal", 1, 0), ("LoRA", "goal", 1, 1),
          ("LoRA", "goal", 3, 3)]
GRID = ((0, 0), (0, 1), (1, 0), (1, 1), (3, 3))
# Beyond the paper: the later stages of the default model (each row only if its run folder exists).
TABLE3_EXTRA = [("SAC + mask prompt", "goal-mp"), ("SAC + mask prompt + distance head", "goal-dh"),
                ("SAC + mask prompt + distance head, varied points", "goal-vp")]


def main() -> None:
    args = parser(__doc__).parse_args()
    table = Table("table3_4", "python benchmarks/table3_4.py " + " ".join(sys.argv[1:]))
    if "monuseg" in args.sets:
        extra = [(label, run, p, e) for label, run in TABLE3_EXTRA if (args.runs / run).is_dir() for p, e in GRID]
        for label, model, p, e in TABLE3 + extra:
            run_eval(args, table, f"monuseg: {label} {p}-point {e}-expert", model, "monuseg", points=p, expert=e,
                     expert_mode="prompts")
    if "dsb" in args.sets:  # Table 4's DSB half (its MoNuSeg half are the SAM-FT rows above)
        for e in (0, 1, 3):
            run_eval(args, table, f"dsb: SAM-FT 0-point {e}-expert", "sam-ft", "dsb", points=0, expert=e,
                     expert_mode="prompts")


if __name__ == "__main__":
    main()
