"""The SAC model: SAM image encoder (+LoRA) + auto-prompt UNet + frozen prompt encoder + trainable mask decoder.

SAM's own ``Sam.forward`` runs under ``@torch.no_grad()`` and its ``MaskDecoder`` repeats the image embedding
once per prompt set (one image per call), so :class:`SAC` has its own trainable, batched forward. Build it
with :func:`sac.backbones.build_sac`; this module only assembles given sub-modules (no file I/O).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sac.models.config import SACConfig
from sac.models.lora import apply_lora, lora_parameters
from sac.models.prompt_generator import PromptGenerator
from sac.models.prompts import select_batch
from sac.models.refiner import ClickRefiner

GROUPS = ("lora", "mask_decoder", "object_decoder", "refiner", "prompt_generator", "image_encoder",
          "prompt_encoder")


@dataclass
class SACOutput:
    """Result of :meth:`SAC.forward` for a batch of ``B`` images of size ``S``.

    ``mask_logits float32 [B,1,S,S]``; ``prompt_logits float32 [B,1,S,S]`` (None when prompts are disabled);
    ``coords float32 [B,N,2]`` (x, y) and ``labels int64 [B,N]`` (1/0/-1) are the prompts used (no gradient);
    ``iou_pred float32 [B,1]``.
    """

    mask_logits: torch.Tensor
    prompt_logits: torch.Tensor | None
    coords: torch.Tensor
    labels: torch.Tensor
    iou_pred: torch.Tensor


class SAC(nn.Module):
    """Segment Any Cell. Images enter as ``float32 [B, 3, S, S]`` in ``[0, 1]``; normalisation is inside.

    Args:
        cfg: the architecture config (LoRA, prompts, UNet, interactive head).
        image_encoder, prompt_encoder, mask_decoder: SAM sub-modules with backbone weights already loaded.
            With ``cfg.interactive`` the ``object_decoder`` starts as a copy of ``mask_decoder`` as given here
            (the backbone's pretrained decoder, before any trained weights are loaded).
        input_size: ``S``; pixel_mean / pixel_std: 3 floats in ``[0, 1]`` units; layout: ``"vit"``/``"tinyvit"``.
    """

    def __init__(
        self,
        cfg: SACConfig,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        *,
        input_size: int,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        layout: str,
    ):
        super().__init__()
        self.cfg = cfg
        self.input_size = int(input_size)
        self.layout = layout
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        for p in self.image_encoder.parameters():
            p.requires_grad_(False)
        for p in self.prompt_encoder.parameters():
            p.requires_grad_(False)
        for p in self.mask_decoder.parameters():
            p.requires_grad_(cfg.train_decoder)
        # A second decoder rather than a mode token in the first: the automatic path stays bit-identical and
        # the single-object task cannot pull the automatic decoder's weights (issue 11, "small second head").
        self.object_decoder = copy.deepcopy(mask_decoder) if cfg.interactive else None
        if cfg.refiner and not (cfg.interactive and cfg.prompts.enabled):
            raise ValueError("cfg.refiner corrects the interactive head with the UNet's logits: it needs "
                             "cfg.interactive and cfg.prompts.enabled")
        self.refiner = ClickRefiner() if cfg.refiner else None
        if cfg.lora.enabled:
            apply_lora(self.image_encoder, cfg.lora, layout)
        self.prompt_generator = PromptGenerator(cfg.unet) if cfg.prompts.enabled else None
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(1, 3, 1, 1), False)
        # Random prompt selection draws from this generator when no rng is passed: reproducible per process.
        self.prompt_rng = np.random.default_rng(0)
        self.backbone_name: str | None = None  # set by sac.backbones.build_sac
        self.backbone_sha256: str | None = None  # sha256 of the backbone weights file; None = random init
        self.train(False)

    # ------------------------------------------------------------------ modes and parameter bookkeeping
    def train(self, mode: bool = True) -> SAC:
        """Train mode for the trainable parts only: the frozen encoder (TinyViT has BatchNorm) and the prompt
        encoder stay in eval() so running statistics never drift. TinyViT ``Attention.train(False)`` re-caches
        its attention-bias table ``ab``, which is correct since those biases are frozen."""
        super().train(mode)
        self.image_encoder.eval()
        self.prompt_encoder.eval()
        return self

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        # TinyViT caches attention biases (`ab`) when switched to eval: refresh them from the loaded values.
        self.train(self.training)
        return result

    @property
    def prompt_channels(self) -> int:
        """Output channels of the prompt UNet (2 with a distance head), 0 without one."""
        return self.cfg.prompt_channels

    @property
    def encoder_trainable(self) -> bool:
        """True when some image-encoder parameter (LoRA) requires grad."""
        return any(p.requires_grad for p in self.image_encoder.parameters())

    def named_groups(self) -> dict[str, list[tuple[str, nn.Parameter]]]:
        """Parameters by group: lora, mask_decoder, object_decoder (interactive head; empty without it),
        refiner (the click refiner; empty without it), prompt_generator, image_encoder (base), prompt_encoder."""
        lora_ids = {id(p) for p in lora_parameters(self.image_encoder)}
        groups: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in GROUPS}
        for name, p in self.named_parameters():
            top = name.split(".", 1)[0]
            if top == "image_encoder":
                groups["lora" if id(p) in lora_ids else "image_encoder"].append((name, p))
            elif top in groups:
                groups[top].append((name, p))
            else:  # pragma: no cover - every SAC parameter lives in one of the groups
                raise RuntimeError(f"parameter {name} belongs to no group")
        return groups

    def parameter_groups(self) -> dict[str, int]:
        """Parameter counts (paper Table 6): one key per group plus ``trainable``, ``frozen``, ``total``."""
        counts = {g: sum(p.numel() for _, p in ps) for g, ps in self.named_groups().items()}
        params = list(self.parameters())
        counts["trainable"] = sum(p.numel() for p in params if p.requires_grad)
        counts["frozen"] = sum(p.numel() for p in params if not p.requires_grad)
        counts["total"] = counts["trainable"] + counts["frozen"]
        return counts

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimiser should update (LoRA, mask decoder if trained, UNet)."""
        return [p for p in self.parameters() if p.requires_grad]

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors of what is trained (LoRA, mask decoder if ``cfg.train_decoder``, the object decoder when
        ``cfg.interactive``, the click refiner when ``cfg.refiner``, whole UNet incl. buffers), keyed like
        ``self.state_dict()``: what a saved model file stores."""
        groups = self.named_groups()
        keys = {n for n, _ in groups["lora"]} | {n for n, _ in groups["object_decoder"]} | {
            n for n, _ in groups["refiner"]}
        if self.cfg.train_decoder:
            keys |= {n for n, _ in groups["mask_decoder"]}
        state = self.state_dict()
        return {k: v for k, v in state.items() if k in keys or k.startswith("prompt_generator.")}

    # ------------------------------------------------------------------ the four stages
    def _check_images(self, images: torch.Tensor) -> None:
        s = self.input_size
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != s or images.shape[3] != s:
            raise ValueError(f"images must be [B, 3, {s}, {s}] in [0, 1], got {tuple(images.shape)}")

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,3,S,S]`` in [0, 1] -> the backbone's normalised input."""
        return (images - self.pixel_mean) / self.pixel_std

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Image encoder (+LoRA): ``[B,3,S,S]`` in [0,1] -> embedding ``float32 [B,256,h,w]``.

        Runs without autograd when nothing in the encoder is trainable (LoRA disabled), so frozen embeddings
        can be computed cheaply and cached by the caller.
        """
        self._check_images(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.encoder_trainable):
            return self.image_encoder(self.normalise(images))

    def prompt_logits(self, images: torch.Tensor) -> torch.Tensor:
        """UNet: ``[B,3,S,S]`` in [0,1] -> ``[B,1,S,S]`` logits of "nucleus". Fails if prompts are disabled."""
        return self.prompt_maps(images)[0]

    def prompt_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """UNet: ``[B,3,S,S]`` in [0,1] -> (nucleus logits ``[B,1,S,S]``, distance logits ``[B,1,S,S]`` or None
        without ``cfg.unet.distance_head``); one forward pass. Fails if prompts are disabled."""
        if self.prompt_generator is None:
            raise RuntimeError("this SAC has no prompt generator (cfg.prompts.enabled is False)")
        self._check_images(images)
        out = self.prompt_generator(self.normalise(images))
        return out[:, :1], (out[:, 1:2] if out.shape[1] > 1 else None)

    def select_prompts(
        self,
        prompt_logits: torch.Tensor | None,
        expert_coords: torch.Tensor | np.ndarray | None = None,
        expert_labels: torch.Tensor | np.ndarray | None = None,
        rng: np.random.Generator | None = None,
        batch_size: int | None = None,
        n_points: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Automatic points from ``sigmoid(prompt_logits)`` (detached: no gradient reaches coordinates) merged with
        expert points ``[B,M,2]``/``[B,M]`` -> ``coords float32 [B,N,2]``, ``labels int64 [B,N]`` (N >= 1, -1 pad).

        ``prompt_logits`` None (or ``cfg.prompts.enabled`` False) = expert points only. ``n_points`` overrides
        ``cfg.prompts.n_points`` for this call (0 = no automatic points).
        """
        device = self.pixel_mean.device
        prob = None
        if prompt_logits is not None and self.cfg.prompts.enabled:
            prob = torch.sigmoid(prompt_logits.detach().float())[:, 0].cpu().numpy()
        ec = expert_coords.detach().cpu().numpy() if torch.is_tensor(expert_coords) else expert_coords
        el = expert_labels.detach().cpu().numpy() if torch.is_tensor(expert_labels) else expert_labels
        if prob is None and ec is None and batch_size is None and prompt_logits is not None:
            batch_size = len(prompt_logits)
        cfg = self.cfg.prompts if n_points is None else replace(self.cfg.prompts, n_points=n_points)
        coords, labels = select_batch(prob, cfg, ec, el, rng or self.prompt_rng, batch_size)
        return torch.from_numpy(coords).to(device), torch.from_numpy(labels).to(device)

    def decode(
        self,
        emb: torch.Tensor,
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_prompt: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Batched mask decoding: ``emb [B,256,h,w]``, ``coords [B*K,N,2]``, ``labels [B*K,N]`` -> ``mask_logits
        [B*K,1,S,S]``, ``iou [B*K,1]``. Prompt sets ``i*K .. i*K+K-1`` all use image ``i`` (K = 1: one set per
        image; K > 1: e.g. one set per nucleus). Single-mask output (``multimask_output=False``).

        ``mask_prompt float [B,1,S,S]`` logits (e.g. the UNet's), used only when ``cfg.prompts.mask_prompt``:
        resized to the prompt encoder's mask input (``4h x 4w``), detached, clamped to +-20 (SAM's own logit range).
        """
        b, k = emb.shape[0], coords.shape[0] // max(emb.shape[0], 1)
        if coords.ndim != 3 or coords.shape[0] != b * k or labels.shape != coords.shape[:2]:
            shapes = f"emb {tuple(emb.shape)}, coords {tuple(coords.shape)}, labels {tuple(labels.shape)}"
            raise ValueError(f"decode needs coords [B*K,N,2] and labels [B*K,N] for emb [B,...]; got {shapes}")
        masks = None
        if self.cfg.prompts.mask_prompt:
            if mask_prompt is None or mask_prompt.shape[0] != b:
                got = None if mask_prompt is None else tuple(mask_prompt.shape)
                raise ValueError(f"this model takes a mask prompt [B,1,S,S] with B = {b}; got {got}")
            size = tuple(self.prompt_encoder.mask_input_size)
            masks = mask_prompt.detach().float().clamp(-20.0, 20.0)
            if tuple(masks.shape[-2:]) != size:
                masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
            masks = masks.repeat_interleave(k, dim=0) if k > 1 else masks
        with torch.no_grad():  # frozen prompt encoder, detached points and mask: nothing to differentiate
            sparse, dense = self.prompt_encoder(points=(coords.float(), labels), boxes=None, masks=masks)
            image_pe = self.prompt_encoder.get_dense_pe()
        src = emb.repeat_interleave(k, dim=0) if k > 1 else emb
        low_res, iou = _predict_masks(self.mask_decoder, src, image_pe, sparse, dense)
        if low_res.shape[-1] != self.input_size:
            low_res = F.interpolate(low_res, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        return low_res, iou

    def decode_object(
        self,
        emb: torch.Tensor,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One object (nucleus) per prompt set, with the interactive head: ``emb [B,256,h,w]``, ``coords
        float [B*K,N,2]`` (x, y in input pixels, ``0..S``), ``labels int [B*K,N]`` (1 positive, 0 negative, -1
        padding) -> ``mask_logits float32 [B*K,1,S,S]``, ``iou float32 [B*K,1]``. Sets ``i*K .. i*K+K-1`` use image
        ``i`` (as :meth:`decode`). ``coords``/``labels`` may be None (or N = 0) when ``boxes`` are given.

        ``boxes float [B*K,4]`` (x0, y0, x1, y1 in input pixels) go through SAM's frozen prompt encoder;
        ``mask_input float [B*K,1,S,S]`` logits (the previous round's mask logits when refining, or the UNet's
        logits of the window on a first click) through its dense mask path: detached, clamped to +-20 and resized
        to ``mask_input_size`` like :meth:`decode`'s mask prompt. Without an ``object_decoder`` (models saved
        before ``cfg.interactive`` existed, or ``"sam"``) the automatic ``mask_decoder`` answers with the mask
        input ignored: zero-shot SAM behaviour.
        """
        b = emb.shape[0]
        if coords is not None and coords.shape[1] == 0:
            coords = labels = None
        n = coords.shape[0] if coords is not None else (boxes.shape[0] if boxes is not None else 0)
        if n == 0 or n % max(b, 1):
            raise ValueError(f"decode_object needs points and/or boxes for B*K prompt sets, B = {b}")
        if coords is not None and (coords.ndim != 3 or labels is None or labels.shape != coords.shape[:2]):
            got = f"coords {tuple(coords.shape)}, labels {None if labels is None else tuple(labels.shape)}"
            raise ValueError(f"decode_object needs coords [B*K,N,2] and labels [B*K,N]; got {got}")
        if boxes is not None and tuple(boxes.shape) != (n, 4):
            raise ValueError(f"decode_object needs boxes [{n},4]; got {tuple(boxes.shape)}")
        k = n // b
        decoder = self.object_decoder if self.object_decoder is not None else self.mask_decoder
        masks = None
        if mask_input is not None and self.object_decoder is not None:
            if mask_input.ndim != 4 or mask_input.shape[:2] != (n, 1):
                raise ValueError(f"decode_object needs mask_input [{n},1,S,S]; got {tuple(mask_input.shape)}")
            size = tuple(self.prompt_encoder.mask_input_size)
            masks = mask_input.detach().float().clamp(-20.0, 20.0)
            if tuple(masks.shape[-2:]) != size:
                masks = F.interpolate(masks, size=size, mode="bilinear", align_corners=False)
        points = None if coords is None else (coords.float(), labels)
        with torch.no_grad():  # frozen prompt encoder, detached prompts: nothing to differentiate
            sparse, dense = self.prompt_encoder(
                points=points, boxes=None if boxes is None else boxes.float(), masks=masks
            )
            image_pe = self.prompt_encoder.get_dense_pe()
        src = emb.repeat_interleave(k, dim=0) if k > 1 else emb
        low_res, iou = _predict_masks(decoder, src, image_pe, sparse, dense)
        if low_res.shape[-1] != self.input_size:
            low_res = F.interpolate(low_res, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        return low_res, iou

    def forward(
        self,
        images: torch.Tensor,
        expert_coords: torch.Tensor | None = None,
        expert_labels: torch.Tensor | None = None,
        rng: np.random.Generator | None = None,
    ) -> SACOutput:
        """The trainable forward: encode, UNet, select prompts (detached), decode. See :class:`SACOutput`."""
        emb = self.encode(images)
        logits = self.prompt_logits(images) if self.prompt_generator is not None else None
        coords, labels = self.select_prompts(logits, expert_coords, expert_labels, rng, batch_size=len(images))
        masks, iou = self.decode(emb, coords, labels, logits)
        return SACOutput(masks, logits, coords, labels, iou)


def _predict_masks(
    dec: nn.Module, src: torch.Tensor, image_pe: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``MaskDecoder.predict_masks`` restricted to the single-mask output (token 0, ``multimask_output=False``)
    and with one image embedding per prompt set (rows of ``src`` and ``sparse`` correspond) instead of one image
    repeated for every prompt set. Same sub-modules and maths; the 3 multimask hypernetwork MLPs are not run
    (their output would be discarded), so they get no gradient. Returns ``[B,1,4h,4w]``, ``[B,1]``."""
    output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse.to(output_tokens.dtype)), dim=1)
    src = src + dense
    pos_src = image_pe.expand(src.shape[0], -1, -1, -1)
    b, c, h, w = src.shape
    hs, src = dec.transformer(src, pos_src, tokens)
    iou_token_out = hs[:, 0, :]
    mask_token_out = hs[:, 1, :]  # mask token 0 = the single-mask output
    src = src.transpose(1, 2).reshape(b, c, h, w)
    upscaled = dec.output_upscaling(src)
    hyper_in = dec.output_hypernetworks_mlps[0](mask_token_out).unsqueeze(1)  # [B, 1, C']
    b, c, h, w = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h * w)).view(b, 1, h, w)
    return masks, dec.iou_prediction_head(iou_token_out)[:, :1]


__all__ = ["SAC", "SACOutput", "GROUPS"]
