"""Whole-image segmentation with a SAC model: tiles -> prompts -> SAC mask -> stitched maps -> instances.

`sac segment`, `sac evaluate --model` and the Python API all go through :class:`Segmenter`, so the numbers
measured are what users get. Per tile (``S x S`` model input, see :mod:`sac.inference.tiling`):

1. the UNet prompt generator gives ``P_pos``; points are chosen from it exactly as in training
   (:func:`sac.models.prompts.select_batch`), expert points that fall inside the tile are merged first;
2. the image encoder (+LoRA) embeds the tile once; the mask decoder turns embedding + points into mask logits;
3. the SAC mask probability and the UNet probability are blended into full-size maps.

The stitched SAC probability is thresholded and split into nuclei by :mod:`sac.postprocess.instances`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch
import torch.nn.functional as F

from sac.inference.config import TTA_FLIPS, InferenceConfig
from sac.inference.reader import ArraySource
from sac.inference.tiling import Stitcher, Tile, make_tiles, weight_window
from sac.models.prompts import select_batch
from sac.postprocess.instances import make_instances


@dataclass
class SegmentationResult:
    """Segmentation of one ``H x W`` image.

    ``mask bool [H, W]`` (= ``labels > 0``); ``labels int32 [H, W]`` (0 background, 1..N nuclei);
    ``prob float32 [H, W]`` SAC mask probability in [0, 1]; ``prompt_prob float32 [H, W]`` the UNet's
    (None for a model without prompt generator); ``distance float32 [H, W]`` the distance head's map in [0, 1]
    (None without one); ``prompts float32 [P, 3]`` every point used, (x, y, label) in
    image pixels, label 1 positive / 0 negative; ``image uint8 [H, W, 3]`` the input; ``seconds`` wall time;
    ``tiles`` number of model windows; ``embeddings`` (with ``segment(keep_embeddings=True)``) the image encoder's
    ``float16 [256, h, w]`` per tile where SAM ran, keyed by the tile (``Segmenter.tiles_for``).
    ``seeds float32 [M, 2]`` (x, y) the positive expert points, extra watershed seeds (None without).
    ``table`` (pandas DataFrame, one row per nucleus) is computed on first use.
    """

    mask: np.ndarray
    labels: np.ndarray | None  # None between Segmenter.segment_maps and Segmenter.finish
    prob: np.ndarray
    prompt_prob: np.ndarray | None
    prompts: np.ndarray
    image: np.ndarray
    seconds: float
    tiles: int
    settings: dict = field(default_factory=dict)
    distance: np.ndarray | None = None
    embeddings: dict[Tile, torch.Tensor] | None = None
    seeds: np.ndarray | None = None

    @property
    def n_nuclei(self) -> int:
        return int(self.labels.max())

    @cached_property
    def table(self):
        """Per-nucleus measurements, see :func:`sac.inference.measure.nuclei_table`."""
        from sac.inference.measure import nuclei_table

        return nuclei_table(self.labels, self.image)


def resolve_device(device: str) -> torch.device:
    """``cpu`` | ``cuda`` | ``auto`` (cuda when available) -> torch.device; SACError for anything else."""
    from sac.errors import SACError

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SACError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    if device not in ("cpu", "cuda"):
        raise SACError(f"--device must be cpu, cuda or auto, got {device!r}")
    return torch.device(device)


class Segmenter:
    """Segment images of any size with a SAC model (:class:`sac.models.sac.SAC`) and an :class:`InferenceConfig`.

    The model is put in eval mode on ``device``; every model call goes through ``self.engine``
    (:func:`sac.inference.engine.make_engine` with ``cfg.engine``: OpenVINO, ONNX Runtime or torch, whose encoder
    is the inference copy of :func:`sac.inference.encoder.inference_encoder`; ``model`` itself is untouched).
    ``fast_encoder=False`` runs torch with ``model.encode`` (for comparisons).
    """

    def __init__(self, model, cfg: InferenceConfig | None = None, device: str | torch.device = "cpu",
                 fast_encoder: bool = True):
        from sac.inference.engine import Engine, make_engine

        self.cfg = (cfg or InferenceConfig()).validate()
        self.device = device if isinstance(device, torch.device) else resolve_device(device)
        self.model = model.to(self.device).eval()
        if fast_encoder:
            self.engine = make_engine(model, self.cfg.engine, self.device)
        else:
            self.engine = Engine(model, self.device, fast_encoder=False)
        self.input_size = int(model.input_size)
        # Model-space window: the backbone input, or a smaller --tile that is padded up to it.
        self.tile_model = self.cfg.tile or self.input_size
        if self.tile_model > self.input_size:
            from sac.errors import SACError

            raise SACError(f"--tile {self.tile_model} is larger than the model input ({self.input_size} px); "
                           "use --scale to cover more image pixels per tile")
        self._scale_memo = None  # (source, ScaleEstimate) of the last image, see scale_for
        self.scale_estimate = None
        prompts = model.cfg.prompts
        self.prompt_cfg = dataclasses.replace(
            prompts,
            n_points=prompts.n_points if self.cfg.n_points is None else self.cfg.n_points,
            select=prompts.select if self.cfg.select is None else self.cfg.select,
        )
        # prompt_channels, not prompt_generator: a ModelHandle answers it without building the torch module.
        self.has_unet = model.prompt_channels > 0 and prompts.enabled
        self.has_distance = self.has_unet and model.prompt_channels > 1
        self.windows_run = [0, 0]  # windows segmented so far, of which SAM ran on (cfg.sam)

    # ------------------------------------------------------------------ geometry
    def scale_for(self, source) -> float:
        """The resampling factor used for ``source`` (an image array or reader source): ``cfg.scale``, or with
        ``"auto"`` :func:`sac.inference.scale.resolve_scale`'s (the model's UNet estimates the nucleus size, or
        ``cfg.nucleus_diameter`` gives it). The estimate of the last source is kept (``self.scale_estimate``), so
        asking again for the same source object costs nothing."""
        from sac.inference.scale import resolve_scale

        memo = self._scale_memo
        if memo is not None and memo[0] is source:
            return memo[1].scale
        est = resolve_scale(self.cfg.scale, source, image_diameter=self.cfg.nucleus_diameter,
                            target=getattr(self.model.cfg, "nucleus_diameter", None),
                            prompt_maps=self.engine.prompt_maps if self.has_unet else None,
                            tile=self.tile_model, input_size=self.input_size)
        self._scale_memo, self.scale_estimate = (source, est), est
        return est.scale

    def _default_scale(self) -> float:
        """``cfg.scale`` when it is a number; with ``auto`` the last image's scale (1 before any image)."""
        if self.cfg.scale != "auto":
            return float(self.cfg.scale)
        return 1.0 if self._scale_memo is None else self._scale_memo[1].scale

    def window(self, scale: float | None = None) -> tuple[int, int]:
        """(tile, overlap) in original-image pixels for the model-space tile and overlap at ``scale``
        (None = ``cfg.scale``)."""
        scale = self._default_scale() if scale is None else float(scale)
        s = self.tile_model
        overlap = self.cfg.overlap if self.cfg.overlap is not None else s // 8
        return max(1, round(s / scale)), max(0, round(overlap / scale))

    def tiles_for(self, height: int, width: int, scale: float | None = None) -> list[Tile]:
        """Windows covering an ``height x width`` image at ``scale`` (None = ``cfg.scale``)."""
        size, overlap = self.window(scale)
        return make_tiles(height, width, size, overlap)

    def settings(self, scale: float | None = None) -> dict:
        """The effective settings (for reports and ``evaluate_model``) at ``scale`` (None = ``cfg.scale``)."""
        # One image's settings record its scale (and, with auto, the estimate); a dataset's keep "auto".
        per_image = scale is not None or self.cfg.scale != "auto"
        scale = self._default_scale() if scale is None else float(scale)
        size, overlap = self.window(scale)
        estimate = self._scale_memo[1] if per_image and self._scale_memo and self.cfg.scale == "auto" else None
        return {
            **dataclasses.asdict(self.cfg),
            "scale": scale if per_image else self.cfg.scale,
            **({"scale_estimate": estimate.to_dict()} if estimate is not None else {}),
            "engine": self.engine.name,
            "n_points": self.prompt_cfg.n_points if self.has_unet else 0,
            "select": self.prompt_cfg.select,
            "input_size": self.input_size,
            "window_pixels": size,
            "overlap_pixels": overlap,
            "device": str(self.device),
        }

    # ------------------------------------------------------------------ per-tile model calls
    def window_input(self, source, tile: Tile) -> torch.Tensor:
        """Window of ``source`` -> ``float32 [3, S, S]`` in [0, 1]: padded (reflect) to the window, resampled to the
        model-space tile T, padded (reflect) to the model input S when T < S."""
        region = source.read(tile.y0, tile.y1, tile.x0, tile.x1)
        h, w = region.shape[:2]
        if h < tile.size or w < tile.size:
            # Reflection looks like tissue to the model (zeros would look like an artefact); 'edge' for 1-px sides.
            mode = "reflect" if min(h, w) > 1 else "edge"
            region = np.pad(region, ((0, tile.size - h), (0, tile.size - w), (0, 0)), mode=mode)
        t = torch.from_numpy(np.ascontiguousarray(region)).permute(2, 0, 1).float().div_(255.0)
        if tile.size != self.tile_model:
            t = F.interpolate(t[None], size=(self.tile_model,) * 2, mode="bilinear", antialias=True,
                              align_corners=False)[0]
        if self.tile_model < self.input_size:
            pad = self.input_size - self.tile_model
            t = F.pad(t[None], (0, pad, 0, pad), mode="reflect" if pad < self.tile_model else "replicate")[0]
        return t

    def _expert_in(self, tile: Tile, points: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Expert points inside ``tile`` in model-input coordinates: ``[M, 2]`` (x, y), ``[M]`` labels."""
        if points is None or len(points) == 0:
            return np.zeros((0, 2), np.float32), np.zeros(0, np.int64)
        x, y = points[:, 0], points[:, 1]
        inside = (x >= tile.x0) & (x < tile.x1) & (y >= tile.y0) & (y < tile.y1)
        f = self.tile_model / tile.size
        # Pixel centres map onto pixel centres: (p + 0.5) * f - 0.5.
        xy = np.stack([(x[inside] - tile.x0 + 0.5) * f - 0.5, (y[inside] - tile.y0 + 0.5) * f - 0.5], axis=1)
        return xy.astype(np.float32), points[inside, 2].astype(np.int64)

    def _prompt_maps(self, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """UNet logits ``[b, 1, S, S]`` (and distance logits or None), averaged over the ``cfg.tta`` mirror images
        of ``batch`` (:data:`~sac.inference.config.TTA_FLIPS`): each flip is undone on the output before averaging,
        so the result is exactly equivariant under those flips."""
        flips = TTA_FLIPS[self.cfg.tta]
        if len(flips) == 1:
            return self.engine.prompt_maps(batch)
        # Flips and sums in numpy: torch's small ops synchronise its thread pool, which stalls while the runtime and
        # the post-processing thread hold both cores (0.3 s per 1000 x 1000 image in torch, docs/segment.md).
        images = batch.cpu().numpy()
        outs = [self.engine.prompt_maps(torch.from_numpy(np.ascontiguousarray(np.flip(images, dims)) if dims else
                                                         images)) for dims in flips]

        def mean(k: int) -> torch.Tensor | None:
            if outs[0][k] is None:
                return None
            total = sum(np.flip(o[k].numpy(), dims) if dims else o[k].numpy() for o, dims in zip(outs, flips,
                                                                                                   strict=True))
            return torch.from_numpy(total / np.float32(len(flips)))

        return mean(0), mean(1)

    @torch.inference_mode()
    def run_batch(self, batch: torch.Tensor, experts, rng, embed_all: bool = False
                   ) -> tuple[np.ndarray, np.ndarray | None, list, list]:
        """Model on ``batch [b, 3, S, S]`` -> SAC prob ``[b, S, S]``, UNet maps ``[b, c, S, S]`` (nucleus prob, then
        the distance head's map if any) or None, prompts, per window its embedding ``float32 [256, h, w]`` or None
        where SAM did not run (``cfg.sam``; there the SAC prob is the UNet's). ``embed_all``: the encoder runs on
        every window (the decoder still only where ``cfg.sam`` says), so every window has an embedding."""
        engine = self.engine
        logits, dist_logits = self._prompt_maps(batch) if self.has_unet else (None, None)
        prob = torch.sigmoid(logits.float())[:, 0].cpu().numpy() if logits is not None else None
        unet_maps = None if prob is None else prob[:, None]
        if dist_logits is not None:
            unet_maps = np.concatenate([unet_maps, torch.sigmoid(dist_logits.float()).cpu().numpy()], axis=1)
        run = self._needs_sam(prob, experts)
        self.windows_run[0] += len(run)
        self.windows_run[1] += int(run.sum())
        # Automatic prompts only for the windows SAM runs on (the others would never use them).
        cfg = self.prompt_cfg if self.has_unet else dataclasses.replace(self.prompt_cfg, enabled=False)
        coords, labels = select_batch(prob, cfg, [e[0] for e in experts], [e[1] for e in experts], rng,
                                      batch_size=len(batch), active=run)
        sac_prob = np.array(prob[:, None] if prob is not None else np.zeros((len(batch), 1, 1, 1)), np.float32)[:, 0]
        encode = np.ones_like(run) if embed_all else run
        embs: list = [None] * len(run)
        if encode.any():
            emb = engine.encode(batch[torch.from_numpy(np.flatnonzero(encode))])
            for k, j in enumerate(np.flatnonzero(encode)):
                embs[j] = emb[k]
        if run.any():
            idx = np.flatnonzero(run)
            mask_logits, _ = engine.decode(torch.stack([embs[j] for j in idx]), torch.from_numpy(coords[idx]),
                                           torch.from_numpy(labels[idx]),
                                           None if logits is None else logits[torch.from_numpy(idx)])
            sac_prob = np.broadcast_to(sac_prob, (len(batch), *mask_logits.shape[-2:])).copy()
            sac_prob[run] = torch.sigmoid(mask_logits)[:, 0].numpy()
        return sac_prob, unet_maps, list(zip(coords, labels, strict=True)), embs

    def _needs_sam(self, prob: np.ndarray | None, experts) -> np.ndarray:
        """``bool [b]``: the windows SAM runs on (``cfg.sam``): every window without a UNet or with ``all``; else
        those with expert points and, with ``uncertain``, those whose UNet map ``prob [b, S, S]`` holds a nucleus
        and is uncertain enough."""
        b = len(experts)
        if prob is None or self.cfg.sam == "all":
            return np.ones(b, bool)
        has_expert = np.array([len(e[1]) > 0 for e in experts], bool)
        if self.cfg.sam == "prompts":
            return has_expert
        p = prob[:, : self.tile_model, : self.tile_model].reshape(b, -1)
        uncertain = ((p > 0.1) & (p < 0.9)).mean(1)
        has_nucleus = (p > self.cfg.threshold).any(1)
        return has_expert | (has_nucleus & (uncertain >= self.cfg.sam_uncertain))

    def to_window(self, maps: np.ndarray, size: int) -> np.ndarray:
        """``float32 [c, S, S]`` model-space maps -> ``[c, size, size]`` window pixels (tile T crop, resampled)."""
        maps = maps[:, : self.tile_model, : self.tile_model]
        if size == self.tile_model:
            return maps
        t = F.interpolate(torch.from_numpy(maps)[None], size=(size, size), mode="bilinear", align_corners=False)
        return t[0].numpy()

    def instances(self, mask: np.ndarray, prob: np.ndarray, distance: np.ndarray | None = None,
                  points: np.ndarray | None = None) -> np.ndarray:
        """Nuclei of ``mask bool [H, W]`` with this config's method: the watershed weighted by ``prob`` and, with
        ``cfg.use_distance``, following ``distance`` (a distance head's map, marker height ``cfg.split_h``);
        ``points float [N, 2]`` are extra seeds. -> ``int32 [H, W]`` ids."""
        split_map = distance if self.cfg.use_distance else None  # split_h is in this map's units: no map, no h
        return make_instances(mask, self.cfg.instances, min_area=self.cfg.min_area, points=points, prob=prob,
                              distance=split_map, h=None if split_map is None else self.cfg.split_h)

    # ------------------------------------------------------------------ whole image
    def segment(self, image, expert_points: np.ndarray | None = None, on_tile: Callable[[int], None] | None = None,
                keep_embeddings: bool = False, embed_all: bool = False) -> SegmentationResult:
        """:meth:`segment_maps` then :meth:`finish`: the whole segmentation of one image."""
        return self.finish(self.segment_maps(image, expert_points, on_tile, keep_embeddings, embed_all))

    def segment_maps(
        self,
        image,
        expert_points: np.ndarray | None = None,
        on_tile: Callable[[int], None] | None = None,
        keep_embeddings: bool = False,
        embed_all: bool = False,
    ) -> SegmentationResult:
        """The model's maps of ``image`` (``uint8/uint16/float [H, W(, C)]`` array or a
        :mod:`~sac.inference.reader` source).

        ``expert_points float [M, 3]`` (x, y, label) in image pixels are merged into the prompts of every tile
        that contains them (a point in an overlap is used by each of those tiles). ``on_tile(n)`` is called
        after each batch of ``n`` tiles (progress bars). ``keep_embeddings`` keeps each tile's image embedding
        (``result.embeddings``, float16: 2 MB per 1024 px ViT tile, 128 kB per 256 px LiteMedSAM tile) of the
        windows SAM ran on (``cfg.sam``), or of every window with ``embed_all`` (the encoder then runs everywhere).
        Raises :class:`SACError` for points outside the image. ``labels`` is None (and ``mask`` the thresholded
        map) until :meth:`finish` makes the nuclei.
        """
        from sac.inference.experts import check_points

        start = time.perf_counter()
        source = image if hasattr(image, "read") else ArraySource(image)
        H, W = source.shape
        points = check_points(expert_points, (H, W), getattr(source, "name", "image"))
        scale = self.scale_for(source)
        tiles = self.tiles_for(H, W, scale)
        size, overlap = self.window(scale)
        n_maps = 1 + (1 + int(self.has_distance) if self.has_unet else 0)
        stitcher = Stitcher(H, W, n_maps, weight_window(size, overlap))
        rng = np.random.default_rng(self.cfg.seed)
        used: list[np.ndarray] = []
        embeddings: dict[Tile, torch.Tensor] | None = {} if keep_embeddings else None
        f = self.tile_model / size
        for i in range(0, len(tiles), self.cfg.batch):
            chunk = tiles[i : i + self.cfg.batch]
            batch = torch.stack([self.window_input(source, t) for t in chunk])
            experts = [self._expert_in(t, points) for t in chunk]
            sac_prob, unet_maps, prompts, emb = self.run_batch(batch, experts, rng, embed_all)
            for j, tile in enumerate(chunk):
                if embeddings is not None and emb[j] is not None:
                    embeddings[tile] = emb[j].to(torch.float16)
                maps = sac_prob[j][None] if unet_maps is None else np.concatenate([sac_prob[j][None], unet_maps[j]])
                stitcher.add(tile, self.to_window(maps, size))
                coords, labels = prompts[j]
                keep = labels >= 0
                xy = (coords[keep] + 0.5) / f - 0.5 + np.array([tile.x0, tile.y0], np.float32)
                inside = (xy[:, 0] < tile.x1 - 0.5) & (xy[:, 1] < tile.y1 - 0.5)  # not in the padding
                used.append(np.column_stack([xy[inside], labels[keep][inside]]).astype(np.float32))
            if on_tile is not None:
                on_tile(len(chunk))
        maps = stitcher.result()
        prompts_all = np.concatenate(used) if used else np.zeros((0, 3), np.float32)
        return SegmentationResult(
            mask=maps[0] > self.cfg.threshold,
            labels=None,
            prob=maps[0],
            prompt_prob=maps[1] if self.has_unet else None,
            distance=maps[2] if self.has_distance else None,
            prompts=prompts_all.reshape(-1, 3),
            image=source.full(),
            seconds=time.perf_counter() - start,
            tiles=len(tiles),
            settings=self.settings(scale),
            embeddings=embeddings,
            seeds=None if points is None else points[points[:, 2] == 1, :2],
        )

    def finish(self, result: SegmentationResult) -> SegmentationResult:
        """The nuclei of a :meth:`segment_maps` result (``labels``, and ``mask`` = ``labels > 0``), in place. No
        model call: `sac segment` runs it on a second thread while the next image's maps are computed."""
        start = time.perf_counter()
        result.labels = self.instances(result.mask, result.prob, result.distance, points=result.seeds)
        result.mask = result.labels > 0
        result.seconds += time.perf_counter() - start
        return result
