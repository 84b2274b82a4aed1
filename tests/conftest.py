"""Shared fixtures: where the shared real data lives, and a fixed torch thread count."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# ../shared/data relative to the repository root; SAC_DATA overrides it.
DATA_ROOT = Path(os.environ.get("SAC_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Root of the shared real data; skips the test with a reason when it is absent."""
    if not (DATA_ROOT / "monuseg").is_dir():
        pytest.skip(f"real data not found at {DATA_ROOT} (set SAC_DATA to its location)")
    return DATA_ROOT


@pytest.fixture(autouse=True, scope="session")
def _threads():
    try:
        import torch
    except ImportError:  # pragma: no cover
        return
    torch.set_num_threads(2)
    torch.manual_seed(0)
