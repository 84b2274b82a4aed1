"""Segment Any Cell: automatic, fine-tunable SAM-based nuclei segmentation.

Heavy modules (torch, MONAI, segment-anything) are imported lazily so that ``import sac`` and
``sac --help`` stay fast.
"""

from __future__ import annotations

from sac._version import __version__

__all__ = ["__version__", "load_model"]


def load_model(name_or_path: str = "default", device: str = "cpu"):
    """Load a trained SAC model ready for :meth:`segment`: ``"default"`` (bundled) or a run folder.

    See :func:`sac.inference.api.load_model`.
    """
    from sac.inference.api import load_model as _load

    return _load(name_or_path, device=device)
