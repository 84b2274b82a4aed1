"""Nuclei segmentation metrics (pure numpy functions) and dataset scoring (docs/metrics.md).

``sac.evaluation.score``, ``score_folder``, ``format_table``, ``pixel_scores``, ``instance_scores``
are exported lazily (scipy/skimage are imported only when used).
"""

from __future__ import annotations

_EXPORTS = {
    "pixel_scores": "sac.evaluation.pixel",
    "instance_scores": "sac.evaluation.instance",
    "score": "sac.evaluation.report",
    "score_folder": "sac.evaluation.report",
    "format_table": "sac.evaluation.report",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sac.evaluation' has no attribute {name!r}")
