"""Paper Table 6: trainable / frozen / total parameters of SAM-FT, SAC, for each backbone, from `sac info --json`.

SAM-FT = mask decoder trained, no LoRA, no prompt UNet (`--no-lora --no-prompts`); SAC = LoRA r=4 on Q,V of every
attention layer + mask decoder + prompt UNet (the paper's configuration). MSA is not implemented here.

    .venv/bin/python benchmarks/table6_params.py   # -> benchmarks/results/table6_params.json
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from sac.atomic import atomic_write_text

SAC = [sys.executable, "-m", "sac.cli", "info", "--json"]
ROWS = {"SAM-FT": ["--no-lora", "--no-prompts"], "SAC": []}
BACKBONES = ("litemedsam", "vit_b", "vit_l", "vit_h")


def main() -> None:
    out = Path(__file__).parent / "results" / "table6_params.json"
    t0 = time.time()
    table = {}
    for backbone in BACKBONES:
        for row, flags in ROWS.items():
            cmd = [*SAC, "--backbone", backbone, *flags]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            info = json.loads(res.stdout)
            table[f"{row} ({backbone})"] = {"command": "sac info --json --backbone " + " ".join([backbone, *flags]),
                                            "info": info}
            print(f"{row:7s} {backbone:10s} {res.stdout.strip()[:200]}")
    atomic_write_text(out, json.dumps({"rows": table, "wall_seconds": round(time.time() - t0, 1)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
