"""Per-browser state: one image, its :class:`~sac.inference.editor.Editor` and the outlines the page holds.

A browser is told its session id in a cookie (``sac_session``; scripts may send the ``X-SAC-Session`` header
instead). Opening an image starts the automatic segmentation in a worker thread (``workers`` at once, the others
wait in a queue); the page polls the progress (tiles done / total, from the Editor's ``on_tile``). Edits are
serialised per session by a lock; an edit while the segmentation runs is refused with 409 (:class:`Busy`).

Memory is bounded: a session's size is the bytes of every array it holds (image, label copies, probability maps,
the editor's cached embeddings and undo history: :func:`deep_nbytes`), and when the total is above the budget the
least recently used idle sessions are dropped. Their ids are remembered, so their next request gets 410
(:class:`Evicted`) with a message saying to open the image again, rather than a silent empty page.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from sac.errors import SACError
from sac.web.contours import Contours
from sac.web.errors import Busy, Evicted, NoImage, TooLarge

log = logging.getLogger("sac.web")

SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# Ids of evicted sessions remembered for the 410 message (oldest forgotten first).
MAX_EVICTED_IDS = 10_000
# Bytes a session holds per image pixel, used to make room *before* a segmentation starts, until a finished
# session has measured the real figure (the largest ratio seen is used from then on). Measured with the default
# model (LiteMedSAM: 2 MB of float16 embeddings per 256 px window) on a 1000 x 1000 MoNuSeg image (docs/serve.md).
BYTES_PER_PIXEL_ESTIMATE = 100
BUSY_STATES = ("queued", "running")


def deep_nbytes(obj, depth: int = 4, seen: set | None = None) -> int:
    """Bytes of the numpy arrays and torch tensors reachable from ``obj`` through attributes, dicts, lists and
    tuples (``depth`` levels), each counted once; ``nn.Module`` objects (the shared model) are not counted."""
    seen = set() if seen is None else seen
    if id(obj) in seen or obj is None or isinstance(obj, str | bytes | int | float | bool):
        return len(obj) if isinstance(obj, bytes) else 0
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    kind = type(obj).__module__.split(".")[0]
    if kind == "torch":
        if hasattr(obj, "untyped_storage"):
            return int(obj.untyped_storage().nbytes())
        if hasattr(obj, "forward"):  # nn.Module: the model shared by all sessions
            return 0
    if depth <= 0:
        return 0
    if isinstance(obj, dict):
        items = list(obj.values()) + list(obj.keys())
    elif isinstance(obj, list | tuple | set | frozenset):
        items = list(obj)
    elif hasattr(obj, "forward") and hasattr(obj, "parameters"):
        return 0
    elif hasattr(obj, "__dict__"):
        items = list(vars(obj).values())
    else:
        return 0
    return sum(deep_nbytes(v, depth - 1, seen) for v in items)


class _Cancelled(Exception):
    """Raised from the progress callback to stop a segmentation nobody waits for any more."""


class Session:
    """State of one browser session. Fields are read and written under ``lock``."""

    def __init__(self, sid: str):
        self.id = sid
        self.lock = threading.Lock()
        self.name: str | None = None
        self.image: np.ndarray | None = None
        self.editor = None
        self.contours: Contours | None = None
        self.status = "empty"  # empty | queued | running | ready | failed
        self.done = 0
        self.total = 0
        self.message = ""
        self.started = 0.0
        self.seconds = 0.0
        self.generation = 0  # bumped by each open: a late result of a replaced image is dropped
        self.future: Future | None = None
        self.n_nuclei: int | None = None
        self.nbytes = 0
        self.last_used = time.monotonic()

    def state(self) -> dict:
        """What the page polls: status, progress, image size, nucleus count."""
        H, W = self.image.shape[:2] if self.image is not None else (0, 0)
        n = self.n_nuclei if self.status == "ready" else None
        return {
            "status": self.status, "done": self.done, "total": self.total, "message": self.message,
            "name": self.name, "width": W, "height": H, "n_nuclei": n, "seconds": round(self.seconds, 2),
            "version": self.contours.version if self.contours is not None else None,
            "memory_mb": round(self.nbytes / 2**20, 1),
        }

    def ready_editor(self):
        """The editor, or :class:`Busy` / :class:`NoImage` explaining why there is none (call under ``lock``)."""
        if self.status in BUSY_STATES:
            where = f" (tile {self.done} of {self.total})" if self.status == "running" else " (queued)"
            raise Busy(f"the automatic segmentation is still running{where}; edits are possible when it ends")
        if self.editor is None:
            detail = f": {self.message}" if self.status == "failed" else ""
            raise NoImage(f"no segmented image in this session{detail}; open an image first")
        return self.editor


class SessionStore:
    """All sessions, the segmentation workers and the memory budget.

    ``make_editor(image uint8 [H, W, 3], on_tile) -> Editor`` runs the automatic segmentation (slow);
    ``count_tiles(image) -> int`` says how many tiles it will run (the progress bar's total). ``shared``: objects
    every editor references (the segmenter, its engine) that are not counted in any session's size.
    """

    def __init__(self, make_editor: Callable, count_tiles: Callable[[np.ndarray], int], budget_bytes: int,
                 workers: int = 1, shared: tuple = ()):
        self.shared = shared
        self.make_editor = make_editor
        self.count_tiles = count_tiles
        self.budget = int(budget_bytes)
        self._sessions: OrderedDict[str, Session] = OrderedDict()  # least recently used first
        self._evicted: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sac-segment")
        self.evictions = 0
        self.bytes_per_pixel: float | None = None  # measured; BYTES_PER_PIXEL_ESTIMATE until then

    # ---------------------------------------------------------------- lookup
    def new_id(self) -> str:
        return secrets.token_urlsafe(18)

    def get(self, sid: str | None, create: bool = False) -> Session:
        """The session ``sid``; a new one when ``create`` (or :class:`Evicted` / :class:`NoImage` otherwise)."""
        with self._lock:
            if sid is not None and sid in self._sessions:
                self._sessions.move_to_end(sid)
                session = self._sessions[sid]
                session.last_used = time.monotonic()
                return session
            if not create:
                if sid is not None and sid in self._evicted:
                    raise Evicted("this session was closed to free memory for other users (least recently used "
                                  "first); open the image again")
                raise NoImage("no image open in this session; open an image first")
            if sid is None or not SESSION_ID.fullmatch(sid):
                sid = self.new_id()
            self._evicted.pop(sid, None)
            session = self._sessions[sid] = Session(sid)
            return session

    def __len__(self) -> int:
        return len(self._sessions)

    def total_bytes(self) -> int:
        with self._lock:
            return sum(s.nbytes for s in self._sessions.values())

    # ---------------------------------------------------------------- opening / segmentation
    def open(self, session: Session, name: str, image: np.ndarray) -> dict:
        """Replace the session's image and queue its automatic segmentation; returns the state."""
        estimate = int(image.shape[0] * image.shape[1] * (self.bytes_per_pixel or BYTES_PER_PIXEL_ESTIMATE))
        if estimate > self.budget:
            raise TooLarge(f"{name}: {image.shape[1]} x {image.shape[0]} pixels needs about {estimate >> 20} MB, "
                           f"above the server's memory budget ({self.budget >> 20} MB, `sac serve --memory-mb`)")
        with session.lock:
            if session.status in BUSY_STATES and session.future is not None:
                session.future.cancel()  # a queued job of the previous image; a running one finishes, unused
            session.generation += 1
            session.name, session.image = name, image
            session.editor = session.contours = session.n_nuclei = None
            session.status, session.done, session.total, session.message = "queued", 0, 0, ""
            session.nbytes = int(image.nbytes) + estimate
            gen = session.generation
        self.rebalance(keep=session.id)
        session.future = self._pool.submit(self._segment, session, gen, image)
        with session.lock:
            return session.state()

    def _segment(self, session: Session, gen: int, image: np.ndarray) -> None:
        with session.lock:
            if session.generation != gen:
                return
            session.status, session.started = "running", time.perf_counter()

        def on_tile(n: int) -> None:
            with session.lock:
                if session.generation != gen or session.id not in self._sessions:
                    raise _Cancelled  # another image was opened, or the session evicted: free the worker now
                session.done += int(n)
                session.total = max(session.total, session.done)

        try:
            total = int(self.count_tiles(image))  # here, not in open(): with --scale auto it runs the UNet
            with session.lock:
                session.total = max(session.total, total)
            editor = self.make_editor(image, on_tile)
            contours = Contours(editor.labels)
            n_nuclei = int(editor.result().n_nuclei)
            size = deep_nbytes((editor, contours, image), 5, {id(o) for o in self.shared})
            error = None
        except _Cancelled:
            return
        except SACError as exc:
            editor, error = None, str(exc)
        except Exception as exc:  # a bug must not kill the worker; the page shows it and the log keeps the trace
            log.error("segmentation failed:\n%s", traceback.format_exc())
            editor, error = None, f"internal error: {type(exc).__name__}: {exc}"
        with session.lock:
            if session.generation != gen or session.id not in self._sessions:
                return  # replaced by another image or evicted meanwhile
            session.seconds = time.perf_counter() - session.started
            if error is not None:
                session.status, session.message, session.nbytes = "failed", error, int(image.nbytes)
                return
            session.editor, session.contours, session.nbytes = editor, contours, size
            self.bytes_per_pixel = max(self.bytes_per_pixel or 0.0, size / (image.shape[0] * image.shape[1]))
            session.n_nuclei = n_nuclei
            session.status, session.message = "ready", ""
        self.rebalance(keep=session.id)

    # ---------------------------------------------------------------- memory
    def rebalance(self, keep: str | None = None) -> list[str]:
        """Evict least recently used sessions (never ``keep``, never one segmenting) while above the budget."""
        dropped = []
        with self._lock:
            total = sum(s.nbytes for s in self._sessions.values())
            for sid in list(self._sessions):
                if total <= self.budget:
                    break
                s = self._sessions[sid]
                if sid == keep or s.status == "running":
                    continue
                if s.future is not None:
                    s.future.cancel()
                total -= s.nbytes
                del self._sessions[sid]
                self._evicted[sid] = time.time()
                dropped.append(sid)
            while len(self._evicted) > MAX_EVICTED_IDS:
                self._evicted.popitem(last=False)
            self.evictions += len(dropped)
        for sid in dropped:
            log.info("evicted session %s… to stay within %d MB", sid[:6], self.budget >> 20)
        return dropped

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def apply_edit(session: Session, op: str, *args) -> dict:
    """One Editor call (``op`` is a method name: add, remove, refine, box, delete, merge, split, undo, redo) on the
    session's editor, and the outline delta for the page. SACError from the editor passes through (-> 400)."""
    with session.lock:
        editor = session.ready_editor()
        edit = getattr(editor, op)(*args)
        delta = session.contours.update(editor.labels)
        session.n_nuclei = int(edit.n_nuclei)
        return {"changed": bool(edit.changed), "message": edit.message, "ids": [int(i) for i in edit.ids],
                "n_nuclei": int(edit.n_nuclei), "contours": delta}
