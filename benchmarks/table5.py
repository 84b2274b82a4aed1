"""Paper Table 5: centroid (O) vs random (R) prompt selection with 1, 3 and 256 points.

Accuracy: the trained SAC model (``RUNS/goal``) evaluated on the MoNuSeg hold-out with each selection rule and
point count (prompt settings varied at evaluation time, 0 expert points). Time per epoch: seconds per training step
of the SAC recipe (`--crop-pool --lora-layers 4`, cached prefix, batch 4) with that rule and point count, times
the steps of one epoch of the goal run (384 crops / batch 4 = 96). Writes ``benchmarks/results/table5.json``.

    .venv/bin/python benchmarks/table5.py [--sets monuseg] [--no-timing]
"""

from __future__ import annotations

import sys

from paper_eval import Table, parser, run_eval

SETTINGS = [(sel, n) for sel in ("centroid", "random") for n in (1, 3, 256)]
STEPS_PER_EPOCH = 96


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    table = Table("table5", "python benchmarks/table5.py " + " ".join(sys.argv[1:]))
    for s in args.sets:
        for sel, n in SETTINGS:
            run_eval(args, table, f"{s}: {'O' if sel == 'centroid' else 'R'}-{n}-point", "goal", s, points=n,
                     select=sel)
    if args.no_timing:
        return
    from train_step import _batch, time_config

    batch = _batch(args.data, 256, 4)
    for sel, n in SETTINGS:
        key = f"timing: {'O' if sel == 'centroid' else 'R'}-{n}-point"
        if table.has(key):
            continue
        t = time_config(dict(variant="sac", lora_last_n_layers=4, crop_pool=True, select=sel, n_points=n), batch,
                        repeat=3, threads=2)
        table.put(key, {**t, "seconds_per_epoch": round(t["seconds_per_step"] * STEPS_PER_EPOCH, 1),
                        "steps_per_epoch": STEPS_PER_EPOCH})


if __name__ == "__main__":
    main()
