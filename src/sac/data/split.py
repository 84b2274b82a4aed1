"""Reproducible train/validation splits of a dataset in the standard layout.

``choose_ids(ids, fraction, seed)`` is the pure rule: sort the ids, shuffle them with
``random.Random(seed)`` (stable across Python versions), take the first ``round(fraction * n)``
(at least 1, at most n - 1). :func:`make_split` applies it on disk: it *moves* (default) or copies the
chosen images and labels from ``ROOT/<from>`` to ``ROOT/<to>`` and records what it did in
``ROOT/split_<to>.json`` (from, to, fraction, seed, mode, ids; the records of earlier splits into the same
``<to>`` under ``previous``), so the split can be audited and undone.
Moving keeps each image in exactly one split, so a later run cannot accidentally train on validation data.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

from sac.atomic import atomic_path, atomic_write_text
from sac.data.io import list_pairs
from sac.errors import SACError


def choose_ids(ids: list[str], fraction: float, seed: int) -> list[str]:
    """The sorted subset of ``ids`` selected for the new split (see module docstring)."""
    if not 0 < fraction < 1:
        raise SACError(f"--fraction must be between 0 and 1 (exclusive), got {fraction}")
    ordered = sorted(set(ids))
    if len(ordered) < 2:
        raise SACError(f"need at least 2 images to split, found {len(ordered)}")
    n = min(max(1, round(fraction * len(ordered))), len(ordered) - 1)
    random.Random(seed).shuffle(ordered)
    return sorted(ordered[:n])


def make_split(root: str | Path, from_split: str, to_split: str, fraction: float, seed: int = 0,
               copy: bool = False) -> dict:
    """Move (or copy) a random ``fraction`` of ``ROOT/<from_split>`` to ``ROOT/<to_split>``.

    Returns the record also written to ``ROOT/split_<to_split>.json``. Raises SACError if the source
    split is malformed, ``from == to``, or any target file already exists (nothing is moved then).
    """
    root = Path(root)
    if from_split == to_split:
        raise SACError(f"--from and --to are both {from_split!r}")
    pairs = {pid: (img, lab) for pid, img, lab in list_pairs(root, from_split)}
    chosen = choose_ids(list(pairs), fraction, seed)
    moves = []
    for pid in chosen:
        for src in pairs[pid]:
            dst = root / to_split / src.parent.name / src.name
            if dst.exists():
                raise SACError(f"target already exists, not overwriting: {dst}")
            moves.append((src, dst))
    record = {
        "root": str(root), "from": from_split, "to": to_split, "fraction": fraction, "seed": seed,
        "mode": "copy" if copy else "move", "n_from_before": len(pairs), "n_to": len(chosen), "ids": chosen,
    }
    record_path = root / f"split_{to_split}.json"
    if record_path.is_file():  # adding to a split made earlier: keep its record, or that move could not be undone
        try:
            old = json.loads(record_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SACError(f"cannot read the existing split record {record_path}: {exc}") from None
        record["previous"] = [*old.pop("previous", []), old]
    for src, dst in moves:
        dst.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            with atomic_path(dst) as tmp:
                shutil.copyfile(src, tmp)
        else:
            os.replace(src, dst)  # same file system: an atomic rename
    atomic_write_text(record_path, json.dumps(record, indent=2) + "\n")
    return record
