"""Automatic scale (``--scale auto``): estimate an image's nucleus size and rescale it to the model's training size.

A model sees nuclei well at the size it was trained on (``SACConfig.nucleus_diameter``, the median equivalent
diameter of its training nuclei as training sampled them; 18.5 px for the bundled default,
``benchmarks/nucleus_size.py``). Nuclei several times larger look like texture to it and are cut into pieces; much
smaller ones merge into blobs. The estimator (:func:`estimate_scale`) asks the model's own prompt UNet, the cheap part
of the model (a 256 px pass costs a small fraction of the SAM encoder's):

1. :func:`measure`: resample a few evenly spread windows (``ladder_windows``) by a trial scale ``s``, run the UNet,
   split its mask into nuclei as ``sac segment`` does (watershed on the distance head's map), leave out objects cut
   by a window border and take the median equivalent diameter ``m(s)`` (model pixels);
2. walk the ladder ``LADDER`` (1/16 .. 4, doubling) from coarse to fine. While the UNet sees whole nuclei, ``m``
   grows with ``s``; too coarse, nuclei merge into blobs of a roughly constant size; too fine, they are cut into
   pieces and ``m`` drops. Each rung where ``m`` crosses the target while growing (by at least ``GROWTH`` per
   doubling) proposes the scale interpolated in log-log; so does a growing run that stops just short of the target
   (within ``BAND``);
3. a proposal is accepted when a pass at that scale (``max_windows`` windows) measures a median within
   ``ACCEPT_LOW`` .. ``ACCEPT_HIGH`` of the target; its nuclei then have the training size, where the UNet measures
   best, and the image's diameter is ``m / s``. A rejected proposal (a blob of merged tiny nuclei looks like one
   nucleus at a coarse rung) lets the walk go on. The walk always runs to the end of the ladder, and of the accepted
   proposals the one where the UNet is least unsure (:func:`uncertainty`) wins: cells of the training size at a
   coarse rung are accepted too, but the UNet is surer of the real nuclei at a finer one;
4. for nuclei somewhat larger than the snap range (``NATIVE_RANGE``), scale 1 is kept when the UNet is clearly
   surer of the image as it is (``NATIVE_SURE``): sizes the model was trained on at native size.

No proposal accepted: where a growing run stopped short of the target on nuclei the UNet is sure of (it cuts them
into pieces when they are shown larger), the scale of the largest of those (``STALL_SURE``); otherwise (an empty
image, or no nucleus-like objects at any scale) scale 1, and the estimate says so.
:func:`choose_scale` snaps: a diameter within ``SNAP`` of the target (nucleus sizes the model was trained on at native
size: 11.6-28.5 px for the default) keeps scale 1 exactly, so images at the training magnification are
segmented exactly as with ``--scale 1``. The constants were chosen by looking at 12 DSB val and 3 MoNuSeg
validation images resampled by 0.5..3 (docs/scale.md reports the images not looked at separately).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from sac.errors import SACError
from sac.postprocess.watershed import watershed_instances

LADDER = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0, 2.0, 4.0)
MIN_NUCLEI = 5
BAND = 1.6  # a pass whose growth stops at >= target / BAND (model px) proposes the scale that would reach target
# A proposed scale is accepted when its own pass measures within target / ACCEPT_LOW .. target * ACCEPT_HIGH; the low
# side is tighter because the stalled regimes (blobs, pieces) measure below the target, never far above it.
ACCEPT_LOW, ACCEPT_HIGH = 1.15, 1.3
# An accepted proposal measured on fewer nuclei than this is weak: it may be a few blobs of merged tiny nuclei at a
# coarse rung (MoNuSeg TCGA-HE-7128 at half size: 11 blobs at scale 1/4) ...
FEW_NUCLEI = 25
# ... and is rejected outright when the UNet is this unsure of it (``uncertainty``): the sparse
# cytology image DSB 8f94a80b at native size measured 18.5 px at scale 0.19 on 23 "nuclei" (cells) with uncertainty
# 0.72; the weak proposals that were right measured 0.38-0.42 (DSB's 53 px nuclei rescaled 2x, 8-11 nuclei) and 0.66
# (DSB 54793624 rescaled 3x, 21 nuclei). Set between 0.66 and 0.72 on those images (docs/scale.md).
WEAK_UNSURE = 0.69
# No proposal accepted, but a growing run stopped short of the target (the UNet cuts the nuclei into pieces when they
# are shown larger) at a median of at least target / BAND ** 2 (7.2 px for the default), on nuclei the UNet is sure
# of (uncertainty <= STALL_SURE): segment at that scale, where the nuclei are whole, instead of keeping 1. DSB val
# cab48752 and e5a6c5e0 stall at 0.31-0.38 (scale 1 on their 2x / 3x copies: Dice 0.49-0.73, at the stalled scale
# 0.94-0.96); the sparse cytology images, whose rungs measure cells and nuclei by turns, at 0.66-0.76 (docs/scale.md).
STALL_SURE = 0.5
MIN_SIDE = 32  # a pass that shrinks the image below this many pixels is skipped (nothing to count)
GROWTH = 1.2  # doubling the scale must grow the median nucleus at least this much, or the nuclei are fragmenting
# Ratios target / diameter that keep scale 1: image medians of 11.6-28.5 px at the default's 18.5 px, i.e. the per-image
# median sizes of the central half of its DSB training images (25-75 %: 13.3-28.5 px, benchmarks/nucleus_size.json),
# which it was trained on at native size. The first choice, the crop augmentation range 0.8-1.25, rescaled DSB images
# at native size and lost accuracy on them (docs/scale.md).
SNAP = (0.65, 1.6)
# Scale 1 is kept instead of the estimate when the UNet's uncertainty at scale 1 is below this fraction of its
# uncertainty at the estimated scale: DSB's ~53 px nuclei, which the default model was trained on at that size,
# measure 0.20-0.21 at scale 1 against 0.38-0.54 shrunk to 18.5 px, and scored better unshrunk (docs/scale.md).
NATIVE_SURE = 0.7
# ... and only for nuclei that are larger than the snap range but within the sizes of the DSB training images (per-image
# median up to 49.7 px at the 95th percentile, benchmarks/results/nucleus_size.json; ratio 0.32 = 58 px): much larger
# nuclei look confidently wrong at scale 1 (cut into confident pieces), and smaller ones did better upsampled.
NATIVE_RANGE = (0.32, SNAP[0])
# A resolution given in microns per pixel (a slide's, or --mpp) is measured, not estimated: it snaps to 1 only within
# the crop augmentation range of `sac train` (sac.data.augment.AugmentConfig: 0.8-1.25).
MPP_SNAP = (0.8, 1.25)
SCALE_RANGE = (1 / 16, 8.0)  # the estimate is clipped to what InferenceConfig accepts, with margin for tiny inputs

PromptMaps = Callable[[torch.Tensor], tuple[torch.Tensor, "torch.Tensor | None"]]


@dataclass
class ScaleEstimate:
    """What :func:`estimate_scale` found.

    ``scale``: the factor to segment at (1.0 when snapped, kept native or nothing was found); ``diameter``: the
    median nucleus diameter in image pixels (None when no nuclei were found); ``raw_scale``: ``target / diameter``
    before snapping; ``n_nuclei``: nuclei measured in the accepted pass; ``reason``: ``estimated`` | ``snapped`` |
    ``native`` (the UNet is surer at scale 1) | ``stalled`` (no proposal accepted; the scale of the largest whole
    nuclei below the target, see ``STALL_SURE``) | ``no nuclei``; ``passes``: ``(trial scale, median diameter in model
    pixels or None, nuclei, the UNet's uncertainty or None)`` per UNet pass (None: skipped, too small);
    ``seconds``: wall time of the estimate.
    """

    scale: float
    diameter: float | None
    raw_scale: float | None
    n_nuclei: int
    reason: str
    passes: list[tuple[float, float | None, int, float | None]] = field(default_factory=list)
    seconds: float = 0.0

    def describe(self) -> str:
        """One line for the console, e.g. ``scale 0.25 (nuclei ~74 px across, estimated in 1.2 s)``."""
        how = {"given": "given", "diameter": "from --nucleus-diameter", "no training size":
               "the model records no training nucleus size; kept 1", "no prompt UNet":
               "the model has no prompt UNet to estimate with; kept 1", "no nuclei":
               "no nuclei of a consistent size found by the size estimate; kept 1"}.get(self.reason)
        if how is None:
            snapped = {"snapped": ", the training size: kept 1",
                       "native": ", but the model is surer at this size: kept 1",
                       "stalled": ", shown at the largest size the model sees them whole"}.get(self.reason, "")
            how = f"nuclei ~{self.diameter:.0f} px across{snapped}, estimated in {self.seconds:.1f} s"
        return f"scale {self.scale:.3g} ({how})"

    def to_dict(self) -> dict:
        """JSON-ready summary (``result.settings["scale_estimate"]``)."""
        return {"scale": self.scale, "reason": self.reason, "diameter": _round(self.diameter),
                "raw_scale": _round(self.raw_scale), "n_nuclei": self.n_nuclei, "seconds": round(self.seconds, 3),
                "passes": [[round(s, 4), _round(m), n, _round(u)] for s, m, n, u in self.passes]}


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


def resolve_scale(scale: float | str, source, *, image_diameter: float | None, target: float | None,
                  prompt_maps: PromptMaps | None = None, tile: int = 256, input_size: int = 256) -> ScaleEstimate:
    """The scale to segment ``source`` at, from ``InferenceConfig.scale`` / ``.nucleus_diameter``.

    A number: that scale (``reason`` ``given``; the estimator is not run). ``"auto"``: from ``image_diameter`` (the
    image's nucleus diameter in pixels, ``--nucleus-diameter``) when given, else estimated with ``prompt_maps`` on
    ``source``; either way snapped by :func:`choose_scale` against ``target`` (the model's
    ``SACConfig.nucleus_diameter``). A model without one (``target`` None) keeps scale 1 (``no training size``), as
    does one without a prompt UNet (``prompt_maps`` None: ``no prompt UNet``).
    """
    if scale != "auto":
        return ScaleEstimate(float(scale), None, None, 0, "given")
    if target is None:
        return ScaleEstimate(1.0, None, None, 0, "no training size")
    if image_diameter is not None:
        chosen, reason = choose_scale(image_diameter, target)
        return ScaleEstimate(chosen, float(image_diameter), target / image_diameter, 0,
                             "snapped" if reason == "snapped" else "diameter")
    if prompt_maps is None:  # a model without a prompt UNet has nothing to estimate with
        return ScaleEstimate(1.0, None, None, 0, "no prompt UNet")
    return estimate_scale(prompt_maps, source, target, tile=tile, input_size=input_size)


def choose_scale(diameter: float, target: float) -> tuple[float, str]:
    """Image nucleus diameter (px, > 0) and the model's training diameter -> (scale, ``estimated`` | ``snapped``).

    ``target / diameter``, clipped to ``SCALE_RANGE``; exactly 1.0 when that ratio is within ``SNAP``.
    """
    if not (diameter > 0 and target > 0):
        raise SACError(f"nucleus diameter must be > 0 pixels, got {diameter}")
    raw = target / diameter
    if SNAP[0] <= raw <= SNAP[1]:
        return 1.0, "snapped"
    return float(min(max(raw, SCALE_RANGE[0]), SCALE_RANGE[1])), "estimated"


def scale_from_mpp(mpp: float, model_mpp: float) -> float:
    """Microns per pixel of an image (e.g. a slide's) and of the model's training data -> the scale to segment at:
    ``mpp / model_mpp`` (an image at 0.5 um/px for a model trained at 0.25 um/px is upsampled 2x), clipped to
    ``SCALE_RANGE`` and exactly 1.0 within ``MPP_SNAP``. SACError for a non-positive value."""
    if not (mpp > 0 and model_mpp > 0):
        raise SACError(f"microns per pixel must be > 0, got {mpp} (image) and {model_mpp} (model)")
    raw = mpp / model_mpp
    return 1.0 if MPP_SNAP[0] <= raw <= MPP_SNAP[1] else float(min(max(raw, SCALE_RANGE[0]), SCALE_RANGE[1]))


def sample_windows(height: int, width: int, size: int, max_windows: int) -> list[tuple[int, int, int, int]]:
    """At most ``max_windows`` windows ``(y0, y1, x0, x1)`` of side ``size`` (clipped to the image), spread evenly
    over an ``height x width`` image: a grid of ``ny x nx`` positions, ``ny * nx <= max_windows``."""
    ny, nx = max(1, math.ceil(height / size)), max(1, math.ceil(width / size))
    while ny * nx > max_windows:  # shrink the longer count first so the sample stays spread over both axes
        if ny >= nx:
            ny -= 1
        else:
            nx -= 1
    ys = np.linspace(0, max(height - size, 0), ny).round().astype(int)
    xs = np.linspace(0, max(width - size, 0), nx).round().astype(int)
    return [(int(y), min(int(y) + size, height), int(x), min(int(x) + size, width)) for y in ys for x in xs]


def _window_tensor(region: np.ndarray, scale: float, tile: int) -> tuple[torch.Tensor, int, int]:
    """``uint8 [h, w, 3]`` region -> ``float32 [3, tile, tile]`` in [0, 1] (resampled by ``scale``, reflect-padded)
    and the size ``(hh, ww)`` of the valid part (top-left)."""
    t = torch.from_numpy(np.ascontiguousarray(region)).permute(2, 0, 1).float().div_(255.0)
    hh = max(1, min(tile, round(region.shape[0] * scale)))
    ww = max(1, min(tile, round(region.shape[1] * scale)))
    if (hh, ww) != region.shape[:2]:
        t = F.interpolate(t[None], size=(hh, ww), mode="bilinear", antialias=True, align_corners=False)[0]
    if hh < tile or ww < tile:
        reflect = hh > tile // 2 and ww > tile // 2  # torch's reflect pad must be smaller than the side
        t = F.pad(t[None], (0, tile - ww, 0, tile - hh), mode="reflect" if reflect else "replicate")[0]
    return t, hh, ww


def _diameters(prob: np.ndarray, dist: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Nuclei of a ``float32 [h, w]`` UNet probability (distance head map or None) -> equivalent diameters (px) of
    the objects that do not touch the border, and of all objects."""
    mask = prob > 0.5
    labels = watershed_instances(mask, min_area=4, prob=prob, distance=dist)
    n = int(labels.max())
    if n == 0:
        return np.zeros(0), np.zeros(0)
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    edge = np.zeros(n + 1, bool)
    edge[np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))] = True
    ids = np.arange(1, n + 1)
    d = 2.0 * np.sqrt(areas[1:] / np.pi)
    return d[~edge[ids]], d


def uncertainty(prob: np.ndarray) -> float:
    """Share of the UNet's nucleus-ish pixels (``prob > 0.1``) that it is unsure of (``0.1 < prob < 0.9``), in
    [0, 1] (1.0 when there are none). Low at the sizes the model knows, high on blobs of merged nuclei and on pieces
    of nuclei too large for it (docs/scale.md)."""
    some = prob > 0.1
    n = int(some.sum())
    return 1.0 if n == 0 else float((some & (prob < 0.9)).sum() / n)


@torch.inference_mode()
def measure(prompt_maps: PromptMaps, source, scale: float, *, tile: int = 256, input_size: int = 256,
            max_windows: int = 8) -> tuple[np.ndarray, float]:
    """Equivalent diameters (model pixels, ``float64 [N]``) of the nuclei the UNet finds in at most ``max_windows``
    windows of ``source`` (anything with ``shape`` (H, W) and ``read(y0, y1, x0, x1) -> uint8 [h, w, 3]``)
    resampled by ``scale``, and the UNet's :func:`uncertainty` over those windows. Objects cut by a window border
    are left out unless that leaves none."""
    H, W = source.shape
    size = max(1, round(tile / scale))
    batch, valid = [], []
    for y0, y1, x0, x1 in sample_windows(H, W, size, max_windows):
        t, hh, ww = _window_tensor(source.read(y0, y1, x0, x1), scale, tile)
        if tile < input_size:
            t = F.pad(t[None], (0, input_size - tile, 0, input_size - tile), mode="replicate")[0]
        batch.append(t)
        valid.append((hh, ww))
    logits, dist_logits = prompt_maps(torch.stack(batch))
    prob = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
    dist = None if dist_logits is None else torch.sigmoid(dist_logits.float())[:, 0].cpu().numpy()
    inner, every = [], []
    for k, (hh, ww) in enumerate(valid):
        a, b = _diameters(prob[k, :hh, :ww], None if dist is None else dist[k, :hh, :ww])
        inner.append(a)
        every.append(b)
    inner_all = np.concatenate(inner)
    unsure = uncertainty(np.concatenate([prob[k, :hh, :ww].ravel() for k, (hh, ww) in enumerate(valid)]))
    return (inner_all if len(inner_all) >= MIN_NUCLEI else np.concatenate(every)), unsure


def estimate_scale(prompt_maps: PromptMaps, source, target: float, *, tile: int = 256, input_size: int = 256,
                   ladder_windows: int = 4, max_windows: int = 8) -> ScaleEstimate:
    """Estimate the scale that brings ``source``'s nuclei to the model's training diameter ``target`` (px).

    ``prompt_maps``: ``float32 [b, 3, S, S]`` in [0, 1] -> (UNet logits ``[b, 1, S, S]``, distance logits or
    None), e.g. ``SAC.prompt_maps`` or an inference engine's; ``tile``: model-space window (``<= input_size``);
    ``ladder_windows`` / ``max_windows``: windows per ladder pass / for the refining pass.
    See the module docstring for the procedure; the result's ``scale`` is what to segment at.
    """
    start = time.perf_counter()
    passes: list[tuple[float, float | None, int, float | None]] = []
    H, W = source.shape

    seen: dict[float, tuple[float, float | None, int, float]] = {}  # the last measured pass at each scale

    def run(s: float, windows: int) -> float | None:
        if max(H, W) * s < MIN_SIDE:
            passes.append((s, None, 0, None))
            return None
        d, u = measure(prompt_maps, source, s, tile=tile, input_size=input_size, max_windows=windows)
        m = float(np.median(d)) if len(d) >= MIN_NUCLEI else None
        seen[s] = (s, m, len(d), u)
        passes.append(seen[s])
        return m

    def accept(s_star: float) -> float | None:
        """Measure at the candidate scale; its median nucleus must then be close to the target."""
        s_star = float(min(max(s_star, SCALE_RANGE[0]), SCALE_RANGE[1]))
        m = run(s_star, max_windows)
        return None if m is None or not target / ACCEPT_LOW <= m <= target * ACCEPT_HIGH else m / s_star

    def whole(s: float) -> None:
        """Record the pass at ``s`` as whole nuclei below the target (``stalled``) when it qualifies."""
        _, m, n, u = seen.get(s, (s, None, 0, 1.0))
        if m is not None and target / BAND**2 <= m < target and u <= STALL_SURE:
            stalled.append((m, s, n))

    prev: tuple[float, float | None, bool] = (0.0, None, False)  # (scale, median, reached by growing)
    found: list[tuple[float, int, float]] = []  # accepted proposals: (uncertainty, nuclei measured, diameter)
    stalled: list[tuple[float, float, int]] = []  # (median, scale, nuclei) where growth stopped short of the target
    for k, s in enumerate(LADDER):
        m = run(s, ladder_windows)
        s0, m0, grew0 = prev
        growing = m0 is not None and m is not None and m >= GROWTH * m0
        diameter = None
        if growing and m0 < target <= m:  # crossed the target while growing: interpolate in log-log
            diameter = accept(s0 * math.exp(math.log(s / s0) * math.log(target / m0) / math.log(m / m0)))
        elif not growing and grew0 and m0 is not None and m0 < target:  # growth stopped short of it
            whole(s0)
            if m0 >= target / BAND:  # just short: the scale that would reach it
                diameter = accept(s0 * target / m0)
                if diameter is None and passes[-1][0] != s:  # rejected, but its nuclei may be whole and larger
                    whole(passes[-1][0])
        if diameter is None and k == len(LADDER) - 1 and growing and target / BAND <= m < target:
            diameter = accept(s * target / m)  # still growing at the finest rung
        if diameter is not None and passes[-1][2] < FEW_NUCLEI and passes[-1][3] >= WEAK_UNSURE:
            diameter = None  # a weak proposal the UNet is unsure of
        # No early stop on an accepted proposal: DSB 54793624 at half size accepts its cells at 0.41 (28 objects,
        # uncertainty 0.68) and, walking on, its nuclei at 1.9 (0.65), which win.
        if diameter is not None:
            found.append((passes[-1][3], passes[-1][2], diameter))
        prev = (s, m, growing)
    if not found and stalled:  # the largest whole nuclei the UNet is sure of, at the scale it saw them
        m, s, n = max(stalled)
        return ScaleEstimate(s, m / s, target * s / m, n, "stalled", passes, time.perf_counter() - start)
    if not found:
        return ScaleEstimate(1.0, None, None, 0, "no nuclei", passes, time.perf_counter() - start)
    # Blobs of merged tiny nuclei and pieces of large ones both look like nuclei of the target size; the UNet is
    # unsure of both, and sure of real nuclei at a size it knows.
    u, n_nuclei, diameter = min(found)
    chosen, reason = choose_scale(diameter, target)
    if NATIVE_RANGE[0] <= target / diameter < NATIVE_RANGE[1] and max(H, W) >= MIN_SIDE:
        if 1.0 not in seen:
            run(1.0, max_windows)
        if seen[1.0][3] < NATIVE_SURE * u:  # the model is clearly surer of the image as it is: leave it
            chosen, reason = 1.0, "native"
    return ScaleEstimate(chosen, diameter, target / diameter, n_nuclei, reason, passes,
                         time.perf_counter() - start)
