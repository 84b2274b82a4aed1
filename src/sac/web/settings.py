"""Settings of `sac serve` (stdlib only, so the command can validate them before importing FastAPI or torch)."""

from __future__ import annotations

import ipaddress
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from sac.errors import SACError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
# Uploads above this many megabytes are refused with 413 before they are decoded.
DEFAULT_MAX_UPLOAD_MB = 100.0
# Sessions (image, labels, maps, cached embeddings, undo history) beyond this total are evicted least recently used.
DEFAULT_MEMORY_MB = 4096.0
# The largest image the app opens: 25 megapixels (e.g. 5000 x 5000). Larger ones get 413 with a pointer to
# `sac segment`, which tiles any size: one browser page holding a bigger image plus its contours stops being smooth.
MAX_PIXELS = 25_000_000
# "Save as training example": the client chooses only a split name matching this pattern.
SPLIT_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Sub-folder of --data-dir that receives training examples when no --train-dir is given.
CORRECTIONS_DIR = "sac-corrections"
TOKEN_HEADER = "x-sac-token"
TOKEN_COOKIE = "sac_token"
SESSION_HEADER = "x-sac-session"
SESSION_COOKIE = "sac_session"


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``: addresses only this machine can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class ServeSettings:
    """What `sac serve` was started with.

    ``model``: as ``sac segment --model``. ``data_dir``: a folder whose images (recursively) the page lists by id.
    ``train_dir``: root of "save as training example" (``<train_dir>/<split>/images|labels``); default
    ``<data_dir>/sac-corrections`` when a ``data_dir`` is given, else saving is off. ``token``: required on every
    request when set (header ``X-SAC-Token``, cookie, or ``?token=`` once in the URL). ``max_upload_mb`` /
    ``memory_mb``: upload size limit and session memory budget. ``engine`` / ``device``: as ``sac segment``
    (None = the library default). ``workers``: automatic segmentations run at once (others wait in a queue).
    """

    model: str = "default"
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    data_dir: Path | None = None
    train_dir: Path | None = None
    token: str | None = None
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    memory_mb: float = DEFAULT_MEMORY_MB
    engine: str | None = None
    device: str = "cpu"
    workers: int = 1
    sam_checkpoint: str | None = None

    def validate(self) -> ServeSettings:
        """Check every value, resolve folders and generate a token for a non-local host; returns ``self``."""
        if not (1 <= self.port <= 65535):
            raise SACError(f"--port must be in 1..65535, got {self.port}")
        if self.max_upload_mb <= 0:
            raise SACError(f"--max-upload-mb must be > 0, got {self.max_upload_mb}")
        if self.memory_mb <= 0:
            raise SACError(f"--memory-mb must be > 0, got {self.memory_mb}")
        if self.workers < 1:
            raise SACError(f"--workers must be >= 1, got {self.workers}")
        if self.token is not None and len(self.token) < 8:
            raise SACError("--token must have at least 8 characters")
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir).expanduser().resolve()
            if not self.data_dir.is_dir():
                raise SACError(f"--data-dir {self.data_dir}: no such folder")
        if self.train_dir is None and self.data_dir is not None:
            self.train_dir = self.data_dir / CORRECTIONS_DIR
        if self.train_dir is not None:
            self.train_dir = Path(self.train_dir).expanduser().resolve()
            if self.train_dir.exists() and not self.train_dir.is_dir():
                raise SACError(f"--train-dir {self.train_dir}: not a folder")
        if not is_loopback(self.host) and self.token is None:
            # Anyone who can reach a non-local address could otherwise read the images and the server's CPU.
            self.token = secrets.token_urlsafe(24)
        return self

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def memory_bytes(self) -> int:
        return int(self.memory_mb * 1024 * 1024)

    def url(self) -> str:
        """The address to open, with the token when one is required."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = f"/?token={self.token}" if self.token else "/"
        return f"http://{host}:{self.port}{query}"
