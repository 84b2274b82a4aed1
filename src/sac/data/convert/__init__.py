"""Converters from the original dataset downloads to the standard layout (docs/data.md).

Each converter module exposes ``find_items(raw_dir, split) -> list[Item]`` (cheap discovery that raises
SACError for a malformed download) and ``load_item(item) -> (image uint8 [H,W,3], labels int32 [H,W])``
(the expensive, validating decode). :func:`convert` runs them and writes everything into a hidden
staging folder inside ``OUT_ROOT``; only when every item converted does it move the files into
``OUT_ROOT/<split>/{images,labels}``. A corrupt input therefore raises SACError naming the file and
leaves ``OUT_ROOT`` exactly as it was (the staging folder is removed).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sac.errors import SACError

DATASETS = ("monuseg", "dsb2018", "glas")  # one converter module each; `sac data convert` choices


@dataclass(frozen=True)
class Item:
    """One image to convert: its output id and split, and the raw files it comes from."""

    id: str
    split: str
    image: Path
    annotation: Path | tuple[Path, ...]


@dataclass
class ConvertSummary:
    """What :func:`convert` wrote: per split, the ids and their nucleus counts."""

    dataset: str
    out_root: Path
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> id -> n instances

    def lines(self) -> list[str]:
        out = []
        for split, ids in sorted(self.counts.items()):
            out.append(
                f"{self.dataset}: {len(ids)} images, {sum(ids.values())} instances -> {self.out_root / split}"
            )
        return out


def _module(dataset: str):
    if dataset not in DATASETS:
        raise SACError(f"unknown dataset {dataset!r}; choose one of: {', '.join(DATASETS)}")
    import importlib

    return importlib.import_module(f"sac.data.convert.{dataset}")


def _staging(out_root: Path) -> Path:
    """A fresh hidden folder inside ``out_root`` (same file system, so the final moves are renames)."""
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".sac-convert-", dir=out_root))
    except OSError as exc:
        raise SACError(f"cannot write to output folder {out_root}: {exc.strerror or exc}") from None


def convert(
    dataset: str,
    raw_dir: str | Path,
    out_root: str | Path,
    split: str | None = None,
    progress: Callable[[Iterator], Iterator] | None = None,
) -> ConvertSummary:
    """Convert the original download of ``dataset`` in ``raw_dir`` into ``out_root`` (standard layout).

    ``split``: output split for MoNuSeg/DSB (default ``train``); for GlaS, which of its file-name
    splits (``train``, ``testA``, ``testB``) to convert (default all). Existing files with the same id
    are replaced. Returns a :class:`ConvertSummary`. Raises SACError (nothing written) on bad input.
    """
    import numpy as np

    from sac.data.io import write_image, write_labels

    mod = _module(dataset)
    raw_dir, out_root = Path(raw_dir), Path(out_root)
    if not raw_dir.is_dir():
        raise SACError(f"raw data folder not found: {raw_dir}")
    items = mod.find_items(raw_dir, split)
    if not items:
        raise SACError(f"no {dataset} images found in {raw_dir} (see docs/data.md for the expected layout)")
    summary = ConvertSummary(dataset, out_root)
    stage = _staging(out_root)
    try:
        it = progress(items) if progress else items
        for item in it:
            image, labels = mod.load_item(item)
            if image.shape[:2] != labels.shape:
                raise SACError(f"image {item.image} is {image.shape[:2]} but its annotation gives {labels.shape}")
            write_image(stage / item.split / "images" / f"{item.id}.png", image)
            write_labels(stage / item.split / "labels" / f"{item.id}.png", labels)
            summary.counts.setdefault(item.split, {})[item.id] = int(len(np.unique(labels)) - (labels.min() == 0))
        # Everything decoded and written: move into place (os.replace is atomic per file).
        for src in sorted(stage.rglob("*.png")):
            dst = out_root / src.relative_to(stage)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return summary
