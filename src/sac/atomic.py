"""Atomic file output: write to a temporary name in the same folder, then rename.

A reader (or a user after a crash or Ctrl-C) therefore sees either the old file, the complete new
file, or nothing -- never a half-written one. ``os.replace`` is atomic on POSIX and Windows when
source and target are on the same file system, which is why the temporary file lives beside the
target rather than in ``/tmp``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from sac.errors import SACError


def _create_temp(target: Path) -> Path:
    """Create an empty, new temporary file beside ``target`` and return its path.

    Not ``tempfile.mkstemp``: that creates the file with mode 0600, so every output would end up
    unreadable to other users (e.g. colleagues on a shared drive). ``os.open(..., 0o666)`` lets the
    process umask decide, exactly like an ordinary ``open(path, "w")``; ``O_EXCL`` keeps it race-free.
    """
    suffix = ".tmp" + "".join(target.suffixes[-1:])
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {target}")  # pragma: no cover


def check_writable(target: str | os.PathLike) -> None:
    """Raise :class:`~sac.errors.SACError` if ``target`` cannot be written: it is a folder, its nearest existing
    ancestor is not a folder, or no file can be created there. Commands call it before a long computation so
    that a mistyped output path fails at once, not after the work is done. Writes nothing (a probe file is
    created and removed at once; actually creating it is more reliable than ``os.access`` on network drives)."""
    target = Path(target)
    if target.is_dir():
        raise SACError(f"cannot write {target}: it is a folder")
    parent = target.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SACError(f"cannot write {target}: {parent} is not a folder")
    try:
        _create_temp(parent / target.name).unlink()
    except OSError as exc:
        raise SACError(f"cannot write {target}: {exc.strerror or exc}") from None


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it to ``target``.

    The temporary name keeps the target's suffix (``x.png`` -> ``.x.png.<random>.tmp.png``) so that
    libraries which pick a format from the extension (imageio, tifffile, matplotlib) still work.
    On any exception the temporary file is removed and ``target`` is left untouched. A target that
    cannot be written (an existing folder, a read-only or impossible location) raises
    :class:`~sac.errors.SACError` naming it; errors of the code writing the temporary file pass through.
    """
    target = Path(target)
    if target.is_dir():  # os.replace would fail only after the whole file was written
        raise SACError(f"cannot write {target}: it is a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = _create_temp(target)
    except OSError as exc:
        raise SACError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        yield tmp_path
        try:
            os.replace(tmp_path, target)
        except OSError as exc:
            raise SACError(f"cannot write {target}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``target`` atomically."""
    atomic_write_bytes(target, text.encode("utf-8"))
