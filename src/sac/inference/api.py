"""Python API: ``model = sac.load_model("default"); result = model.segment(image)``.

``load_model`` accepts

* ``"default"`` -- the bundled model in ``sac/weights/default/`` (read with :mod:`importlib.resources`);
* ``"sam"`` (or ``"sam:<backbone>"``, e.g. ``"sam:vit_b"`` with ``sam_checkpoint``) -- the pretrained backbone with
  its own decoder, no LoRA, no prompt generator: prompts are the expert points only (the paper's zero-shot rows);
* a model folder (``model.safetensors`` + ``config.json``, written by :func:`sac.modelfile.save_model`);
* a training run folder: the model folder inside it (``best/`` first, then ``model/``, ``last/``, any other).
"""

from __future__ import annotations

import os
from pathlib import Path

from sac.errors import SACError
from sac.inference.config import InferenceConfig
from sac.modelfile import default_model_dir

MODEL_FILE = "model.safetensors"
RUN_SUBFOLDERS = ("best", "model", "final", "last")


def find_model_dir(path: str | os.PathLike) -> Path:
    """A model folder or a run folder -> the folder holding ``model.safetensors``; SACError if none."""
    path = Path(path)
    if not path.exists():
        raise SACError(f"--model {path}: no such folder (use 'default', 'sam', a model folder or a run folder)")
    if path.is_file():
        path = path.parent if path.name == MODEL_FILE else path
        if path.is_file():
            raise SACError(f"--model {path}: expected a folder with {MODEL_FILE} and config.json, got a file")
    if (path / MODEL_FILE).is_file():
        return path
    for sub in RUN_SUBFOLDERS:
        if (path / sub / MODEL_FILE).is_file():
            return path / sub
    found = sorted(p.parent for p in path.glob(f"*/{MODEL_FILE}"))
    if found:
        return found[-1]
    raise SACError(f"--model {path}: no {MODEL_FILE} in this folder or in its {'/'.join(RUN_SUBFOLDERS)} subfolders")


def build_model(name_or_path: str | os.PathLike, sam_checkpoint: str | os.PathLike | None = None):
    """Resolve ``name_or_path`` (see module docstring) -> ``(model, description dict)``: a model folder gives a
    :class:`~sac.modelfile.ModelHandle` (checked now, its torch module built on first use), ``sam`` a SAC."""
    name = str(name_or_path)
    if name == "sam" or name.startswith("sam:"):
        from sac.backbones import build_sac
        from sac.models.config import LoraConfig, PromptConfig, SACConfig

        backbone = name.split(":", 1)[1] if ":" in name else "litemedsam"
        cfg = SACConfig(backbone=backbone, lora=LoraConfig(enabled=False), prompts=PromptConfig(enabled=False))
        model = build_sac(cfg, sam_checkpoint=sam_checkpoint)
        return model, {"model": name, "backbone": backbone, "kind": "zero-shot SAM (expert points only)"}
    from sac.modelfile import ModelHandle

    if name == "default":
        folder = default_model_dir()
        if not (folder / MODEL_FILE).is_file():
            raise SACError(
                f"the bundled default model is missing ({folder / MODEL_FILE} not found); "
                "reinstall segment-any-cell, or pass --model RUN_DIR of a model you trained with `sac train`"
            )
    else:
        folder = find_model_dir(name)
    handle = ModelHandle(folder, sam_checkpoint=sam_checkpoint)
    return handle, {"model": name, "folder": str(folder), "backbone": handle.cfg.backbone}


class SACModel:
    """A loaded model ready to segment images; ``segment`` returns a
    :class:`~sac.inference.segmenter.SegmentationResult` (``.mask``, ``.labels``, ``.prompts``, ``.table``)."""

    def __init__(self, module, info: dict, device: str = "cpu"):
        self.runnable = module  # a SAC, or a ModelHandle that builds one on first use (what Segmenter takes)
        self.info = info
        self.device = device

    @property
    def module(self):
        """The torch :class:`~sac.models.sac.SAC` module (built now if it was not yet)."""
        return self.runnable.build() if hasattr(self.runnable, "build") else self.runnable

    def __repr__(self) -> str:
        return f"SACModel({self.info.get('model')!r}, backbone={self.info.get('backbone')!r}, device={self.device!r})"

    def segmenter(self, cfg: InferenceConfig | None = None):
        from sac.inference.segmenter import Segmenter

        return Segmenter(self.runnable, cfg or InferenceConfig(), device=self.device)

    def segment(self, image, points=None, **settings):
        """Segment ``image`` (a path, or an array ``[H, W]`` / ``[H, W, 3|4]`` of uint8/uint16/float).

        ``points``: expert prompts ``[[x, y, label], ...]`` in image pixels (label 1 nucleus, 0 background),
        applied to the automatic result as editor clicks (:func:`sac.inference.experts.apply_points`: a negative
        point removes the nucleus under it, a positive one on background adds the nucleus there).
        ``settings``: any :class:`InferenceConfig` field, e.g. ``scale=0.5``, ``n_points=8``, ``instances=...``.
        """
        from sac.inference.experts import check_points, segment_with_points
        from sac.inference.reader import open_image

        try:
            cfg = InferenceConfig(**settings)
        except TypeError as exc:
            raise SACError(f"segment(): {exc}") from None
        source = open_image(image) if isinstance(image, str | os.PathLike) else image
        try:
            pts = None if points is None else check_points(points, source.shape[:2], getattr(source, "name", "image"))
            if pts is None:
                return self.segmenter(cfg).segment(source)
            return segment_with_points(self.segmenter(cfg), source, pts)
        finally:
            if hasattr(source, "close"):
                source.close()


def load_model(name_or_path: str | os.PathLike = "default", device: str = "cpu",
               sam_checkpoint: str | os.PathLike | None = None) -> SACModel:
    """Load a model for inference (see module docstring for the accepted names)."""
    from sac.inference.segmenter import resolve_device

    resolved = resolve_device(device)
    module, info = build_model(name_or_path, sam_checkpoint)
    return SACModel(module, info, device=str(resolved))
