"""Run by tests/test_ddp.py (not a test module): SAC training under Lightning DDP with 2 CPU processes (gloo), or
in one process, on real MoNuSeg crops with the tiny test backbone.

``python tests/ddp_script.py MODE DATA_ROOT OUT`` (MODE ``ddp`` or ``single``): validates the freshly built model
(seeded: the same weights in both modes) and writes the validation records every rank gathered
(``OUT/val_MODE_rankR.json``), then trains ``STEPS`` optimizer steps and writes each rank's weights
(``OUT/MODE_rankR.pt``). Lightning's DDP launcher re-runs this file once per extra rank, as it does `sac train`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.strategies import DDPStrategy

from sac.backbones import build_sac
from sac.training.config import DataSource, TrainConfig
from sac.training.datamodule import SACDataModule
from sac.training.module import SACLitModule, sac_config

STEPS = 3
VAL_IMAGES = 3  # one crop each: 3 crops over 2 ranks, so a padding sampler would repeat one
# Batch 1: SAM pads point prompts with "not a point" tokens that its decoder attends to, so a crop's prediction
# depends on the other crops of its batch; with one crop per batch both modes see exactly the same inputs.


def _plain(obj):
    """JSON-ready copy of the gathered validation dict (numpy arrays and tuples to lists)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [_plain(v) for v in obj]
    return float(obj) if isinstance(obj, np.floating | np.integer) else obj


class Dump(L.Callback):
    def __init__(self, mode: str, out: Path):
        self.mode, self.out = mode, out

    def on_validation_epoch_end(self, trainer, pl_module):
        gathered = pl_module._gather_val()  # a collective: every rank calls it
        path = self.out / f"val_{self.mode}_rank{trainer.global_rank}.json"
        path.write_text(json.dumps(_plain(gathered), sort_keys=True))

    def on_train_end(self, trainer, pl_module):
        torch.save(pl_module.model.state_dict(), self.out / f"{self.mode}_rank{trainer.global_rank}.pt")


def main(mode: str, data: str, out: str) -> None:
    out_dir = Path(out)
    ddp = mode == "ddp"
    cfg = replace(TrainConfig(), variant="sac", backbone="vit_tiny", data=[DataSource(data, "train")],
                  val_from_train=VAL_IMAGES, val_crops_per_image=1, crops_per_epoch=8, batch_size=1, epochs=2,
                  max_steps=STEPS, progress_bar=False, num_threads=1, cache_val_prefix=False)
    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    module = SACLitModule(cfg, build_sac(sac_config(cfg), pretrained=False))
    dm = SACDataModule(cfg, 128)
    trainer = L.Trainer(
        accelerator="cpu", devices=2 if ddp else 1,
        strategy=DDPStrategy(process_group_backend="gloo", find_unused_parameters=True) if ddp else "auto",
        max_steps=STEPS, max_epochs=cfg.epochs, callbacks=[Dump(mode, out_dir)], logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
        check_val_every_n_epoch=100,  # validation only in trainer.validate below, on the initial weights
    )
    trainer.validate(module, datamodule=dm, verbose=False)
    trainer.fit(module, datamodule=dm)


if __name__ == "__main__":
    main(*sys.argv[1:4])
