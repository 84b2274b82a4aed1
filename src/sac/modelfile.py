"""Self-describing SAC model folders: ``model.safetensors`` + ``config.json``.

Only what training changed is stored (LoRA A/B, the mask decoder when trained, the prompt UNet, the interactive
head's object decoder when there is one): a LiteMedSAM model with LoRA r=4 is ~23 MB, dominated by the
4.06M-parameter mask decoder (~39 MB with the interactive head, a second decoder of the same size). ``config.json``
holds the resolved :class:`~sac.models.config.SACConfig`, the backbone name and the SHA-256 of its weights
file, the sac version, the SHA-256 of ``model.safetensors`` (so a weights file from another save is detected)
and a free ``extra`` dict (e.g. training metrics). A model built on a random-init backbone (tests) stores the
whole backbone too, so it still reloads to identical outputs.

Each file is written atomically (weights first, config last); loading verifies the pair belongs together.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from sac.atomic import atomic_write_bytes, atomic_write_text
from sac.errors import SACError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT = "sac-model"
FORMAT_VERSION = 1


def default_model_dir() -> Path:
    """Folder of the bundled default model (``sac/weights/default``; may not contain weights in a broken install)."""
    from importlib import resources

    return Path(str(resources.files("sac").joinpath("weights", "default")))


def save_model(
    path: str | os.PathLike, model, cfg=None, extra: dict[str, Any] | None = None, half: bool = False
) -> Path:
    """Save ``model`` (a :class:`~sac.models.sac.SAC`) into folder ``path`` (created if needed); returns it.

    ``cfg`` defaults to ``model.cfg``; ``extra`` must be JSON-serialisable. Other files in the folder are kept.
    ``half=True`` stores floating-point tensors as float16 (half the size, e.g. for a bundled model); they are
    cast back to float32 on load, so outputs differ slightly from the saved model's (fp16 rounding).
    """
    from safetensors.torch import save

    from sac._version import __version__
    from sac.models.config import to_dict

    folder = Path(path)
    cfg = model.cfg if cfg is None else cfg
    includes_backbone = model.backbone_sha256 is None
    state = model.state_dict() if includes_backbone else model.trained_state_dict()
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    blob = save(tensors, metadata={"format": FORMAT})
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sac_version": __version__,
        "backbone": model.backbone_name or cfg.backbone,
        "backbone_sha256": model.backbone_sha256,
        "backbone_file": _spec(cfg.backbone).weights_file,
        "includes_backbone": includes_backbone,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "stored_dtype": "float16" if half else "float32",
        "n_tensors": len(tensors),
        "n_values": int(sum(t.numel() for t in tensors.values())),
        "config": to_dict(cfg),
        "extra": extra or {},
    }
    text = json.dumps(meta, indent=2, allow_nan=False)  # fails before writing anything if extra is not JSON
    atomic_write_bytes(folder / WEIGHTS_NAME, blob)
    atomic_write_text(folder / CONFIG_NAME, text + "\n")
    return folder


def _spec(name: str):
    from sac.backbones import get_spec

    return get_spec(name)


def model_folder(path: str | os.PathLike) -> Path:
    """The model folder for ``path`` (the folder itself, or its ``config.json`` / ``model.safetensors``)."""
    p = Path(path)
    if p.is_file() and p.name in (CONFIG_NAME, WEIGHTS_NAME):
        p = p.parent
    if not (p / CONFIG_NAME).is_file():
        raise SACError(f"{p} is not a SAC model folder: {CONFIG_NAME} not found")
    if not (p / WEIGHTS_NAME).is_file():
        raise SACError(f"{p} is not a complete SAC model folder: {WEIGHTS_NAME} not found")
    return p


def read_model_config(path: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a model folder (format checked), without loading any weights."""
    cfg_path = model_folder(path) / CONFIG_NAME
    try:
        meta = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SACError(f"{cfg_path}: cannot read model config: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise SACError(f"{cfg_path} is not a SAC model config (format != {FORMAT!r})")
    if not isinstance(meta.get("format_version", 0), int):
        raise SACError(f"{cfg_path}: format_version must be an integer, got {meta['format_version']!r}")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise SACError(f"{cfg_path}: format version {meta['format_version']} is newer than this sac supports")
    return meta


def _checked(path, sam_checkpoint) -> tuple[Path, dict[str, Any], Any, dict[str, Any]]:
    """Everything :func:`load_model_file` checks before building: -> (folder, config.json dict, SACConfig, keyword
    arguments of :func:`sac.backbones.build_sac`). Raises :class:`SACError` for a broken folder or a wrong
    ``sam_checkpoint``."""
    from sac.backbones import file_sha256
    from sac.models.config import SACConfig, from_dict

    folder = model_folder(path)
    meta = read_model_config(folder)
    try:
        cfg = from_dict(SACConfig, meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SACError(f"{folder / CONFIG_NAME}: invalid model config: {exc}") from None
    weights = folder / WEIGHTS_NAME
    if file_sha256(weights) != meta.get("weights_sha256"):
        raise SACError(f"{weights} does not belong to {folder / CONFIG_NAME} (sha256 differs); re-save the model")
    spec = _spec(cfg.backbone)
    want = meta.get("backbone_sha256")
    if meta.get("includes_backbone"):
        return folder, meta, cfg, {"pretrained": False}
    if spec.weights == "package":
        if sam_checkpoint is not None:
            raise SACError(f"model {folder} uses the packaged {spec.name} weights; do not pass --sam-checkpoint")
        return folder, meta, cfg, {}
    name = meta.get("backbone_file") or spec.weights_file
    needed = f"{name} (sha256 {want})" if name else f"the checkpoint file with sha256 {want}"
    if sam_checkpoint is None:
        raise SACError(f"model {folder} needs the {spec.name} backbone weights {needed}: pass --sam-checkpoint PATH")
    if not Path(sam_checkpoint).is_file():
        raise SACError(f"--sam-checkpoint {sam_checkpoint} not found; model {folder} needs {needed}")
    got = file_sha256(sam_checkpoint)
    if got != want:
        raise SACError(f"--sam-checkpoint {sam_checkpoint} has sha256 {got}; model {folder} needs {needed}")
    return folder, meta, cfg, {"sam_checkpoint": sam_checkpoint}


def load_model_file(path: str | os.PathLike, sam_checkpoint: str | os.PathLike | None = None, device="cpu"):
    """Rebuild a saved SAC model (eval mode) from its folder.

    ``litemedsam`` uses the packaged weights; ``vit_*`` models need ``sam_checkpoint``, the exact file they were
    trained on (its SHA-256 is checked). Missing/unexpected/misshaped tensors raise :class:`SACError`.
    The parsed config.json is attached as ``model.model_info``.
    """
    return _build(*_checked(path, sam_checkpoint)).to(device).eval()


def _build(folder: Path, meta: dict[str, Any], cfg, build: dict[str, Any]):
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from sac.backbones import build_sac, state_dict_mismatch

    spec = _spec(cfg.backbone)
    want = meta.get("backbone_sha256")
    weights = folder / WEIGHTS_NAME
    try:
        model = build_sac(cfg, **build)
    except ValueError as exc:  # an architecture the modules reject (e.g. UNet channels vs strides)
        raise SACError(f"{folder / CONFIG_NAME}: invalid model config: {exc}") from None
    if build == {} and model.backbone_sha256 != want:
        raise SACError(f"model {folder} was trained on {spec.name} weights sha256 {want}, "
                       f"but the installed ones have sha256 {model.backbone_sha256}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError) as exc:
        raise SACError(f"{weights}: cannot read: {exc}") from None
    own = model.state_dict() if meta.get("includes_backbone") else model.trained_state_dict()
    problems = state_dict_mismatch(own, tensors)
    if problems:
        raise SACError(f"{weights} does not fit its config ({spec.name}): {problems}")
    # strictness checked above against the trained subset; copy_ casts float16-stored tensors back to float32
    model.load_state_dict(tensors, strict=False)
    model.model_info = meta
    return model.eval()


class ModelHandle:
    """A saved model whose torch module is built on first use, on the CPU.

    Building imports MONAI, timm and torchvision (~3 s of a ``sac segment`` process); a compiled inference engine
    whose cache entry is valid needs none of it (docs/engines.md). Before the build the handle has what inference
    asks first: ``cfg`` (:class:`~sac.models.config.SACConfig`), ``input_size``, ``prompt_channels`` (UNet output
    channels, 0 without one), ``model_info`` and ``identity`` (SHA-256 over the config and the SHA-256s of the
    weights file and the backbone weights: the engine cache key). Any other attribute is the built module's
    (:meth:`build`, a :class:`~sac.models.sac.SAC` in eval mode). Every check of :func:`load_model_file` that
    does not need the module runs at creation, so a broken folder fails at once.
    """

    def __init__(self, path: str | os.PathLike, sam_checkpoint: str | os.PathLike | None = None):
        self._args = _checked(path, sam_checkpoint)
        self._module = None
        folder, meta, cfg, _ = self._args
        self.cfg = cfg
        self.model_info = meta
        self.input_size = int(_spec(cfg.backbone).input_size)
        self.prompt_channels = cfg.prompt_channels
        key = {k: meta.get(k) for k in ("config", "weights_sha256", "backbone_sha256", "includes_backbone")}
        self.identity = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()

    def build(self):
        """The :class:`~sac.models.sac.SAC` module (built once)."""
        if self._module is None:
            self._module = _build(*self._args)
        return self._module

    @property
    def built(self) -> bool:
        return self._module is not None

    def to(self, device):
        """The handle itself on the CPU (nothing to move yet); else the built module moved to ``device``."""
        if self._module is None and str(device).split(":")[0] == "cpu":
            return self
        return self.build().to(device)

    def eval(self):
        if self._module is not None:
            self._module.eval()
        return self

    def __getattr__(self, name: str):
        if name.startswith("_"):  # never build for dunder / private lookups (copy, pickle, hasattr probes)
            raise AttributeError(name)
        return getattr(self.build(), name)
