"""Run-folder callbacks: atomic checkpoints, ``metrics.csv`` + learning curve, and ``best/`` on improvement.

Every file in RUN_DIR is written to a temporary name beside it and ``os.replace``d into place, so a
run killed at any moment leaves each file either complete (old or new) or absent -- never truncated.
Lightning's own ``TorchCheckpointIO`` streams into the final name, hence :class:`AtomicCheckpointIO`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from sac.atomic import atomic_path

METRIC_COLUMNS = (
    "epoch", "step", "train_loss", "train_mask_loss", "train_prompt_loss", "val_dice", "val_iou", "val_f1",
    "val_prompt_dice", "train_iou_loss", "train_seconds", "val_seconds", "epoch_seconds", "elapsed_seconds", "lr",
    "val_aji", "train_distance_loss", "val_click_iou", "val_click_iou_head",
)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into a temporary file beside the target, then ``os.replace`` it."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        buf = io.BytesIO()
        torch.save(checkpoint, buf)  # serialise fully before touching the disk
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(buf.getbuffer())
                fh.flush()
                os.fsync(fh.fileno())


def replace_dir(write: Callable[[Path], None], target: Path) -> None:
    """Write a folder atomically: ``write(tmp_dir)`` beside ``target``, then swap it in by renames.

    A directory cannot be ``os.replace``d over a non-empty one, so the old folder is first renamed
    aside (``.best.old-*``) and removed after the swap. At every instant ``target`` is either the old
    complete folder, the new complete folder, or (for the microseconds between two renames) absent
    with the old one still beside it.
    """
    target = Path(target)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _num(v: Any) -> float | None:
    if v is None:
        return None
    v = float(v.item() if isinstance(v, torch.Tensor) else v)
    return None if math.isnan(v) else v


class MetricsLogger(L.Callback):
    """One ``metrics.csv`` row per epoch (train losses, val Dice/IoU/F1, seconds) + ``learning_curve.png``.

    Rows live in the callback's state (saved in ``last.ckpt``), so a resumed run rewrites the complete
    history instead of appending to a file a kill may have left behind.
    """

    def __init__(self, run_dir: Path, title: str = ""):
        self.run_dir, self.title = Path(run_dir), title
        self.rows: list[dict] = []
        self._t_epoch = self._t_val = 0.0
        self._val_seconds = 0.0
        self._t_start = time.perf_counter()
        self._elapsed0 = 0.0

    def state_dict(self) -> dict:
        return {"rows": self.rows, "elapsed": self._elapsed()}

    def load_state_dict(self, state: dict) -> None:
        self.rows = list(state.get("rows", []))
        self._elapsed0 = float(state.get("elapsed", 0.0))
        self._t_start = time.perf_counter()

    def _elapsed(self) -> float:
        return self._elapsed0 + time.perf_counter() - self._t_start

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t_epoch, self._val_seconds = time.perf_counter(), 0.0
        self._sums: dict[str, float] = {}
        self._n = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Lightning reduces the epoch means only at on_train_epoch_end, which runs *after* validation; the row
        # is written at validation end (before last.ckpt is saved), so keep the running means here.
        m = trainer.callback_metrics
        for k in ("loss", "mask_loss", "prompt_loss", "iou_loss", "distance_loss"):
            v = _num(m.get(f"train/{k}_step"))
            if v is not None:
                self._sums[k] = self._sums.get(k, 0.0) + v
        self._n += 1

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._t_val = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._val_seconds += time.perf_counter() - self._t_val

    def on_validation_end(self, trainer, pl_module) -> None:
        """One row per epoch, written after validation and before ``last.ckpt`` (ModelCheckpoint runs last), so
        the row is part of the checkpointed state and a resumed run never loses or repeats it."""
        if trainer.sanity_checking:
            return
        m = trainer.callback_metrics
        total = time.perf_counter() - self._t_epoch
        opt = trainer.optimizers[0] if trainer.optimizers else None
        mean = {k: v / max(self._n, 1) for k, v in getattr(self, "_sums", {}).items()}
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": mean.get("loss"),
            "train_mask_loss": mean.get("mask_loss"),
            "train_prompt_loss": mean.get("prompt_loss"),
            "train_iou_loss": mean.get("iou_loss"),
            "val_dice": _num(m.get("val/dice")),
            "val_iou": _num(m.get("val/iou")),
            "val_f1": _num(m.get("val/f1")),
            "val_prompt_dice": _num(m.get("val/prompt_dice")),
            "val_aji": _num(m.get("val/aji")),
            "val_click_iou": _num(m.get("val/click_iou")),
            "val_click_iou_head": _num(m.get("val/click_iou_head")),  # --variant refiner: the head before it
            "train_distance_loss": mean.get("distance_loss"),
            "train_seconds": round(total - self._val_seconds, 2),
            "val_seconds": round(self._val_seconds, 2),
            "epoch_seconds": round(total, 2),
            "elapsed_seconds": round(self._elapsed(), 1),
            "lr": opt.param_groups[0]["lr"] if opt else None,
        }
        self.rows = [r for r in self.rows if r["epoch"] < row["epoch"]] + [row]
        if trainer.global_rank == 0:
            self.write()

    def write(self) -> None:
        with atomic_path(self.run_dir / "metrics.csv") as tmp:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=METRIC_COLUMNS)
                w.writeheader()
                for r in self.rows:
                    w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in METRIC_COLUMNS})
        plot_learning_curve(self.rows, self.run_dir / "learning_curve.png", self.title)


def plot_learning_curve(rows: list[dict], path: Path, title: str = "") -> None:
    """Validation Dice vs epoch (paper Fig. 4), plus the UNet's Dice or the interactive head's click IoU if logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    refiner = any(r.get("val_click_iou_head") is not None for r in rows)  # --variant refiner: click IoU is refined
    for key, label, style in (("val_dice", "SAM mask (val Dice)", "o-"),
                              ("val_prompt_dice", "prompt UNet (val Dice)", "s--"),
                              ("val_click_iou", f"interactive head{' + click refiner' * refiner} (val click IoU)",
                               "^-"),
                              ("val_click_iou_head", "head alone (val click IoU)", "v:")):
        pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, label=label, markersize=4)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation Dice" if any(r.get("val_dice") is not None for r in rows) else "validation score")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title(title or "learning curve")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp)
    plt.close(fig)


class BestModelSaver(L.Callback):
    """Save ``best/`` (``save(tmp_dir)``) whenever ``monitor`` improves; swapped in atomically."""

    def __init__(self, run_dir: Path, save: Callable[[Path, dict], None], monitor: str = "val/dice"):
        self.run_dir, self.save, self.monitor = Path(run_dir), save, monitor
        self.best: float | None = None
        self.best_epoch: int | None = None

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state.get("best"), state.get("best_epoch")

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        score = _num(trainer.callback_metrics.get(self.monitor))
        if score is None or (self.best is not None and score <= self.best):
            return
        self.best, self.best_epoch = score, trainer.current_epoch
        info = {"epoch": trainer.current_epoch, "step": trainer.global_step, self.monitor: score}
        replace_dir(lambda tmp: self.save(tmp, info), self.run_dir / "best")


class LastCheckpoint(L.Callback):
    """``last.ckpt`` after every validation (i.e. every epoch), through the trainer's (atomic) CheckpointIO.

    Lightning's ``ModelCheckpoint(save_top_k=0, save_last=True)`` only refreshes ``last`` when a top-k
    checkpoint was saved in the same step, i.e. never; this callback is the plain "always" rule. Keep it last
    in the callback list so the states of the other callbacks (metrics rows, best score) are already updated.
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        # Every rank calls it (barrier); only rank 0 writes. weights_only=False = the full state a resume needs
        # (optimizer, loops, callbacks), said explicitly so Lightning does not log a default on every epoch.
        trainer.save_checkpoint(self.path, weights_only=False)
