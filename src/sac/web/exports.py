"""Downloads of the current state and "save as training example".

Downloads are written by :func:`sac.inference.writers.write_outputs`, the function behind `sac segment`'s files, into
a private temporary folder and sent back; the folder is removed once the response is built. A training example is
the image and the current labels written to ``<root>/<split>/images/<stem>.png`` and ``labels/<stem>.png``
(uint16, the layout :func:`sac.data.io.list_pairs` reads), so `sac train --init-from default --data ROOT` learns
from the corrections.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

import numpy as np

from sac.data.io import list_pairs, write_image, write_labels
from sac.errors import SACError
from sac.inference.writers import FORMATS, SUFFIX, write_outputs
from sac.web.errors import NotFound, WebError
from sac.web.settings import SPLIT_PATTERN

MEDIA_TYPES = {
    ".png": "image/png", ".tif": "image/tiff", ".csv": "text/csv", ".geojson": "application/geo+json",
}


def export_bytes(result, fmt: str, stem: str) -> tuple[bytes, str, str]:
    """``fmt`` (one of :data:`sac.inference.writers.FORMATS`) of a SegmentationResult -> (file bytes, file name,
    media type)."""
    if fmt not in FORMATS:
        raise NotFound(f"unknown export format {fmt!r} (valid: {', '.join(FORMATS)})")
    with tempfile.TemporaryDirectory(prefix="sac-export-") as tmp:
        (path,) = write_outputs(result, Path(tmp), stem, (fmt,))
        data = path.read_bytes()
    name = f"{stem}{SUFFIX[fmt]}"
    return data, name, MEDIA_TYPES.get(Path(name).suffix, "application/octet-stream")


def example_stem(name: str, image: np.ndarray) -> str:
    """``<name>-<8 hex of the pixels' hash>``: saving the same image again replaces its example (the newest
    correction wins); another image that happens to share the file name gets its own."""
    digest = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:8]
    return f"{name}-{digest}"


def save_example(root: Path | None, split: str, name: str, image: np.ndarray, labels: np.ndarray) -> dict:
    """Write image + labels as a training pair under ``root/split``; returns where (paths relative to ``root``)
    and how many pairs that split now holds."""
    if root is None:
        raise WebError("saving training examples is off: start `sac serve` with --train-dir DIR (or --data-dir)")
    if not isinstance(split, str) or not SPLIT_PATTERN.fullmatch(split):
        raise WebError(f"split must match {SPLIT_PATTERN.pattern} (e.g. train), got {str(split)[:40]!r}")
    stem = example_stem(name, image)
    img_path = root / split / "images" / f"{stem}.png"
    lab_path = root / split / "labels" / f"{stem}.png"
    try:
        img_path.parent.mkdir(parents=True, exist_ok=True)
        lab_path.parent.mkdir(parents=True, exist_ok=True)
        write_labels(lab_path, labels)  # labels first: a pair is only listed once its image exists too
        write_image(img_path, image)
        n = len(list_pairs(root, split))
    except OSError as exc:
        raise SACError(f"cannot write the training example under {root}: {exc.strerror or exc}") from None
    return {"split": split, "image": img_path.relative_to(root).as_posix(),
            "labels": lab_path.relative_to(root).as_posix(), "pairs_in_split": n, "train_hint": train_hint(root, split)}


def init_from_default() -> str:
    """``--init-from default`` (the bundled model) and the flags that repeat its architecture (read from its
    config.json), so the run starts from every tensor of the default model and keeps its interactive head."""
    from sac.inference.api import default_model_dir

    folder = default_model_dir()
    try:
        cfg = json.loads((folder / "config.json").read_text()).get("config", {})
    except (OSError, ValueError):
        return "--init-from default"
    flags = ["--init-from default"]
    if cfg.get("prompts", {}).get("mask_prompt"):
        flags.append("--mask-prompt")
    if cfg.get("unet", {}).get("distance_head"):
        flags.append("--distance-head")
    if cfg.get("lora", {}).get("last_n_layers"):
        flags.append(f"--lora-layers {cfg['lora']['last_n_layers']}")
    if cfg.get("prompts", {}).get("n_points"):
        flags.append(f"--points {cfg['prompts']['n_points']}")
    return " ".join(flags)


def _pairs(root: Path, split: str) -> int:
    try:
        return len(list_pairs(root, split))
    except SACError:
        return 0


def train_hint(root: Path, split: str) -> str:
    """The `sac train` command that learns from ``root`` now, or what is still missing: `sac train` validates on
    a "val" split when the root has one, else it holds out --val-from-train images (and needs one left to train)."""
    train = "train" if split == "val" else split
    command = f"sac train {init_from_default()} --data {root} --split {train} --out RUN_DIR"
    n_train, n_val = _pairs(root, train), _pairs(root, "val")
    if n_val and n_train:
        return command
    if n_train >= 2:
        return command + " --val-from-train 1"
    return f"before training, save one example to the split 'val' and more to '{train}'"
