"""Lightning DDP with 2 CPU processes (gloo) on real MoNuSeg crops: identical weights on both ranks after a few
steps, and validation that counts every crop exactly once (as one process does), via tests/ddp_script.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("ddp_script.py")

pytestmark = [pytest.mark.data, pytest.mark.slow]


def _run(mode: str, data_root: Path, out: Path) -> None:
    proc = subprocess.run([sys.executable, str(SCRIPT), mode, str(data_root / "monuseg"), str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_ddp_two_processes(data_root, tmp_path):
    _run("ddp", data_root, tmp_path)
    _run("single", data_root, tmp_path)
    w0, w1 = (torch.load(tmp_path / f"ddp_rank{r}.pt", weights_only=True) for r in (0, 1))
    first = torch.load(tmp_path / "single_rank0.pt", weights_only=True)
    assert w0.keys() == w1.keys() == first.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # gradients were averaged: the ranks never diverge
    # ... and they trained: the weights moved away from the common initialisation of both runs' seed
    assert any(not torch.equal(w0[k], first[k]) for k in w0)
    v0, v1, single = (json.loads((tmp_path / f"val_{m}.json").read_text())
                      for m in ("ddp_rank0", "ddp_rank1", "single_rank0"))
    assert v0 == v1 == single  # the 3 crops over 2 ranks: none repeated by the sampler's padding, none lost
    assert all(len(v) == 1 for v in single["aji"].values()) and len(single["aji"]) == 3
