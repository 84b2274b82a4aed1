"""``train(cfg, run_dir)``: one training run in a run folder, resumable, every file written atomically.

RUN_DIR after a run::

    config.json          resolved TrainConfig + SACConfig + versions/machine (written first)
    splits.json          which images trained / validated (hold-out ids, seed)
    metrics.csv          one row per epoch (train losses, val Dice/IoU/F1, seconds)
    learning_curve.png   val Dice vs epoch (paper Fig. 4)
    last.ckpt            Lightning checkpoint after the latest epoch (--resume continues from it)
    best/                the best model so far (sac.modelfile format: model.safetensors + config.json)
    summary.json         written at the end: best epoch/score, epochs, stop reason, wall time
    warmup/              (sac with --warmup-minutes) the UNet-alone stage, itself a run folder
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from sac.atomic import atomic_write_text
from sac.errors import SACError
from sac.training.config import TrainConfig, from_dict, to_dict

CONFIG = "config.json"


def _environment() -> dict:
    import lightning
    import torch

    return {
        "python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__,
        "machine": platform.machine(), "processor": platform.processor(), "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available(),
    }


def _accelerator(device: str) -> str:
    import torch

    if device == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise SACError("--device cuda: no CUDA device is available on this machine (use --device cpu)")
        return "gpu"
    return "cpu"


def load_init_weights(model, folder: str | Path) -> int:
    """Copy tensors from ``folder/model.safetensors`` (a model folder or a run's ``best/``) into ``model`` where
    name and shape match (e.g. the warm-up UNet into a LoRA model). Returns how many tensors were copied."""
    from safetensors.torch import load_file

    from sac.modelfile import default_model_dir

    folder = default_model_dir() if str(folder) == "default" else Path(folder)
    if (folder / "best" / "model.safetensors").is_file():
        folder = folder / "best"
    path = folder / "model.safetensors"
    if not path.is_file():
        raise SACError(f"--init-from {folder}: no model.safetensors there (give a model folder or a run folder)")
    tensors = load_file(str(path))
    own = model.state_dict()
    take = {k: v for k, v in tensors.items() if k in own and own[k].shape == v.shape}
    for k, v in tensors.items():  # a 1-channel UNet head into a 2-channel one (--distance-head)
        if k.startswith("prompt_generator.") and k in own and k not in take:
            grown = replicate_channels(v, tuple(own[k].shape))
            if grown is not None:
                take[k] = grown
    if not take:
        raise SACError(f"--init-from {path}: no tensor matches this model's names and shapes")
    model.load_state_dict(take, strict=False)
    return len(take)


def replicate_channels(old, shape: tuple[int, ...]):
    """``old`` with its size-1 dimensions grown to ``shape`` "diagonally": entry ``c`` of every grown dimension
    is the old entry (off-diagonal entries 0), so each new output channel computes what the old single channel
    computed. Used to start a UNet's distance channel as a copy of its nucleus channel, leaving channel 0 exactly
    as it was. None when the shapes are not related that way."""
    import torch

    if old.dim() != len(shape) or old.shape == shape:
        return None
    grown = [d for d, (a, b) in enumerate(zip(old.shape, shape, strict=True)) if a != b]
    if any(old.shape[d] != 1 for d in grown) or len({shape[d] for d in grown}) != 1:
        return None
    out = torch.zeros(shape, dtype=old.dtype)
    for c in range(shape[grown[0]]):
        index = [slice(None)] * len(shape)
        for d in grown:
            index[d] = slice(c, c + 1)
        out[tuple(index)] = old
    return out


STOP_LIMITS = ("max_time", "max_steps", "epochs")


def prepare_run_dir(cfg: TrainConfig, run_dir: Path, resume: bool, overrides: tuple[str, ...] = ()
                    ) -> tuple[TrainConfig, Path | None]:
    """Create/validate RUN_DIR. On ``resume`` the saved config wins (the run continues as it was started),
    except the stopping limits named in ``overrides`` (a subset of ``max_time``, ``max_steps``, ``epochs``:
    those given on the command line), which a resumed run may change. Returns (config, checkpoint or None)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    last = run_dir / "last.ckpt"
    saved = run_dir / CONFIG
    if resume:
        if saved.is_file():
            old = from_dict(json.loads(saved.read_text())["train"])
            for name in overrides:
                if name in STOP_LIMITS:
                    setattr(old, name, getattr(cfg, name))
            cfg = old
        return cfg, (last if last.is_file() else None)
    if last.is_file() or (run_dir / "best").exists():
        raise SACError(f"{run_dir} already holds a run; use --resume to continue it or choose another --out")
    return cfg, None


def _portable(run_dir: Path) -> str:
    """The run folder as saved models record it: relative to the working directory when inside it, else its name
    (an absolute path would leak the training machine's layout into a shipped model)."""
    path = Path(run_dir).resolve()
    try:
        return path.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return path.name


def train(cfg: TrainConfig, run_dir: str | Path, resume: bool = False, overrides: tuple[str, ...] = ()) -> dict:
    """Run (or resume) training into ``run_dir``; returns the summary dict (also written to summary.json).

    ``overrides``: stopping limits to take from ``cfg`` rather than the saved config when resuming."""
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import EarlyStopping, TQDMProgressBar

    from sac.backbones import build_sac, get_spec
    from sac.modelfile import save_model
    from sac.models.config import to_dict as model_to_dict
    from sac.training.callbacks import AtomicCheckpointIO, BestModelSaver, LastCheckpoint, MetricsLogger
    from sac.training.datamodule import SACDataModule
    from sac.training.interactive import InteractiveLitModule, carry_init_facts, interactive_config
    from sac.training.module import SACLitModule, sac_config
    from sac.training.refiner import RefinerLitModule

    cfg.validate()
    run_dir = Path(run_dir)
    cfg, ckpt = prepare_run_dir(cfg, run_dir, resume, overrides)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    t0 = time.time()

    if cfg.variant == "sac" and cfg.warmup_minutes > 0 and cfg.init_from is None:
        _warmup(cfg, run_dir / "warmup", resume)
        cfg.init_from = str(run_dir / "warmup" / "best")

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # interactive: the object decoder alone, refiner: the click refiner alone, on top of the --init-from model
    interactive = cfg.variant in ("interactive", "refiner")
    mcfg = interactive_config(cfg, refiner=cfg.variant == "refiner") if interactive else sac_config(cfg)
    if cfg.init_from and not interactive:
        mcfg = carry_init_facts(mcfg, cfg.init_from)
    spec = get_spec(cfg.backbone)
    model = build_sac(mcfg, sam_checkpoint=cfg.sam_checkpoint, pretrained=spec.weights != "none")
    n_init = load_init_weights(model, cfg.init_from) if cfg.init_from and ckpt is None else 0
    module = {"interactive": InteractiveLitModule, "refiner": RefinerLitModule}.get(cfg.variant, SACLitModule)(
        cfg, model)
    dm = SACDataModule(cfg, spec.input_size)
    dm.setup("fit")
    rank0 = int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
    if rank0:  # DDP re-runs this command per device: only rank 0 writes the run folder
        dm.write_split_record(run_dir / "splits.json")
        atomic_write_text(run_dir / CONFIG, json.dumps({
            "train": to_dict(cfg), "model": model_to_dict(mcfg), "environment": _environment(),
            "parameters": model.parameter_groups(), "init_tensors": n_init,
            "encoder_prefix": module.encoder.prefix_fraction,
        }, indent=2) + "\n")

    def save_best(folder: Path, info: dict) -> None:
        save_model(folder, model, mcfg, extra={"training": {"variant": cfg.variant, **info,
                                                            "run": _portable(run_dir)}})

    callbacks = [
        MetricsLogger(run_dir, title=f"{cfg.variant} ({cfg.backbone})"),
        BestModelSaver(run_dir, save_best, monitor=f"val/{cfg.monitor}"),
        # Both act at validation end (not train-epoch end), after MetricsLogger/BestModelSaver have updated
        # their state, so last.ckpt always holds a consistent epoch.
        EarlyStopping(monitor=f"val/{cfg.monitor}", mode="max", patience=cfg.patience, check_on_train_epoch_end=False),
        LastCheckpoint(run_dir / "last.ckpt"),
    ]
    if cfg.progress_bar:
        callbacks.insert(0, TQDMProgressBar(refresh_rate=1))
    accelerator = _accelerator(cfg.device)
    trainer = L.Trainer(
        accelerator=accelerator, devices=cfg.devices,
        # SAM's mask decoder keeps hypernetwork MLPs for its 3 extra multimask outputs that no loss uses: DDP must be
        # told to expect parameters without gradients (else it stops at the first step).
        strategy="ddp_find_unused_parameters_true" if cfg.devices > 1 else "auto",
        max_epochs=cfg.epochs, min_epochs=min(cfg.min_epochs, cfg.epochs),
        max_time={"minutes": cfg.max_time} if cfg.max_time else None,
        max_steps=cfg.max_steps if cfg.max_steps else -1,
        callbacks=callbacks, plugins=[AtomicCheckpointIO()], logger=False,
        default_root_dir=str(run_dir), num_sanity_val_steps=0, enable_progress_bar=cfg.progress_bar,
        enable_model_summary=False, log_every_n_steps=cfg.log_every_n_steps, deterministic=False,
        enable_checkpointing=False,  # last.ckpt is LastCheckpoint's job, best/ is BestModelSaver's
    )
    trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt else None)

    saver = next(c for c in callbacks if isinstance(c, BestModelSaver))
    stopper = next(c for c in callbacks if isinstance(c, EarlyStopping))
    summary = {
        "variant": cfg.variant, "backbone": cfg.backbone, "monitor": cfg.monitor,
        f"best_val_{cfg.monitor}": saver.best,
        "best_epoch": saver.best_epoch, "epochs_run": trainer.current_epoch, "steps": trainer.global_step,
        "stopped_early": bool(stopper.stopped_epoch), "wall_seconds_this_process": round(time.time() - t0, 1),
        "interrupted": trainer.interrupted,
    }
    if trainer.global_rank == 0:
        atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _warmup(cfg: TrainConfig, stage_dir: Path, resume: bool) -> None:
    """The UNet-alone stage of the CPU recipe (skipped when it already finished in an earlier process)."""
    import dataclasses

    if (stage_dir / "summary.json").is_file():
        return
    stage = dataclasses.replace(cfg, variant="unet", max_time=cfg.warmup_minutes, warmup_minutes=0.0,
                                epochs=10_000, patience=10_000, min_epochs=0)
    train(stage, stage_dir, resume=resume or stage_dir.exists())
