"""On-disk cache of exported inference graphs (OpenVINO IR, ONNX), one folder per model + runtime + settings.

Layout: ``<cache>/engines/<engine>-<key>/`` holding the graph files and ``manifest.json``
(``{"files": {name: {"size": int, "sha256": str}}, "verified": bool, "note": str, ...}``). ``<cache>`` is
``$SAC_CACHE_DIR`` when set (tests, shared clusters), else ``platformdirs.user_cache_dir("sac")``.

An entry is used only when every file listed in its manifest exists with the recorded size and SHA-256: a
truncated, edited or half-written entry is deleted and rebuilt, never loaded. Entries are written into a temporary
sibling folder and renamed into place, so a crash (or a second process exporting the same model at the same time)
never leaves a partial entry under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

MANIFEST = "manifest.json"
CACHE_ENV = "SAC_CACHE_DIR"
# Number of exports per engine name in this process: tests check that a second make_engine reuses the cache.
EXPORTS: Counter[str] = Counter()


def cache_dir() -> Path:
    """Root of sac's cache: ``$SAC_CACHE_DIR`` or the platform's user cache folder for ``sac``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("sac"))


def model_hash(model: torch.nn.Module) -> str:
    """SHA-256 (hex) of every tensor of ``model.state_dict()`` (names, dtypes, shapes and bytes) and its config:
    two models with the same weights share cache entries, any changed weight gives a new key."""
    h = hashlib.sha256()
    cfg = getattr(model, "cfg", None)
    if cfg is not None and hasattr(cfg, "to_dict"):
        h.update(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def entry_key(parts: dict) -> str:
    """Short stable key (24 hex chars) of a dict of strings/numbers (model hash, runtime version, settings)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def load_entry(folder: Path) -> dict | None:
    """The manifest of a complete, intact entry, else None (and a damaged entry is removed)."""
    manifest = folder / MANIFEST
    if not folder.is_dir():
        return None
    try:
        meta = json.loads(manifest.read_text())
        for name, rec in meta["files"].items():
            path = folder / name
            if path.stat().st_size != rec["size"] or file_sha256(path) != rec["sha256"]:
                raise ValueError(f"{name} changed")
    except (OSError, ValueError, KeyError, TypeError):
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return meta


STALE_S = 6 * 3600  # a temporary export folder older than this belongs to a process that died: removed


def new_entry(folder: Path) -> Path:
    """A fresh temporary folder beside ``folder`` to export into (then :func:`commit_entry`); temporary folders of
    exports that died long ago are removed on the way."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in folder.parent.glob(".*.*"):
        with contextlib.suppress(OSError):
            if old.is_dir() and now - old.stat().st_mtime > STALE_S:
                shutil.rmtree(old, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))


def commit_entry(tmp: Path, folder: Path, meta: dict) -> dict:
    """Record sizes and hashes of every file in ``tmp`` in its manifest and rename it to ``folder``. If another
    process committed the same entry meanwhile, theirs is kept. Returns the manifest."""
    files = {p.name: {"size": p.stat().st_size, "sha256": file_sha256(p)} for p in sorted(tmp.iterdir()) if p.is_file()}
    meta = {**meta, "files": files}
    (tmp / MANIFEST).write_text(json.dumps(meta, indent=1, sort_keys=True))
    if folder.exists():  # a concurrent export of the same entry won the race: keep an intact one
        theirs = load_entry(folder)
        if theirs is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return theirs
    try:
        os.rename(tmp, folder)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return load_entry(folder) or meta
    return meta
