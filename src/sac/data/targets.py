"""Training targets derived from instance labels (beyond the binary mask of the paper).

``distance_target``: each nucleus's Euclidean distance to its own border (touching nuclei border each other, not
only the background), divided by that nucleus's maximum, so every nucleus peaks at 1 whatever its size (the DIST
target of Naylor et al., IEEE TMI 2019). Valleys between touching nuclei go to ~0 in the target, which is what
lets a watershed on the predicted map split nuclei that the binary mask merges.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi


def distance_target(labels: np.ndarray) -> np.ndarray:
    """``labels int [H, W]`` (0 background, ids > 0) -> ``float32 [H, W]`` in [0, 1]: 0 on background, per
    nucleus its distance to the nearest pixel outside it (in pixels, 1 on its outermost ring) divided by its
    maximum. Hand-written because no library offers the per-instance normalisation; the EDT is SciPy's."""
    labels = np.asarray(labels)
    out = np.zeros(labels.shape, dtype=np.float32)
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        # One pixel of margin so a nucleus touching the crop border still gets a finite border there.
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        inside = labels[sl] == i
        d = ndi.distance_transform_edt(np.pad(inside, 1))[1:-1, 1:-1]
        peak = d.max()
        if peak > 0:
            out[sl][inside] = (d[inside] / peak).astype(np.float32)
    return out


def distance_targets(labels: torch.Tensor) -> torch.Tensor:
    """Batch version: ``int [B, S, S]`` -> ``float32 [B, 1, S, S]`` on the same device."""
    lab = labels.detach().cpu().numpy()
    out = np.stack([distance_target(x) for x in lab])[:, None]
    return torch.from_numpy(out).to(labels.device)
