"""Training-crop augmentation for microscopy: geometry and intensity via albumentations, H&E stain jitter.

Geometric: mild scale (the crop window is ``S / s`` source pixels resized to ``S``; images bilinear,
labels nearest so instance ids survive), horizontal/vertical flips and 90-degree rotations (nuclei have
no preferred orientation). Intensity: brightness/contrast, and for colour images hue/saturation and HED
stain jitter (Tellez et al., 2018: in haematoxylin-eosin-DAB optical-density space each channel becomes
``alpha * c + beta`` with ``alpha ~ U(1-sigma, 1+sigma)``, ``beta ~ U(-sigma, sigma)``, via
``skimage.color.rgb2hed/hed2rgb``). Grayscale images (fluorescence, all channels equal) skip the colour
steps so they stay gray. Randomness comes only from the generator/seed passed in, so a crop is a pure
function of (seed, epoch, index).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation (0 / False disables it)."""

    scale_min: float = 0.8  # crop window S/s with s in [scale_min, scale_max] (log-uniform)
    scale_max: float = 1.25
    flip: bool = True
    rotate90: bool = True
    brightness: float = 0.2  # +-fraction of the maximum
    contrast: float = 0.2
    hue: float = 5.0  # degrees (OpenCV HSV units), colour images only
    saturation: float = 15.0
    hed_sigma: float = 0.03  # HED stain jitter strength, colour images only
    p_intensity: float = 0.8  # probability of the brightness/contrast and of the colour steps


def sample_scale(rng: np.random.Generator, cfg: AugmentConfig) -> float:
    """A log-uniform scale factor in [scale_min, scale_max] (1.0 when the range is empty)."""
    if cfg.scale_max <= cfg.scale_min:
        return 1.0
    return float(np.exp(rng.uniform(np.log(cfg.scale_min), np.log(cfg.scale_max))))


def build_transform(crop_size: int, cfg: AugmentConfig | None, augment: bool = True):
    """albumentations pipeline: resize the (scaled) window to ``crop_size``, then, if ``augment``,
    flips / rot90 / brightness-contrast. Call ``set_random_seed`` on it before each use for determinism."""
    import albumentations as A
    import cv2

    ops = [A.Resize(crop_size, crop_size, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST)]
    if augment and cfg is not None:
        if cfg.flip:
            ops += [A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)]
        if cfg.rotate90:
            ops.append(A.RandomRotate90(p=1.0))
        if cfg.brightness > 0 or cfg.contrast > 0:
            ops.append(A.RandomBrightnessContrast(cfg.brightness, cfg.contrast, p=cfg.p_intensity))
    return A.Compose(ops, seed=0)


def build_colour_transform(cfg: AugmentConfig):
    """Hue/saturation jitter for colour images only (None if disabled)."""
    import albumentations as A

    if cfg.hue <= 0 and cfg.saturation <= 0:
        return None
    return A.Compose([A.HueSaturationValue(cfg.hue, cfg.saturation, 0, p=cfg.p_intensity)], seed=0)


def is_grayscale(image: np.ndarray) -> bool:
    """True when all three channels of ``uint8 [H, W, 3]`` are identical."""
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]))


def hed_jitter(image: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """H&E stain jitter of ``uint8 [H, W, 3]`` RGB -> ``uint8 [H, W, 3]`` (see module docstring)."""
    from skimage.color import hed2rgb, rgb2hed

    if sigma <= 0:
        return image
    hed = rgb2hed(image)
    alpha = rng.uniform(1 - sigma, 1 + sigma, size=3)
    beta = rng.uniform(-sigma, sigma, size=3)
    rgb = hed2rgb(hed * alpha + beta)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)
